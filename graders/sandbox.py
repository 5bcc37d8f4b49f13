"""How a worker process is confined: bubblewrap where it works, plain process isolation otherwise.

The parent side builds the command line (`launch_plan`), picks an identity (a private uid per worker
when the grader runs as root, so that the process limit binds and every process of the worker can
be found and killed), and kills what is left (`kill_worker`). The child side (`confine`) drops that
uid, applies the resource limits and asks to die with its parent, before any learner code runs.

With bubblewrap the worker sees a fresh root: read-only binds of the Python install, the virtual
environment and the `graders` package, its own work folder at /sandbox, a private /proc and /dev,
no network (an empty network namespace), and a fresh pid namespace that dies with it. Everything
else on the machine, `solutions/` and the grade files included, does not exist there.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from graders.curriculum import kit_root

if TYPE_CHECKING:
    from graders.zygote import Zygote

log = logging.getLogger(__name__)

SANDBOX_DIR = "/sandbox"  # where the work folder appears inside bubblewrap
GRADERS_ROOT = Path(__file__).resolve().parent.parent  # the folder that holds `graders/`
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
_UID_BASE = 1_500_000_000  # private uids for sandboxed workers when the grader runs as root
_uid_counter = itertools.count()


class WeakIsolationWarning(UserWarning):
    """bubblewrap is missing or broken: sandboxed workers run as plain processes."""


@dataclass(frozen=True)
class Limits:
    """What one worker may use. Memory is address space (off on CUDA); CPU is per worker."""

    wall_seconds: float = 60.0  # default timeout of one call
    cpu_seconds: float = 600.0  # CPU time of one worker process; it is restarted at half of this
    memory_bytes: int | None = 4 * 2**30
    processes: int = 64  # processes and threads of the worker's uid
    file_bytes: int = 256 * 2**20  # largest file the worker may write (its output included)
    output_bytes: int = 2**20  # stdout + stderr per call (prints, logging)
    disk_bytes: int = 2**30  # everything in its work folder
    open_files: int = 256
    start_seconds: float = 120.0  # importing one module

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """How to start one worker: command prefix, environment, folder and identity."""

    prefix: list[str]  # bwrap and its options, or nothing
    env: dict[str, str]
    cwd: Path
    inner_dir: str  # the work folder as the worker sees it
    uid: int | None  # the worker drops to this uid itself (inside bubblewrap)
    user: int | None  # Popen(user=...) for the fallback
    bwrap: bool
    nproc: int | None
    zygote: Zygote | None = None  # forks the worker, instead of starting it

    @property
    def owner(self) -> int | None:
        """The private uid the worker runs as, whose processes are all killed at the end."""
        return self.uid if self.uid is not None else self.user

    @property
    def exact_status(self) -> bool:
        """Whether the worker's exit status is its own (bubblewrap reports a signal as 128 + N)."""
        return not self.bwrap or self.zygote is not None


# ------------------------------------------------------------------------------ parent side


def isolation() -> str:
    """'bwrap' when bubblewrap passes its self-test here, else 'process' (with one warning)."""
    if _bwrap_works():
        return "bwrap"
    _warn_once(
        "bubblewrap (bwrap) is missing or fails its self-test: submissions run as plain "
        "processes with resource limits, a scrubbed environment and a private folder, but they "
        "can read what the grader's user can read and reach the network"
        + ("" if _fallback_uid_works() else "; and they run as root")
    )
    return "process"


