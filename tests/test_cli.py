"""The learner's commands and the plugin's reports, bad input included."""

from __future__ import annotations

import os
import shutil

from conftest import ROOT, run_ladder

from graders.curriculum import all_exercises, stages


def test_list_shows_every_stage_and_exercise_with_its_paper():
    out = run_ladder("list").stdout
    for stage in stages():
        assert f"Stage {stage.number}: {stage.title}" in out
    for ex in all_exercises(checkpoints=False):
        assert ex.slug in out and ex.paper in out and str(ex.year) in out


def test_check_unknown_exercise_names_the_known_ones():
    result = run_ladder("check", "nosuch")
    assert result.returncode == 2
    assert "no exercise named 'nosuch'" in result.stderr
    assert all(ex.slug in result.stderr for ex in all_exercises())
    assert "Traceback" not in result.stderr


def test_check_on_the_stub_fails_and_says_what_to_implement():
    result = run_ladder("check", "attention")
    assert result.returncode == 1
    assert "0 of" in result.stdout
    assert (
        "scaled_dot_product_attention: not implemented yet; see exercises/attention/README.md"
        in result.stdout
    )


def test_check_on_the_reference_passes():
    result = run_ladder("check", "attention", "--impl=solutions")
    assert result.returncode == 0, result.stdout
    assert "✗" not in result.stdout


def test_check_gives_the_readme_hint_for_a_wrong_answer(learner):
    source = (ROOT / "solutions/attention/attention.py").read_text()
    wrong = source.replace("torch.softmax(scores, dim=-1)", "torch.softmax(scores, dim=-2)")
    result = run_ladder("check", "attention", f"--impl={learner('attention', wrong)}")
    assert result.returncode == 1
    assert "✗ test_rows_are_convex_combinations" in result.stdout
    assert "hint: the softmax must run over the last axis" in result.stdout


def test_syntax_error_reports_file_and_line(learner):
    folder = learner(
        "attention", "import torch\n\ndef scaled_dot_product_attention(q, k, v:\n    pass\n"
    )
    result = run_ladder("check", "attention", f"--impl={folder}")
    assert result.returncode == 1
    assert f"{folder}/attention/attention.py, line 3" in result.stdout
    assert "Traceback" not in result.stdout


def test_missing_function_reports_the_expected_signature(learner):
    folder = learner("attention", "import torch\n")
    result = run_ladder("check", "attention", f"--impl={folder}")
    assert "has no 'scaled_dot_product_attention'" in result.stdout
    assert "def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor" in result.stdout


def test_wrong_shape_reports_expected_and_actual_shapes(learner):
    source = (ROOT / "solutions/attention/attention.py").read_text()
    wrong = source.replace("return weights @ v", "return (weights @ v).transpose(-2, -1)")
    result = run_ladder("check", "attention", f"--impl={learner('attention', wrong)}")
    assert "returned shape" in result.stdout and "expected (" in result.stdout


def test_progress_piped_is_plain_text_with_every_rung():
    result = run_ladder("progress", "--impl=solutions")
    assert result.returncode == 0
    assert "\x1b[" not in result.stdout  # no colour codes when piped
    rungs = all_exercises()
    assert f"{len(rungs)} of {len(rungs)} rungs climbed" in result.stdout
    for ex in rungs:
        assert (
            f"[x] {ex.slug if not ex.is_checkpoint else 'checkpoint: ' + ex.innovation}"
            in result.stdout
        )


def test_stubs_check_names_a_stale_stub(tmp_path):
    for part in ("curriculum.toml", "exercises", "solutions"):
        copy = shutil.copytree if (ROOT / part).is_dir() else shutil.copy
        copy(ROOT / part, tmp_path / part)
    env = {**os.environ, "LADDER_ROOT": str(tmp_path)}
    assert run_ladder("stubs", "--check", env=env).returncode == 0
    solution = tmp_path / "solutions/attention/attention.py"
    solution.write_text(
        solution.read_text().replace('"""softmax(q k^T', '"""Attention: softmax(q k^T')
    )
    result = run_ladder("stubs", "--check", env=env)
    assert result.returncode == 1
    assert "out of date:" in result.stdout and "exercises/attention/attention.py" in result.stdout
    assert run_ladder("stubs", env=env).returncode == 0
    assert run_ladder("stubs", "--check", env=env).returncode == 0
