"""Finding submissions and taking their modules out safely: every bad archive becomes a note."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from graders import submissions
from graders.curriculum import kit_root
from graders.submissions import discover

SLUGS = ["attention", "backprop"]
GOOD = b"def scaled_dot_product_attention(q, k, v):\n    return q\n"
REFERENCE = kit_root() / "solutions" / "attention" / "attention.py"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "class").mkdir()
    return tmp_path / "class"


def find(folder: Path, tmp_path: Path) -> dict[str, submissions.Submission]:
    found = discover(folder, tmp_path / "work", SLUGS)
    return {s.learner: s for s in found}


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def regular(name: str, data: bytes = GOOD) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def special(name: str, kind: bytes, target: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


# ---------------------------------------------------------------------------------- layouts


def test_every_layout_is_found(folder: Path, tmp_path: Path) -> None:
    kit = folder / "ada" / "exercises" / "attention"
    kit.mkdir(parents=True)
    (kit / "attention.py").write_bytes(GOOD)
    make_zip(folder / "bob.zip", {"ladder-main/exercises/attention/attention.py": GOOD})
    make_tar(folder / "cy.tar.gz", [regular("attention.py"), regular("backprop/backprop.py")])
    make_tar(folder / "di.tgz", [regular("attention/attention.py")])
    found = find(folder, tmp_path)
    assert sorted(found) == ["ada", "bob", "cy", "di"]
    for sub in found.values():
        assert sub.modules["attention"].read_bytes() == GOOD
        assert sub.modules["attention"].is_relative_to(tmp_path / "work")
    assert set(found["cy"].modules) == {"attention", "backprop"}
    assert found["ada"].notes == ["no backprop.py found"]


def test_the_kit_layout_wins_over_stray_copies(folder: Path, tmp_path: Path) -> None:
    make_zip(
        folder / "eve.zip",
        {
            "old/attention.py": b"# old\n",
            "exercises/attention/attention.py": GOOD,
            "notes/attention/attention.py": b"# draft\n",
        },
    )
    sub = find(folder, tmp_path)["eve"]
    assert sub.modules["attention"].read_bytes() == GOOD
    assert any("several attention.py found" in n for n in sub.notes), sub.notes


def test_stray_and_hidden_entries_are_ignored(folder: Path, tmp_path: Path) -> None:
    (folder / "README.md").write_text("class of 2025")
    (folder / ".DS_Store").write_bytes(b"\0")
    (folder / "__MACOSX").mkdir()
    (folder / "fay").mkdir()
    (folder / "fay" / "attention.py").write_bytes(GOOD)
    assert list(find(folder, tmp_path)) == ["fay"]


def test_the_grade_folder_is_not_a_learner(folder: Path, tmp_path: Path) -> None:
    (folder / "grades" / ".work").mkdir(parents=True)
    (folder / "ann").mkdir()
    assert [s.learner for s in discover(folder, folder / "grades" / ".work", SLUGS)] == ["ann"]


def test_duplicate_learners_are_graded_once_with_a_note(folder: Path, tmp_path: Path) -> None:
    (folder / "gus").mkdir()
    (folder / "gus" / "attention.py").write_bytes(GOOD)
    make_zip(folder / "gus.zip", {"attention.py": b"# other\n"})
    found = discover(folder, tmp_path / "work", SLUGS)
    assert [s.learner for s in found] == ["gus"]
    assert found[0].modules["attention"].read_bytes() == GOOD
    assert any("several submissions for gus" in n for n in found[0].notes)


def test_nothing_is_executed(folder: Path, tmp_path: Path) -> None:
    canary = tmp_path / "ran"
    (folder / "hal").mkdir()
    (folder / "hal" / "attention.py").write_text(f"open({str(canary)!r}, 'w')\n")
    assert "attention" in find(folder, tmp_path)["hal"].modules
    assert not canary.exists()


# ---------------------------------------------------------------------------------- hostile


def test_dot_dot_and_absolute_paths_are_skipped(folder: Path, tmp_path: Path) -> None:
    escape = tmp_path / "attention.py"
    make_zip(
        folder / "ivy.zip",
        {"../attention.py": b"# escaped\n", str(escape): b"# absolute\n", "a/../../x.py": b""},
    )
    make_tar(folder / "jon.tar.gz", [regular("../../attention.py"), regular(str(escape))])
    found = find(folder, tmp_path)
    for learner in ("ivy", "jon"):
        assert "attention" not in found[learner].modules
        assert any("skipped unsafe member ../" in n for n in found[learner].notes)
        assert any(f"skipped unsafe member {escape}" in n for n in found[learner].notes)
    assert not escape.exists() and not (folder / "attention.py").exists()


def test_links_are_never_followed(folder: Path, tmp_path: Path) -> None:
    link = zipfile.ZipInfo("attention.py")
    link.external_attr = 0o120777 << 16
    with zipfile.ZipFile(folder / "kim.zip", "w") as zf:
        zf.writestr(link, str(REFERENCE))
    make_tar(
        folder / "lou.tar.gz",
        [
            special("attention.py", tarfile.SYMTYPE, str(REFERENCE)),
            special("backprop.py", tarfile.LNKTYPE, str(REFERENCE)),
        ],
    )
    (folder / "max").mkdir()
    (folder / "max" / "attention.py").symlink_to(REFERENCE)
    (folder / "max" / "exercises").symlink_to(kit_root() / "exercises")
    (folder / "ned").symlink_to(REFERENCE.parent)
    found = find(folder, tmp_path)
    assert all(not s.modules for s in found.values()), {k: s.modules for k, s in found.items()}
    assert "skipped link attention.py" in found["kim"].notes
    assert {"skipped link attention.py", "skipped link backprop.py"} <= set(found["lou"].notes)
    assert "skipped attention.py: a symbolic link" in found["max"].notes
    assert "ned is a symbolic link: not followed" in found["ned"].notes


def test_device_files_in_tars_are_skipped(folder: Path, tmp_path: Path) -> None:
    make_tar(
        folder / "oz.tar.gz",
        [special("attention.py", tarfile.CHRTYPE), special("backprop.py", tarfile.FIFOTYPE)],
    )
    notes = find(folder, tmp_path)["oz"].notes
    assert "skipped device or special file attention.py" in notes
    assert "skipped device or special file backprop.py" in notes


def test_zip_bombs_are_not_inflated(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_zip(folder / "pam.zip", {"attention.py": b" " * 8 * 2**20})
    make_zip(folder / "quin.zip", {"attention.py": GOOD, "data.bin": b"\0" * 3 * 2**20})
    make_tar(
        folder / "rae.tar.gz", [regular("data.bin", b"\0" * 3 * 2**20), regular("attention.py")]
    )
    monkeypatch.setattr(submissions, "MAX_ARCHIVE_BYTES", 2**21)
    found = find(folder, tmp_path)
    assert any("a bomb?" in n for n in found["pam"].notes) and not found["pam"].modules
    assert any("declares 3 MiB uncompressed (a bomb?)" in n for n in found["quin"].notes)
    assert any("larger than 2 MiB uncompressed" in n for n in found["rae"].notes)
    assert not found["quin"].modules and not found["rae"].modules


def test_too_many_members_and_big_modules(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submissions, "MAX_MEMBERS", 10)
    make_zip(folder / "sam.zip", {f"f{i}.txt": b"" for i in range(20)} | {"attention.py": GOOD})
    make_tar(folder / "tia.tar.gz", [regular("attention.py", b"#" * (3 * 2**20))])
    found = find(folder, tmp_path)
    assert any("more than 10 members" in n for n in found["sam"].notes)
    assert "skipped attention.py: larger than 2 MiB" in found["tia"].notes


def test_corrupt_archives_become_notes(folder: Path, tmp_path: Path) -> None:
    (folder / "uma.zip").write_bytes(b"PK\x03\x04 this is not a zip")
    good = make_tar(tmp_path / "good.tar.gz", [regular("attention.py")]).read_bytes()
    (folder / "vic.tar.gz").write_bytes(good[: len(good) // 2])
    (folder / "wes.tgz").write_bytes(os.urandom(300))
    found = find(folder, tmp_path)
    for learner in ("uma", "vic", "wes"):
        assert any(n.startswith("corrupt archive") for n in found[learner].notes), found[learner]
        assert not found[learner].modules


def test_non_utf8_names_are_skipped(folder: Path, tmp_path: Path) -> None:
    data = make_zip(tmp_path / "x.zip", {"Q/attention.py": GOOD}).read_bytes()
    (folder / "xia.zip").write_bytes(data.replace(b"Q/attention", b"\xff/attention"))
    make_tar(folder / "yan.tar.gz", [regular("\udcff/attention.py")])
    os.mkdir(os.fsencode(folder) + b"/z\xffz")
    found = find(folder, tmp_path)
    for learner in ("xia", "yan"):
        assert any("not UTF-8" in n for n in found[learner].notes), found[learner].notes
        assert not found[learner].modules
    assert "z\ufffdz" in found and "not valid UTF-8" in found["z\ufffdz"].notes[0]


def test_nothing_lands_outside_the_work_folder(folder: Path, tmp_path: Path) -> None:
    make_zip(folder / "zed.zip", {"../../evil.py": b"", "exercises/attention/attention.py": GOOD})
    before = {p for p in tmp_path.rglob("*")}
    find(folder, tmp_path)
    new = {p for p in tmp_path.rglob("*")} - before
    assert new and all(p.is_relative_to(tmp_path / "work") for p in new), new
