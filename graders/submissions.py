"""Find a class's submissions and take from each, safely, the module files that grading needs.

A submission is an entry of the submissions folder named after its learner: a folder, a `.zip`, or
a `.tar.gz` / `.tgz` (also `.tar`, `.tar.bz2`, `.tar.xz`). Inside, the learner's `<slug>.py` files
may sit anywhere: in the kit's `exercises/<slug>/` tree, in bare exercise folders, at the top, or
under one extra top folder (as GitHub's downloads make). Nothing is ever executed or extracted
wholesale: only regular files named `<slug>.py` are read, with caps on sizes and counts, and
copied into the grader's work folder. Links, devices, absolute or `../` paths and non-UTF-8 names
are skipped, and every problem becomes a note on the submission, never a traceback.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

MAX_MODULE_BYTES = 2 * 2**20  # one learner's module file
MAX_MEMBERS = 20_000  # entries of one archive, or files walked in one folder
MAX_ARCHIVE_BYTES = 2**30  # declared (zip) or streamed (tar) uncompressed bytes of one archive
MAX_RATIO = 200  # uncompressed / compressed size of a module file in a zip
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
JUNK_DIRS = {"__MACOSX", ".git", "__pycache__", ".ipynb_checkpoints", ".venv", "node_modules"}


@dataclass
class Submission:
    """One learner's module per exercise found (copied into the work folder), and notes."""

    learner: str
    modules: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    source: Path | None = None  # the entry of the submissions folder it came from


class SubmissionError(Exception):
    """A whole archive or folder cannot be used; the message becomes a note."""


def discover(folder: Path, workdir: Path, slugs: list[str]) -> list[Submission]:
    """Every learner's submission in `folder`, sorted by learner, modules copied to `workdir`."""
    folder, workdir = Path(folder), Path(workdir)
    entries: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        learner = learner_name(path)
        if learner is not None and not _holds(path, workdir):  # not the grader's own folder
            entries.setdefault(learner, []).append(path)
    return [_take(name, paths, workdir, slugs) for name, paths in sorted(entries.items())]


def learner_name(path: Path) -> str | None:
    """The learner an entry belongs to (its name less the archive suffix), or None to ignore it."""
    name = path.name
    if name.startswith(".") or name in JUNK_DIRS:
        return None
    if path.is_dir() or path.is_symlink():
        return name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None  # a stray file (README, grades.csv): not a submission


def _take(learner: str, paths: list[Path], workdir: Path, slugs: list[str]) -> Submission:
    clean = _printable(learner)
    sub = Submission(clean, source=paths[0])
    if clean != learner:
        sub.notes.append(f"the submission's name is not valid UTF-8; graded as {clean!r}")
    if len(paths) > 1:
        names = ", ".join(p.name for p in paths)
        sub.notes.append(f"several submissions for {clean} ({names}); graded {paths[0].name} only")
    try:
        files = dict(_read(paths[0], set(slugs), sub.notes))
    except SubmissionError as err:
        sub.notes.append(str(err))
        files = {}
    target = workdir / _folder_name(clean)
    for slug in slugs:
        chosen = _choose(slug, files, sub.notes)
        if chosen is not None:
            target.mkdir(parents=True, exist_ok=True)
            module = target / f"{slug}.py"
            module.write_bytes(files[chosen])
            sub.modules[slug] = module
    return sub


def _read(path: Path, slugs: set[str], notes: list[str]) -> Iterator[tuple[str, bytes]]:
    """(relative path, bytes) of every wanted file of one submission."""
    wanted = {f"{slug}.py" for slug in slugs}
    if path.is_symlink():
        raise SubmissionError(f"{path.name} is a symbolic link: not followed")
    if path.is_dir():
        yield from _read_folder(path, wanted, notes)
    elif path.name.lower().endswith(".zip"):
        yield from _read_zip(path, wanted, notes)
    else:
        yield from _read_tar(path, wanted, notes)