def launch_plan(
    workdir: Path,
    *,
    sandboxed: bool,
    device: str,
    hide: Sequence[Path] = (),
    zygote: Zygote | None = None,
) -> Plan:
    """How to run one worker in `workdir` (which holds a `tmp/` folder); chowns it if needed.
    With a `zygote`, `workdir` lies in the zygote's root and the worker is forked there."""
    if not sandboxed:
        env = {**os.environ, **_thread_env(), "PYTHONPATH": _pythonpath(os.environ)}
        return Plan([], env, workdir, str(workdir), None, None, False, None)
    uid = allocate_uid()
    if zygote is not None:
        if uid is None:
            raise ValueError("a zygote forks workers for private uids only (run as root)")
        _own(workdir, uid)
        inner = f"{SANDBOX_DIR}/{workdir.name}"
        return Plan([], {}, workdir, inner, uid, None, True, nproc_budget(uid), zygote)
    bwrapped = isolation() == "bwrap"
    if not bwrapped and uid is not None and not _fallback_uid_works():
        uid = None  # this Python cannot run as another user: stay root (warned)
    if uid is not None:
        _own(workdir, uid)
    if bwrapped:
        argv = bwrap_argv(workdir, device, hide, uid is not None, sandbox_env(SANDBOX_DIR, device))
        wrapped = [bwrap_path() or "bwrap", *argv[1:]]
        return Plan(wrapped, {}, workdir, SANDBOX_DIR, uid, None, True, nproc_budget(uid))
    env = sandbox_env(str(workdir), device)
    return Plan([], env, workdir, str(workdir), None, uid, False, nproc_budget(uid))


def _own(workdir: Path, uid: int) -> None:
    """The work folder and its tmp/ belong to the worker's private uid, and to no one else."""
    for folder in (workdir, workdir / "tmp"):
        os.chown(folder, uid, uid)
        os.chmod(folder, 0o700)


def bwrap_argv(
    workdir: Path, device: str, hide: Sequence[Path], as_root: bool, env: dict[str, str]
) -> list[str]:
    """bubblewrap's options: namespaces, read-only system binds, the work folder, masks, env."""
    args = ["bwrap", "--die-with-parent", "--new-session"]
    if as_root:  # privileged bwrap; the worker drops to its private uid itself
        args += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
        args += ["--unshare-cgroup-try", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-all"]
    binds = _read_only_dirs(device)
    etc = [Path("/etc/ld.so.cache"), Path("/etc/localtime")]
    for d in _ancestors([Path(SANDBOX_DIR), Path("/tmp")]):
        args += ["--perms", "0755", "--dir", str(d)]
    # The private folders first: a kit or venv that lives under /tmp is bound on top of them.
    args += ["--bind", str(workdir), SANDBOX_DIR, "--bind", str(workdir / "tmp"), "/tmp"]
    for d in _ancestors([*binds, *etc]):
        args += ["--perms", "0755", "--dir", str(d)]
    for link in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(link):
            args += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link) and not _covered(Path(link), binds):
            args += ["--ro-bind", link, link]
    for d in binds:
        args += ["--ro-bind", str(d), str(d)]
    for f in etc:
        args += ["--ro-bind-try", str(f), str(f)]
    args += ["--proc", "/proc", "--dev", "/dev"]
    if device.startswith("cuda"):
        args += _cuda_binds()
    args += _masks([*hide, GRADERS_ROOT / "solutions", kit_root() / "solutions"], binds)
    args += ["--chdir", SANDBOX_DIR, "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return args


def allocate_uid() -> int | None:
    """A uid no process uses, private to one worker; None unless the grader runs as root."""
    if os.geteuid() != 0:
        return None
    for _ in range(1000):
        uid = _UID_BASE + ((os.getpid() % 2**20) << 8) + next(_uid_counter) % 256
        if not processes_of(uid):
            return uid
    raise RuntimeError("no free uid for a sandboxed worker")


def nproc_budget(uid: int | None) -> int | None:
    """RLIMIT_NPROC counts all tasks of a uid: the grader's own when it has no private uid."""
    if uid is not None:
        return 0  # 0: just `processes`
    if os.geteuid() == 0:
        return None  # root ignores RLIMIT_NPROC; the pid namespace or the timeout bounds it
    return _count_tasks(os.getuid())


def processes_of(uid: int) -> list[int]:
    """Pids (in the grader's pid namespace) of the live processes (not zombies) of `uid`."""
    pids: list[int] = []
    if not os.path.isdir("/proc"):  # not Linux: nothing to find
        return pids
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid and _state(entry.name) not in "ZX":
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _state(pid: str) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rpartition(b")")[2].split()[0].decode()


def kill_worker(proc: subprocess.Popen, uid: int | None, bwrapped: bool) -> None:
    """Kill the worker's process group, bubblewrap's namespace, and every process of its uid.

    bubblewrap's sandbox init is killed first, so that bubblewrap reaps it and exits by itself:
    killing bubblewrap first would leave the init a zombie wherever pid 1 does not reap orphans
    (as in many containers).
    """
    children = _children(proc.pid) if bwrapped else []
    for child in children:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, signal.SIGKILL)
    if children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        proc.kill()  # also when it left its process group
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log.warning("worker %s did not die within 10 s of SIGKILL", proc.pid)
    if uid is not None:
        sweep_uid(uid)


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found = []
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def sweep_uid(uid: int) -> None:
    """SIGKILL every process of a private uid until none is left (a fork bomb keeps forking)."""
    for _ in range(200):
        pids = processes_of(uid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    log.warning("processes of uid %s survived 2 s of SIGKILL: %s", uid, processes_of(uid))


def describe_death(returncode: int, bwrapped: bool, limits: Limits) -> str:
    """Plain words for how a worker process ended."""
    sig = -returncode if returncode < 0 else None
    if bwrapped and 128 < returncode < 128 + 65:
        sig = returncode - 128  # bubblewrap reports a signal as 128 + its number
    if sig is None:
        return f"the process exited with status {returncode}"
    mem = size_words(limits.memory_bytes) if limits.memory_bytes else None
    words = {
        signal.SIGXCPU: f"killed: CPU time limit ({limits.cpu_seconds:g} s)",
        signal.SIGKILL: f"killed (SIGKILL): CPU time limit ({limits.cpu_seconds:g} s) "
        "or the machine ran out of memory",
        signal.SIGSEGV: "crashed: segmentation fault (SIGSEGV), e.g. recursion too deep for the "
        "C stack" + (f" or memory exhausted (memory limit {mem})" if mem else ""),
        signal.SIGABRT: "crashed: aborted (SIGABRT)"
        + (f"; the memory limit is {mem}" if mem else ""),
        signal.SIGXFSZ: f"killed: file size limit ({size_words(limits.file_bytes)})",
    }
    return words.get(sig, f"killed by signal {signal.Signals(sig).name}")


def size_words(n: int | None) -> str:
    """A byte count as people write it: 1 GiB, 256 KiB."""
    if n is None:
        return "none"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} bytes"


