"""A long-lived worker process that runs one learner's modules and answers with plain data only.

The trusted parent (`Worker`) starts `python -P -m graders.worker CONFIG` (inside bubblewrap for
a learner's submission), and they talk through two private pipes and a work folder:

    worker -> parent   ready                                  (started and confined)
    parent -> worker   import SLUG   worker: imports that module, once per process
    worker -> parent   imported SLUG | import-error SLUG      (import-error-SLUG.txt says why)
    parent -> worker   load N        worker: reads req-N.json/.npz, moves inputs to the device
    worker -> parent   loaded N | failed N                    (failed: err-N.txt says why)
    parent -> worker   go N          worker: out = call(module, **inputs), syncs CUDA, dumps out-N
    worker -> parent   done N ok|error CPU_SECONDS [restart]  (error: err-N.txt says why)

One worker serves every module of one learner (`<slug>/<slug>.py` in its folder), so the cost
of starting Python and importing torch is paid once per learner; a module that cannot be imported
fails only the requests that need it. The parent times `go N` -> `done N` itself, so a submission
that patches its clocks cannot look faster; loading the inputs is not timed. stdout and stderr are
pipes the parent drains and caps.
When the process dies, hangs or floods, the parent kills it (its process group, bubblewrap's pid
namespace, every process of its private uid) and the reply says what happened in plain words; the
next call starts a fresh worker. Everything the worker writes is read back with `plain.load`.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import inspect
import itertools
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from graders import plain, zygote
from graders.sandbox import (
    Limits,
    Plan,
    confine,
    describe_death,
    kill_worker,
    launch_plan,
    size_words,
)

__all__ = ["ALL", "Limits", "Reply", "Request", "Worker"]

ALL = "*"  # a request's target meaning the folder of all modules (a checkpoint runs its pieces)

ERROR_BYTES = 16_384  # the most of an error text the parent reads
LOG_BYTES = 4_096  # the tail of stdout + stderr kept for a reply
MAX_ENTRIES = 10_000  # files and folders the worker may make in its work folder
DISK_CHECK_SECONDS = 0.5
STARTUP_SECONDS = 120.0  # Python and the worker's own imports; no learner code runs before ready
DEFAULT_LIMITS = Limits()
DONE = re.compile(r"done (\d+) (ok|error) (\d+(?:\.\d+)?)( restart)?")  # a call's last reply


@dataclass(frozen=True)
class Request:
    """One call: `call_name`, defined by `call_source`, is called as `call(module, **inputs)`.

    `target` is the slug of the module the call receives; None for the worker's only module, and
    `ALL` for the path of the folder that holds every module as `<slug>/<slug>.py`.
    """

    case: str
    call_source: str
    call_name: str
    inputs: dict
    target: str | None = None

    @classmethod
    def of(
        cls, case: str, call: Callable[..., Any], inputs: dict, target: str | None = None
    ) -> Request:
        """A request for a top-level function (as `Case.call`), shipped as its source."""
        return cls(case, _source(call), call.__name__, inputs, target)


@dataclass(frozen=True)
class Reply:
    """What came back: the output (plain data) or an error in plain words; never both."""

    ok: bool
    output: Any | None
    error: str | None
    seconds: float  # wall time of the call, measured by the parent (0 when it never ran)
    log: str = ""  # the tail of what the call printed (stdout and stderr)


@functools.cache
def _source(call: Callable[..., Any]) -> str:
    """A call's source, read once (a class sends the same few calls thousands of times)."""
    return textwrap.dedent(inspect.getsource(call))


class _Died(Exception):
    """The worker process is gone (or was killed); the message says why."""


# ------------------------------------------------------------------------------ parent side


