"""A warm sandbox that forks a learner's worker instead of starting Python and torch afresh.

Starting a worker costs about two seconds of CPU, most of it importing torch, and a class pays it
once per learner. When the grader runs as root with bubblewrap, one zygote per device starts inside
bubblewrap (the same fresh root, no network, no view of `solutions/`), imports torch and the
worker's modules, and then forks a worker for each learner on request. Before any learner code
runs, the forked worker drops to the learner's private uid, whose work folder (`/sandbox/<name>`,
mode 0700) no other learner's uid can open; signals and ptrace need the same uid, so learners
cannot reach each other or the zygote either. Everything else is the worker's usual protocol.

    grader -> zygote   {"id": N, "config": {...}} + 4 file descriptors   (SCM_RIGHTS)
    zygote -> grader   ready | exit N CODE                  (CODE as Popen.returncode gives it)

The grader kills a forked worker by its uid (`sandbox.sweep_uid`), and the zygote reaps it. The
zygote dies with the thread that started it, and a forked worker dies with the zygote.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from graders import sandbox

FDS = 4  # the worker's command pipe, its reply pipe, its stdout and its stderr
ROOT_PREFIX = "ladder-zygote-"  # then the grader's pid: `ladder-zygote-PID-XXXXXXXX`

_zygotes: dict[tuple, Zygote] = {}
_registry_lock = threading.Lock()


def for_workers(device: str, hide: tuple[Path, ...] = ()) -> Zygote | None:
    """The running zygote for sandboxed workers on `device` (started on first use), or None where
    workers are started one by one: without bubblewrap, or without root (no private uids)."""
    if os.geteuid() != 0 or sandbox.isolation() != "bwrap":
        return None
    key = (os.getpid(), device, tuple(hide))  # a forked grader starts its own
    with _registry_lock:
        zygote = _zygotes.get(key)
        if zygote is None or not zygote.alive:
            zygote = _zygotes[key] = Zygote(device, hide)
        return zygote


@atexit.register
def _close_all() -> None:
    for (pid, *_), zygote in _zygotes.items():
        if pid == os.getpid():
            zygote.close()


class Zygote:
    """The grader's side: start the zygote, ask it to fork, learn how each fork ended."""

    def __init__(self, device: str, hide: tuple[Path, ...]) -> None:
        _sweep_abandoned_roots()
        self.root = Path(tempfile.mkdtemp(prefix=f"{ROOT_PREFIX}{os.getpid()}-"))  # /sandbox inside
        self.root.chmod(0o711)  # workers may enter their own folder, not list the others
        (self.root / "tmp").mkdir(mode=0o755)  # /tmp inside, where no learner may write
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._children: dict[int, Forked] = {}
        self._dead = False
        env = sandbox.sandbox_env(sandbox.SANDBOX_DIR, device)
        argv = sandbox.bwrap_argv(self.root, device, hide, True, env)
        command = [sandbox.bwrap_path() or "bwrap", *argv[1:]]
        command += [sys.executable, "-P", "-m", "graders.zygote", str(theirs.fileno())]
        self._proc = _start_kept(command, theirs)
        theirs.close()

    @property
    def alive(self) -> bool:
        with self._lock:
            self._pump()
            return not self._dead

    def fork(self, config: dict, fds: tuple[int, ...]) -> Forked:
        """Ask for a worker with `config` and the descriptors it talks through; at once (the
        zygote forks when it is ready, and the worker says `ready` through its own pipe)."""
        with self._lock:
            child = Forked(self, next(self._ids))
            message = json.dumps({"id": child.id, "config": config}).encode()
            try:
                socket.send_fds(self._sock, [message], list(fds))
                self._children[child.id] = child
            except OSError:
                child.returncode = -signal.SIGKILL
            return child

    def poll(self, child: Forked) -> int | None:
        with self._lock:
            self._pump()
        return child.returncode

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
        sandbox.kill_worker(self._proc, None, bwrapped=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def _pump(self) -> None:
        """Read every message waiting; at end of file every unfinished fork died with it."""
        while not self._dead:
            try:
                message = self._sock.recv(256, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            words = message.split()
            if not words:
                self._dead = True
                for child in self._children.values():
                    child.returncode = -signal.SIGKILL
                self._children.clear()
            elif words[0] == b"exit" and len(words) == 3:
                child = self._children.pop(int(words[1]), None)
                if child is not None:
                    child.returncode = int(words[2])


class Forked:
    """One forked worker, as `subprocess.Popen` shows a process: `poll()` and `returncode`."""

    def __init__(self, zygote: Zygote, id: int) -> None:
        self.zygote, self.id = zygote, id
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.zygote.poll(self)

    def kill(self, uid: int) -> None:
        """Kill every process of the worker's uid, and wait (briefly) for the zygote to reap it."""
        sandbox.sweep_uid(uid)
        deadline = time.monotonic() + 2
        while self.poll() is None and time.monotonic() < deadline:
            sandbox.sweep_uid(uid)  # a worker forked after the first sweep
            time.sleep(0.01)


def _sweep_abandoned_roots() -> None:
    """Remove the folders of zygotes whose grader is gone: a grader killed without running its
    exit hooks (SIGKILL, SIGTERM) leaves its folder and its workers' behind."""
    for folder in Path(tempfile.gettempdir()).glob(f"{ROOT_PREFIX}*-*"):
        pid = folder.name.removeprefix(ROOT_PREFIX).partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    return True


def _start_kept(command: list[str], theirs: socket.socket) -> subprocess.Popen:
    """Start bubblewrap from a thread that then waits for it: bubblewrap dies with the thread that
    started it, and this one lives as long as the grader."""
    started: list = []
    ready = threading.Event()

    def keep() -> None:
        try:
            proc = subprocess.Popen(
                command,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException as err:
            started.append(err)
            ready.set()
            return
        started.append(proc)
        ready.set()
        proc.wait()

    threading.Thread(target=keep, name="ladder-zygote", daemon=True).start()
    ready.wait()
    if isinstance(started[0], BaseException):
        raise started[0]
    return started[0]


# ------------------------------------------------------------------------------ zygote side


def main() -> int:
    """`python -m graders.zygote FD`, inside bubblewrap: preload, then fork on request."""
    sock = socket.socket(fileno=int(sys.argv[1]))
    import numpy  # noqa: F401  (what every worker imports, paid once here)
    import torch  # noqa: F401

    from graders import impl, plain, worker  # noqa: F401

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sock.send(b"ready")
    ids: dict[int, int] = {}  # pid -> the grader's id for it
    while True:
        readable, _, _ = select.select([sock, wake_r], [], [])
        if wake_r in readable:
            os.read(wake_r, 4096)
            _reap(ids, sock)
        if sock in readable:
            message, fds, _, _ = socket.recv_fds(sock, 65536, FDS)
            if not message:
                return 0  # the grader has gone
            request = json.loads(message)
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd in (sock.detach(), wake_r, wake_w):
                    os.close(fd)
                os._exit(_serve(request["config"], fds))
            ids[pid] = request["id"]
            for fd in fds:
                os.close(fd)


def _reap(ids: dict[int, int], sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in ids:
            sock.send(f"exit {ids.pop(pid)} {os.waitstatus_to_exitcode(status)}".encode())


def _serve(config: dict, fds: list[int]) -> int:
    """In the forked worker: its own session, pipes, folder and environment, then the protocol."""
    from graders import worker

    code = 1
    try:
        cmd_r, reply_w, out_w, err_w = fds
        os.setsid()
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.close(out_w)
        os.close(err_w)
        os.chdir(config["dir"])
        os.environ.update(HOME=config["dir"], TMPDIR=f"{config['dir']}/tmp")
        tempfile.tempdir = None
        code = worker.serve({**config, "cmd_fd": cmd_r, "reply_fd": reply_w})
    except BaseException as err:
        print(f"the forked worker failed: {type(err).__name__}: {err}", file=sys.stderr)
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
        sys.stderr.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