def _read_only_dirs(device: str) -> list[Path]:
    """The Python install, the virtual environment, `graders` and system library folders."""
    dirs = [Path(sys.base_prefix), Path(sys.prefix), Path(sys.executable).resolve().parent]
    dirs += [GRADERS_ROOT / "graders", Path("/usr")]
    if device.startswith("cuda"):
        dirs += [Path(p) for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    real = [d.resolve() for d in dirs if d.is_dir() and d.resolve() != Path("/")]
    real = sorted(set(real), key=lambda p: len(p.parts))
    return [d for i, d in enumerate(real) if not _covered(d, real[:i])]


def _covered(path: Path, dirs: Iterable[Path]) -> bool:
    return any(path == d or d in path.parents for d in dirs)


def _ancestors(paths: Iterable[Path]) -> list[Path]:
    """Every proper ancestor folder of `paths` but /, parents first (bwrap makes them 0700)."""
    out = {a for p in paths for a in p.parents if a != Path("/")}
    return sorted(out, key=lambda p: len(p.parts))


def _masks(paths: Iterable[Path], binds: Sequence[Path]) -> list[str]:
    """Hide secret paths that lie under a read-only bind (an empty tmpfs, or /dev/null)."""
    args = []
    for p in paths:
        p = Path(p).resolve()
        if _covered(p, binds) and p.exists():
            args += ["--tmpfs", str(p)] if p.is_dir() else ["--ro-bind", "/dev/null", str(p)]
    return args


def _cuda_binds() -> list[str]:
    args = []
    for dev in sorted(Path("/dev").glob("nvidia*")):
        args += ["--dev-bind", str(dev), str(dev)]
    return [*args, "--ro-bind", "/sys", "/sys"]


def _thread_env() -> dict[str, str]:
    return dict.fromkeys(THREAD_VARS, "1")


def _pythonpath(env: dict[str, str] | os._Environ) -> str:
    rest = env.get("PYTHONPATH", "")
    return str(GRADERS_ROOT) + (os.pathsep + rest if rest else "")


def sandbox_env(home: str, device: str) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": f"{home}/tmp" if home != SANDBOX_DIR else "/tmp",
        "LANG": "C.UTF-8",
        "USER": "learner",  # getpass.getuser() needs one: the sandbox has no /etc/passwd
        "LOGNAME": "learner",
        "PYTHONPATH": str(GRADERS_ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONHASHSEED": "0",
        **_thread_env(),
    }
    if device.startswith("cuda"):
        for key in ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "NVIDIA_VISIBLE_DEVICES"):
            if key in os.environ:
                env[key] = os.environ[key]
    return env