class Worker:
    """A worker for one learner's modules (slug -> file); restarts itself after a crash. Use it
    as a context manager.

    `sandboxed=True` for a learner's submission (bubblewrap, or plain process isolation with a
    warning); False for the reference and the mutants, which get the same protocol without
    limits. `mutant` (trusted only, one module) loads the reference with that mistake applied.
    `hide` lists extra paths (grade folders) that must not be visible even if they lie under a
    folder the sandbox needs.
    """

    def __init__(
        self,
        modules: Mapping[str, Path],
        *,
        sandboxed: bool,
        device: str = "cpu",
        limits: Limits = DEFAULT_LIMITS,
        mutant: str | None = None,
        hide: Sequence[Path] = (),
        workroot: Path | None = None,
    ) -> None:
        if mutant is not None and (sandboxed or len(modules) != 1):
            raise ValueError("a mutant is trusted code in a worker of one module")
        if not modules or not all(re.fullmatch(r"[a-z][a-z0-9_]*", slug) for slug in modules):
            raise ValueError(f"modules are named by exercise slugs, not {sorted(modules)}")
        self.modules = {slug: Path(path).resolve() for slug, path in modules.items()}
        self.sandboxed, self.device, self.limits = sandboxed, device, limits
        self.mutant, self.hide, self.workroot = mutant, tuple(hide), workroot
        self.starts = 0  # how many worker processes were started (restarts included)
        self._proc: _Process | None = None
        self._broken: dict[str, str] = {}  # slug -> why it cannot be imported (every reply says)
        self._numbers = itertools.count(1)
        self._start()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def call(self, request: Request, timeout: float | None = None) -> Reply:
        """Run one request; never raises for anything the module does."""
        timeout = self.limits.wall_seconds if timeout is None else timeout
        target = request.target or next(iter(self.modules))
        if request.target is None and len(self.modules) > 1:
            raise ValueError("a request to a worker of several modules names its target")
        if target != ALL and target not in self.modules:
            return Reply(False, None, f"no {target}.py in the submission", 0.0)
        why = self._prepare(target)
        if why is not None:
            return Reply(False, None, why, 0.0)
        try:
            return self._run(self._proc, replace(request, target=target), timeout)
        except _Died as died:
            log = self._proc.take_log()
            seconds = self._proc.elapsed()
            self._stop()
            return Reply(False, None, str(died), seconds, log)

    def close(self) -> None:
        """Kill the worker and everything it started, and remove its work folder."""
        self._stop()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.proc.poll() is None

    # -- one process -----------------------------------------------------------------------

    def _start(self) -> None:
        """Start a process and ask it at once to import every module not known to be broken, so
        the imports run while the grader prepares its side; replies are read in order."""
        warm = zygote.for_workers(self.device, self.hide) if self.sandboxed else None
        root = warm.root if warm is not None else self.workroot
        workdir = Path(tempfile.mkdtemp(prefix="ladder-worker-", dir=root))
        try:
            self._proc = self._launch(workdir, warm)
        except BaseException:
            remove_tree(workdir)
            raise
        self.starts += 1
        for slug in self.modules:
            if slug not in self._broken:
                self._proc.send(f"import {slug}")
                self._proc.importing.append(slug)

    def _launch(self, workdir: Path, warm: zygote.Zygote | None) -> _Process:
        (workdir / "tmp").mkdir()
        tree = workdir / "submission"  # <slug>/<slug>.py for each module
        for slug, path in self.modules.items():
            (tree / slug).mkdir(parents=True)
            if self.sandboxed:  # the worker sees copies, never the learner's folder
                shutil.copyfile(path, tree / slug / f"{slug}.py")
                (tree / slug / f"{slug}.py").chmod(0o644)
                (tree / slug).chmod(0o755)
            else:
                (tree / slug / f"{slug}.py").symlink_to(path)
        tree.chmod(0o755)
        plan = launch_plan(
            workdir, sandboxed=self.sandboxed, device=self.device, hide=self.hide, zygote=warm
        )
        inner = Path(plan.inner_dir) / "submission" if self.sandboxed else tree
        config = {
            "dir": plan.inner_dir,
            "tree": str(inner),
            "modules": {
                slug: str(inner / slug / f"{slug}.py") if self.sandboxed else str(path)
                for slug, path in self.modules.items()
            },
            "device": self.device,
            "mutant": self.mutant,
            "limits": self._child_limits(),
            "uid": plan.uid,
            "nproc": plan.nproc,
        }
        return _Process(workdir, plan, config, self.limits)

    def _child_limits(self) -> dict | None:
        """The limits the worker applies to itself: none when trusted, no RLIMIT_AS on CUDA."""
        if not self.sandboxed:
            return None
        limits = self.limits.to_json()
        if self.device.startswith("cuda"):  # the CUDA driver maps far more than it uses
            limits["memory_bytes"] = None
        return limits

    def _ready(self) -> str | None:
        """Wait for a fresh process to start; None, or why it could not."""
        proc = self._proc
        if proc.ready:
            return None
        try:
            line = proc.wait_line(time.monotonic() + STARTUP_SECONDS, self.limits, STARTUP_SECONDS)
            proc.expect(line, "ready")
        except _Died as died:
            why = _with_log(f"starting the worker: {died}", proc.take_log())
            self._stop()
            return why
        proc.ready = True
        return None

    def _prepare(self, target: str) -> str | None:
        """A started process with every import answered; None, or why `target` cannot run. A
        process that dies importing a module marks that module broken and is started afresh."""
        while target not in self._broken:
            if self._proc is None:
                self._start()
            why = self._ready()
            if why is not None:
                return why
            while self._proc is not None and self._proc.importing:
                self._await_import(self._proc, self._proc.importing.popleft())
            if self._proc is not None:
                break
        return self._broken.get(target)

    def _await_import(self, proc: _Process, slug: str) -> None:
        """Read the reply to `import slug`; a failure is remembered in `_broken`."""
        what = f"importing {slug}.py"
        try:
            line = proc.wait_line(time.monotonic() + self.limits.start_seconds, self.limits)
        except _Died as died:
            self._broken[slug] = _with_log(f"{what}: {died}", proc.take_log())
            self._stop()
            return
        if line == f"imported {slug}":
            return
        if line == f"import-error {slug}":
            why = proc.read_text(f"import-error-{slug}.txt") or f"{what} failed"
        else:
            why = f"{what}: the worker broke its protocol ({line[:40]!r})"
            self._stop()
        self._broken[slug] = _with_log(why, proc.take_log() if self._proc else "")

    def _run(self, proc: _Process, request: Request, timeout: float) -> Reply:
        n = next(self._numbers)
        proc.write_request(n, request)
        proc.send(f"load {n}")
        line = proc.wait_line(time.monotonic() + timeout, self.limits, timeout)
        if line == f"failed {n}":
            return Reply(False, None, proc.read_text(f"err-{n}.txt"), 0.0, proc.take_log())
        proc.expect(line, f"loaded {n}")
        proc.remove_files(n, "out")
        proc.start_clock()
        proc.send(f"go {n}")
        line = proc.wait_line(proc.started + timeout, self.limits, timeout)
        seconds = proc.elapsed()
        match = DONE.fullmatch(line)
        proc.expect(line, f"done {n} ...", match is not None and match.group(1) == str(n))
        reply = self._collect(proc, n, match.group(2) == "ok", seconds)
        proc.remove_files(n, "req", "out")
        proc.next_disk_check = 0.0
        proc.check(self.limits)
        if match.group(4) or float(match.group(3)) > self.limits.cpu_seconds / 2:
            self._stop()  # a memory error, or the CPU budget half spent: start afresh next time
        return reply

    def _collect(self, proc: _Process, n: int, ok: bool, seconds: float) -> Reply:
        log = proc.take_log()
        if not ok:
            return Reply(False, None, proc.read_text(f"err-{n}.txt"), seconds, log)
        try:
            output = plain.load(proc.workdir, f"out-{n}", max_bytes=self.limits.file_bytes)
        except plain.PlainDataError as err:
            return Reply(False, None, f"the output is not plain data: {err}", seconds, log)
        except Exception as err:  # MemoryError and the like, on the trusted side
            message = f"the output could not be read: {type(err).__name__}: {err}"
            return Reply(False, None, message, seconds, log)
        return Reply(True, output, None, seconds, log)

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()