# ------------------------------------------------------------------------------ folders


def _read_folder(root: Path, wanted: set[str], notes: list[str]) -> Iterator[tuple[str, bytes]]:
    seen = 0
    for top, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in JUNK_DIRS)
        seen += len(files) + len(dirs)
        if seen > MAX_MEMBERS:
            notes.append(f"more than {MAX_MEMBERS} files: the rest was not searched")
            return
        for name in sorted(files):
            if name not in wanted:
                continue
            path = Path(top) / name
            rel = path.relative_to(root).as_posix()
            try:
                yield rel, _read_regular(path)
            except SubmissionError as err:
                notes.append(f"skipped {rel}: {err}")


def _read_regular(path: Path) -> bytes:
    """A regular file's bytes, without following a link, up to MAX_MODULE_BYTES."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise SubmissionError("a symbolic link" if err.errno == 40 else err.strerror) from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SubmissionError("not a regular file")
        return _capped(f, info.st_size)


def _capped(f: io.BufferedIOBase, declared: int) -> bytes:
    if declared > MAX_MODULE_BYTES:
        raise SubmissionError(f"larger than {MAX_MODULE_BYTES // 2**20} MiB")
    data = f.read(MAX_MODULE_BYTES + 1)
    if len(data) > MAX_MODULE_BYTES:
        raise SubmissionError(f"larger than {MAX_MODULE_BYTES // 2**20} MiB")
    return data


# ------------------------------------------------------------------------------ archives


def _read_zip(path: Path, wanted: set[str], notes: list[str]) -> Iterator[tuple[str, bytes]]:
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            _check_archive(len(members), sum(m.file_size for m in members), path)
            for info in members:
                rel = _zip_name(info, notes)
                if rel is None or PurePosixPath(rel).name not in wanted:
                    continue
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind not in (0, stat.S_IFREG):
                    notes.append(f"skipped {_kind(kind)} {rel}")
                    continue
                ratio = info.file_size / max(info.compress_size, 1)
                if info.file_size > 2**20 and ratio > MAX_RATIO:
                    notes.append(f"skipped {rel}: compressed {ratio:.0f}:1 (a bomb?)")
                    continue
                try:
                    with zf.open(info) as f:
                        yield rel, _capped(f, info.file_size)
                except SubmissionError as err:
                    notes.append(f"skipped {rel}: {err}")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError) as err:
        raise SubmissionError(f"corrupt archive {path.name}: {err}") from None
    except (OSError, EOFError, zlib.error, RuntimeError, ValueError) as err:
        raise SubmissionError(f"corrupt archive {path.name}: {type(err).__name__}: {err}") from None


def _zip_name(info: zipfile.ZipInfo, notes: list[str]) -> str | None:
    """The member's safe relative path, or None (with a note) when it must be skipped."""
    name = info.filename
    if not info.flag_bits & 0x800 and not name.isascii():  # not declared UTF-8: cp437 bytes
        try:
            name = name.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            notes.append(f"skipped a member whose name is not UTF-8 ({_printable(name)!r})")
            return None
    if info.is_dir():
        return None
    return _safe_path(name, notes)


def _read_tar(path: Path, wanted: set[str], notes: list[str]) -> Iterator[tuple[str, bytes]]:
    try:
        with open(path, "rb") as raw, _decompress(raw) as stream:
            capped = _CountingReader(stream, MAX_ARCHIVE_BYTES)
            with tarfile.open(fileobj=capped, mode="r|", encoding="utf-8") as tar:
                for count, member in enumerate(tar, 1):
                    _check_archive(count, 0, path)
                    item = _tar_member(tar, member, wanted, notes)
                    if item is not None:
                        yield item
    except SubmissionError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as err:
        raise SubmissionError(f"corrupt archive {path.name}: {type(err).__name__}: {err}") from None