def _count_tasks(uid: int) -> int:
    total = 0
    for pid in processes_of(uid):
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{pid}/task"))
    return total


_warned = False


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning(message)
        warnings.warn(message, WeakIsolationWarning, stacklevel=3)


def bwrap_path() -> str | None:
    """Where bubblewrap is, if anywhere (tests replace this to exercise the fallback)."""
    return shutil.which("bwrap")


def _bwrap_works() -> bool:
    path = bwrap_path()
    return path is not None and _bwrap_self_test(path)


@functools.cache
def _bwrap_self_test(path: str) -> bool:
    """Does `path` start this Python in the sandbox we would build? (Once per process.)"""
    env = sandbox_env(SANDBOX_DIR, "cpu")
    root = os.geteuid() == 0
    return _self_test(lambda folder: [path, *bwrap_argv(folder, "cpu", (), root, env)[1:]])


@functools.cache
def _fallback_uid_works() -> bool:
    """Can a private uid run this Python and import `graders`? Not when it lives in /root."""
    uid = allocate_uid()
    return uid is None or _self_test(lambda folder: [], uid)


def _self_test(prefix: Callable[[Path], list[str]], user: int | None = None) -> bool:
    with tempfile.TemporaryDirectory(prefix="ladder-selftest-") as tmp:
        folder = Path(tmp)
        (folder / "tmp").mkdir()
        argv = [*prefix(folder), sys.executable, "-P", "-c", "import graders"]
        env = {} if argv[0] != sys.executable else sandbox_env(str(folder), "cpu")
        try:
            done = subprocess.run(
                argv, env=env, cwd="/", user=user, capture_output=True, timeout=60, check=False
            )
        except (OSError, subprocess.SubprocessError) as err:
            log.info("sandbox self-test failed: %s", err)
            return False
        if done.returncode:
            log.info("sandbox self-test failed: %s", done.stderr.decode(errors="replace")[-500:])
        return done.returncode == 0


# ------------------------------------------------------------------------------ child side


def confine(limits: Limits, uid: int | None, nproc: int | None) -> None:
    """In the worker, before any learner code: drop to `uid`, apply limits, die with the parent."""
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    _prctl(38, 1)  # PR_SET_NO_NEW_PRIVS: no setuid binary can give privileges back
    _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (reset by setuid, so set it after)
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_CPU, int(limits.cpu_seconds), int(limits.cpu_seconds) + 2)
    _limit(resource.RLIMIT_FSIZE, limits.file_bytes)
    _limit(resource.RLIMIT_NOFILE, limits.open_files)
    if limits.memory_bytes is not None:
        _limit(resource.RLIMIT_AS, limits.memory_bytes)
    if nproc is not None:
        _limit(resource.RLIMIT_NPROC, nproc + limits.processes)


def _limit(which: int, soft: int, hard: int | None = None) -> None:
    _, old_hard = resource.getrlimit(which)
    hard = soft if hard is None else hard
    if old_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, old_hard), min(hard, old_hard)
    resource.setrlimit(which, (soft, hard))


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