class _Process:
    """One worker process: its pipes, its captured output, its work folder."""

    def __init__(self, workdir: Path, plan: Plan, config: dict, limits: Limits) -> None:
        self.workdir, self.plan, self.limits, self.ready = workdir, plan, limits, False
        self.importing: collections.deque[str] = collections.deque()  # asked, reply not yet read
        self.started = time.perf_counter()
        cmd_r, self.cmd_w = os.pipe()
        self.rep_r, rep_w = os.pipe()
        try:
            if plan.zygote is not None:
                self.proc, self.outputs = _fork(plan.zygote, config, cmd_r, rep_w)
            else:
                self.proc = _spawn(plan, {**config, "cmd_fd": cmd_r, "reply_fd": rep_w})
                self.outputs = (self.proc.stdout, self.proc.stderr)
        except BaseException:
            os.close(self.cmd_w)
            os.close(self.rep_r)
            raise
        finally:
            os.close(cmd_r)
            os.close(rep_w)
        self.streams = {stream.fileno() for stream in self.outputs}
        self.buffer, self.log, self.printed = b"", bytearray(), 0
        self.reply_open, self.next_disk_check = True, 0.0

    # -- talking -----------------------------------------------------------------------------

    def send(self, line: str) -> None:
        # A worker that died or closed its end raises OSError here; wait_line will say how.
        with contextlib.suppress(OSError):
            os.write(self.cmd_w, f"{line}\n".encode())

    def wait_line(self, deadline: float, limits: Limits, limit: float | None = None) -> str:
        """The next reply line, meanwhile draining output and watching the clock and the disk."""
        poller = select.poll()
        for fd in self._watched():
            poller.register(fd, select.POLLIN)
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                waited = limits.start_seconds if limit is None else limit
                raise self._fail(f"timed out after {waited:g} s")
            for fd, _ in poller.poll(min(remaining, 0.25) * 1000):
                if not self._read(fd):
                    poller.unregister(fd)
            self.check(limits)
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode("ascii", errors="replace")

    def expect(self, line: str, wanted: str, ok: bool | None = None) -> None:
        if not (line == wanted if ok is None else ok):
            got = line[:40]
            raise self._fail(f"the worker broke its protocol: expected {wanted!r}, got {got!r}")

    def _watched(self) -> list[int]:
        return ([self.rep_r] if self.reply_open else []) + sorted(self.streams)

    def _read(self, fd: int) -> bool:
        """Read what is there; False at end of file."""
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return True
        if fd == self.rep_r:
            self.reply_open = bool(data)
            self.buffer += data
            if len(self.buffer) > 4096:
                raise self._fail("the worker broke its protocol: a reply line too long")
        elif data:
            self.printed += len(data)
            self.log = (self.log + data)[-LOG_BYTES:]
            if self.printed > self.limits.output_bytes:
                cap = size_words(self.limits.output_bytes)
                raise self._fail(f"wrote more than {cap} of output")
        else:
            self.streams.discard(fd)
        return bool(data)

    def check(self, limits: Limits) -> None:
        """Fail when the process has died, or its work folder grew too big."""
        code = self.proc.poll()
        if code is not None:
            self._drain()
            death = describe_death(code, not self.plan.exact_status, limits)
            raise self._fail(death, kill=False)
        now = time.monotonic()
        if now >= self.next_disk_check:
            self.next_disk_check = now + DISK_CHECK_SECONDS
            used, entries = disk_usage(self.workdir, MAX_ENTRIES)
            if entries > MAX_ENTRIES:
                raise self._fail(f"created more than {MAX_ENTRIES} files in its work folder")
            if used > limits.disk_bytes:
                cap = size_words(limits.disk_bytes)
                raise self._fail(f"wrote more than {cap} to its work folder")

    def _drain(self) -> None:
        """Collect the last output and reply bytes of a process that has ended."""
        for fd in self._watched():
            with contextlib.suppress(OSError, _Died):
                while self._read(fd):
                    pass

    def _fail(self, reason: str, kill: bool = True) -> _Died:
        if kill:
            self._kill_processes()
        return _Died(reason)

    def _kill_processes(self) -> None:
        if isinstance(self.proc, zygote.Forked):
            self.proc.kill(self.plan.owner)
        else:
            kill_worker(self.proc, self.plan.owner, self.plan.bwrap)

    # -- files and clocks --------------------------------------------------------------------

    def write_request(self, n: int, request: Request) -> None:
        self.printed, self.log = 0, bytearray()
        self.start_clock()
        data = {
            "case": request.case,
            "call_source": request.call_source,
            "call_name": request.call_name,
            "inputs": request.inputs,
            "target": request.target,
        }
        plain.dump(data, self.workdir, f"req-{n}")
        for suffix in ("json", "npz"):  # readable by the worker's private uid, whatever the umask
            with contextlib.suppress(FileNotFoundError):  # no arrays, no .npz
                (self.workdir / f"req-{n}.{suffix}").chmod(0o644)

    def remove_files(self, n: int, *kinds: str) -> None:
        for kind in kinds:
            for suffix in ("json", "npz"):
                with contextlib.suppress(OSError):
                    (self.workdir / f"{kind}-{n}.{suffix}").unlink()
        with contextlib.suppress(OSError):
            (self.workdir / f"err-{n}.txt").unlink()

    def read_text(self, name: str) -> str:
        try:
            data = plain.read_capped(self.workdir / name, 10 * ERROR_BYTES)[:ERROR_BYTES]
        except plain.PlainDataError as err:
            return f"the worker gave no readable error text ({err})"
        return data.decode("utf-8", errors="replace")

    def take_log(self) -> str:
        text, self.log = self.log.decode("utf-8", errors="replace"), bytearray()
        return text

    def start_clock(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def kill(self) -> None:
        self._kill_processes()
        for fd in (self.cmd_w, self.rep_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        for stream in self.outputs:
            with contextlib.suppress(OSError):
                stream.close()
        remove_tree(self.workdir)


def _spawn(plan: Plan, config: dict) -> subprocess.Popen:
    """Start `python -m graders.worker CONFIG` (in bubblewrap when the plan says so)."""
    argv = [sys.executable, "-P", "-m", "graders.worker", json.dumps(config)]
    return subprocess.Popen(
        [*plan.prefix, *argv],
        env=plan.env,
        cwd=plan.cwd,
        user=plan.user,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(config["cmd_fd"], config["reply_fd"]),
        start_new_session=True,
    )


def _fork(
    warm: zygote.Zygote, config: dict, cmd_r: int, rep_w: int
) -> tuple[zygote.Forked, tuple[BinaryIO, BinaryIO]]:
    """Have the zygote fork the worker; its stdout and stderr come back through new pipes."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        forked = warm.fork(config, (cmd_r, rep_w, out_w, err_w))
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    return forked, (os.fdopen(out_r, "rb", buffering=0), os.fdopen(err_r, "rb", buffering=0))


def disk_usage(folder: Path, max_entries: int) -> tuple[int, int]:
    """Bytes allocated under `folder` and the number of entries, stopping past `max_entries`."""
    used, entries, stack = 0, 0, [str(folder)]
    while stack and entries <= max_entries:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    entries += 1
                    info = entry.stat(follow_symlinks=False)
                    used += info.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return used, entries


def remove_tree(folder: Path) -> None:
    """Remove a work folder, even one whose owner made parts of it unreadable."""

    def retry(func: Callable, path: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
            func(path)

    shutil.rmtree(folder, onerror=retry)


def _with_log(message: str, log: str) -> str:
    tail = log.strip()[-1000:]
    return f"{message}\n--- output ---\n{tail}" if tail else message


# ------------------------------------------------------------------------------ child side


@dataclass
class _Child:
    """The worker's own state: its folders, modules, device and the pending request."""

    folder: Path
    tree: Path  # <slug>/<slug>.py for every module
    files: dict[str, Path]
    device: str
    limits: Limits | None
    reply_fd: int
    mutant: str | None
    modules: dict[str, Any] = field(default_factory=dict)
    pending: dict = field(default_factory=dict)

    def send(self, line: str) -> None:
        os.write(self.reply_fd, f"{line}\n".encode())

    def write_error(self, name: str, text: str) -> None:
        (self.folder / name).write_text(text[:ERROR_BYTES], encoding="utf-8", errors="replace")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m graders.worker CONFIG_JSON`."""
    return serve(json.loads((argv or sys.argv)[1]))


def serve(config: dict) -> int:
    """Confine this process, then answer the parent's commands until it closes the pipe."""
    limits = Limits(**config["limits"]) if config["limits"] else None
    if limits is not None:
        confine(limits, config["uid"], config["nproc"])
    files = {slug: Path(path) for slug, path in config["modules"].items()}
    child = _Child(
        Path(config["dir"]),
        Path(config["tree"]),
        files,
        config["device"],
        limits,
        config["reply_fd"],
        config["mutant"],
    )
    commands = os.fdopen(config["cmd_fd"], "r", encoding="ascii", errors="replace")
    child.send("ready")
    for line in commands:
        verb, _, n = line.strip().partition(" ")
        if verb == "import" and n in child.files:
            error = _import(child, n)
            if error is not None:
                child.write_error(f"import-error-{n}.txt", error)
            child.send(f"import-error {n}" if error else f"imported {n}")
        elif verb == "load":
            _load(child, n)
        elif verb == "go":
            _go(child, n)
    return 0


def _import(child: _Child, slug: str) -> str | None:
    """Import one module; None, or what went wrong (file and line where known)."""
    from graders import impl

    path = child.files[slug]
    try:
        if child.mutant is not None:
            child.modules[slug] = impl.load(slug, "solutions", child.mutant)
        else:
            child.modules[slug] = impl.execute(path, f"ladder.worker.{slug}")
    except impl.ImplementationError as err:
        return str(err).replace(f"{path.parent}/", "")
    except SystemExit as err:
        return f"importing {path.name} called sys.exit({err.code!r}); a module must not exit"
    except BaseException as err:
        return f"importing {path.name} raised {describe_error(err, path, child.limits)}"
    _single_thread()
    return None


def _load(child: _Child, n: str) -> None:
    """Read request n and prepare its call; answer `loaded n` or `failed n`."""
    try:
        request = plain.load(child.folder, f"req-{n}")
        namespace: dict[str, Any] = {"__name__": "ladder_call"}
        exec(compile(request["call_source"], "<case call>", "exec"), namespace)
        target = request["target"]
        child.pending = {
            "n": n,
            "call": namespace[request["call_name"]],
            "module": str(child.tree) if target == ALL else child.modules[target],
            "file": child.files.get(target),
            "inputs": plain.to_device(request["inputs"], child.device),
        }
    except BaseException as err:
        child.pending = {}
        child.write_error(f"err-{n}.txt", f"preparing the call: {describe_error(err, None, None)}")
        child.send(f"failed {n}")
        return
    child.send(f"loaded {n}")


def _go(child: _Child, n: str) -> None:
    """Run the prepared call, sync the device, write out-n (or err-n); answer `done n ...`."""
    status, restart = "ok", False
    try:
        if child.pending.get("n") != n:
            raise RuntimeError(f"request {n} was not loaded")
        _single_thread()
        output = child.pending["call"](child.pending["module"], **child.pending["inputs"])
        _sync(child.device)
        try:
            plain.dump(output, child.folder, f"out-{n}")
        except plain.PlainDataError as err:
            raise plain.PlainDataError(f"the call returned {err}") from None
    except BaseException as err:
        status, restart = "error", _out_of_memory(err)
        module_file = child.pending.get("file")
        child.write_error(f"err-{n}.txt", describe_error(err, module_file, child.limits))
    child.pending = {}
    usage = os.times()
    cpu = usage.user + usage.system
    child.send(f"done {n} {status} {cpu:.3f}" + (" restart" if restart else ""))


def describe_error(err: BaseException, module_file: Path | None, limits: Limits | None) -> str:
    """`Type: message (at file, line N, in function)`, naming the last frame in the module."""
    if isinstance(err, SystemExit):
        text = f"the call raised SystemExit({err.code!r}); a submission must not exit"
    else:
        text = f"{type(err).__name__}: {_safe_str(err)}"
    if _out_of_memory(err) and limits is not None and limits.memory_bytes:
        text += f" (the memory limit is {size_words(limits.memory_bytes)})"
    frames = [
        f
        for f in traceback.extract_tb(err.__traceback__)
        if module_file is not None and f.filename == str(module_file)
    ]
    if frames:
        text += f" (at {module_file.name}, line {frames[-1].lineno}, in {frames[-1].name})"
    return text


def _safe_str(err: BaseException) -> str:
    try:
        return str(err)[:2000]
    except BaseException:
        return "<the exception cannot be printed>"


def _out_of_memory(err: BaseException) -> bool:
    return isinstance(err, MemoryError) or "allocate memory" in _safe_str(err)


def _single_thread() -> None:
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _sync(device: str) -> None:
    torch = sys.modules.get("torch")
    if device.startswith("cuda") and torch is not None:
        torch.cuda.synchronize()


if __name__ == "__main__":
    sys.exit(main())