def _tar_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, wanted: set[str], notes: list[str]
) -> tuple[str, bytes] | None:
    name = member.name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes come back as surrogates
        notes.append(f"skipped a member whose name is not UTF-8 ({_printable(name)!r})")
        return None
    if member.isdir():
        return None
    rel = _safe_path(name, notes)
    if rel is None or PurePosixPath(rel).name not in wanted:
        return None
    if not member.isreg():
        what = "link" if member.issym() or member.islnk() else "device or special file"
        notes.append(f"skipped {what} {rel}")
        return None
    f = tar.extractfile(member)
    try:
        return rel, _capped(f, member.size)
    except SubmissionError as err:
        notes.append(f"skipped {rel}: {err}")
        return None


def _decompress(raw: io.BufferedReader) -> io.IOBase:
    """The tar stream behind gzip, bzip2 or xz compression (recognised by magic bytes)."""
    magic = raw.peek(6)[:6]
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw)
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if magic.startswith(b"\xfd7zXZ"):
        return lzma.LZMAFile(raw)
    return raw


class _CountingReader(io.RawIOBase):
    """A reader that fails once more than `cap` bytes came through (a decompression bomb)."""

    def __init__(self, stream: io.IOBase, cap: int) -> None:
        self.stream, self.cap, self.count = stream, cap, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size if size >= 0 else 2**20)
        self.count += len(data)
        if self.count > self.cap:
            raise SubmissionError(
                f"archive larger than {self.cap // 2**20} MiB uncompressed (a bomb?): not read"
            )
        return data


def _check_archive(members: int, declared: int, path: Path) -> None:
    if members > MAX_MEMBERS:
        raise SubmissionError(f"{path.name} has more than {MAX_MEMBERS} members (a bomb?)")
    if declared > MAX_ARCHIVE_BYTES:
        raise SubmissionError(
            f"{path.name} declares {declared // 2**20} MiB uncompressed (a bomb?): not read"
        )


def _safe_path(name: str, notes: list[str]) -> str | None:
    """A relative POSIX path without `..`, or None (noted) for absolute and escaping paths."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        notes.append(f"skipped unsafe member {_printable(name)}")
        return None
    if "\0" in name or any(p in JUNK_DIRS for p in parts):
        return None
    return "/".join(p for p in parts if p not in ("", "."))


def _kind(kind: int) -> str:
    return "link" if kind == stat.S_IFLNK else "device or special file"


# ------------------------------------------------------------------------------ choosing


def _choose(slug: str, files: dict[str, bytes], notes: list[str]) -> str | None:
    """The best `<slug>.py` among the submission's files, noting when none or several exist."""
    found = sorted((p for p in files if PurePosixPath(p).name == f"{slug}.py"), key=_rank(slug))
    if not found:
        notes.append(f"no {slug}.py found")
        return None
    if len(found) > 1:
        others = ", ".join(found[1:4]) + (", ..." if len(found) > 4 else "")
        notes.append(f"several {slug}.py found; graded {found[0]} (not {others})")
    return found[0]


def _rank(slug: str):
    """Prefer exercises/<slug>/<slug>.py, then <slug>/<slug>.py, then shallow paths."""

    def key(path: str) -> tuple:
        parts = PurePosixPath(path).parts
        in_kit = parts[-3:-1] == ("exercises", slug)
        in_folder = parts[-2:-1] == (slug,)
        return (not in_kit, not in_folder, "solutions" in parts, len(parts), path)

    return key


def _printable(name: str) -> str:
    """The name with undecodable bytes (surrogates) replaced."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _folder_name(learner: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", learner)[:60].lstrip(".") or "learner"
    return f"{safe}-{hashlib.sha1(learner.encode()).hexdigest()[:8]}"


def _holds(path: Path, inner: Path) -> bool:
    """Is `inner` the folder `path` or inside it (the grade folder kept among submissions)?"""
    try:
        path, inner = path.resolve(), inner.resolve()
    except OSError:
        return False
    return path == inner or path in inner.parents
