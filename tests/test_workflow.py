"""The learners' GitHub workflow: it parses, it has the shape GitHub expects, and every command it
runs works in a clone of a fresh `ladder release`, writing the ladder into the job summary."""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from graders.curriculum import all_exercises
from graders.release import release

yaml = pytest.importorskip("yaml", reason="pyyaml is in the kit's dev extra")

WORKFLOW = Path(".github") / "workflows" / "ladder.yml"


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def steps(workflow: dict) -> list[dict]:
    (job,) = workflow["jobs"].values()
    return job["steps"]


def test_the_workflow_has_the_shape_github_expects():
    workflow = load(ROOT / WORKFLOW)
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "push" in triggers
    (job,) = workflow["jobs"].values()
    assert job["runs-on"].startswith("ubuntu") and job["timeout-minutes"] > 0
    assert all(("uses" in s) != ("run" in s) for s in job["steps"])
    uses = [s["uses"] for s in job["steps"] if "uses" in s]
    assert uses[0].startswith("actions/checkout@")
    python = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert str(python["with"]["python-version"]) == "3.11"
    runs = [s["run"] for s in job["steps"] if "run" in s]
    assert any("pip install -c constraints.txt" in r and "-e ." in r for r in runs)
    assert any("ladder progress" in r and "$GITHUB_STEP_SUMMARY" in r for r in runs)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh learners' kit, committed to git and cloned, as `actions/checkout` would give it."""
    tmp = tmp_path_factory.mktemp("workflow")
    kit = tmp / "kit"
    release(kit)
    git = ["git", "-c", "user.name=learner", "-c", "user.email=learner@example.org"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "my climb"]):
        subprocess.run([*git, *args], cwd=kit, check=True, capture_output=True)
    subprocess.run(["git", "clone", "-q", str(kit), str(tmp / "clone")], check=True)
    return tmp / "clone"


def offline_venv(folder: Path) -> Path:
    """A venv that sees this one's packages (no network here), so `pip install -e .` of the
    clone installs only the kit itself, into the new venv, leaving this one alone."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    (target,) = (folder / "lib").glob("python3*/site-packages")
    (target / "parent.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return folder / "bin"


def test_every_command_of_the_workflow_works_in_a_clone_of_the_release(clone, tmp_path):
    workflow = load(clone / WORKFLOW)  # the release ships the workflow
    bin_dir = offline_venv(tmp_path / "venv")
    summary = tmp_path / "summary.md"
    summary.write_text("")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(bin_dir.parent),
        "GITHUB_STEP_SUMMARY": str(summary),
        "LADDER_ROOT": str(clone),
        "PIP_NO_INDEX": "1",  # CI has no network: every dependency is already there
        "PIP_NO_BUILD_ISOLATION": "0",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    for step in steps(workflow):
        if "run" not in step:
            continue  # checkout and setup-python are GitHub's
        assert step.get("shell", "bash") == "bash"
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, f"{step['run']}:\n{result.stdout[-2000:]}{result.stderr}"
    text = summary.read_text(encoding="utf-8")
    rungs = all_exercises()
    assert f"## LLM Ladder: 0 of {len(rungs)} rungs climbed" in text
    for ex in rungs:
        assert f"`{ex.slug}`" in text or ex.is_checkpoint
    assert text.count("⬜ not started") == len(rungs)
