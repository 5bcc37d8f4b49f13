"""The untrusted side of grading: plain data only, and every hostile submission contained.

Each module of `tests/hostile/` is an attack written as a learner's `attention.py`. Every attack
runs under bubblewrap and, where the fallback can contain it, under plain process isolation too;
after each one a fresh worker of a correct submission must still answer correctly.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from graders import plain, sandbox, zygote
from graders.curriculum import kit_root
from graders.plain import PlainDataError
from graders.sandbox import Limits, WeakIsolationWarning
from graders.worker import ALL, Reply, Request, Worker

HOSTILE = Path(__file__).parent / "hostile"
REFERENCE = kit_root() / "solutions" / "attention" / "attention.py"
LIMITS = Limits(
    wall_seconds=5,
    cpu_seconds=30,
    memory_bytes=2**30,
    processes=16,
    file_bytes=8 * 2**20,
    output_bytes=256 * 2**10,
    disk_bytes=48 * 2**20,
    start_seconds=30,
)
RNG = np.random.default_rng(7)
INPUTS = {name: RNG.standard_normal((2, 3, 5, 4)) for name in "qkv"}


def sdpa(m, q, k, v):
    return m.scaled_dot_product_attention(q, k, v)


def probe(m, q, k, v, target):
    m.TARGET = target
    return m.scaled_dot_product_attention(q, k, v)


def expected(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Attention computed here, on the trusted side."""
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return (weights / weights.sum(-1, keepdims=True)) @ v


def request(target: object = None) -> Request:
    if target is None:
        return Request.of("hostile", sdpa, INPUTS)
    return Request.of("hostile", probe, {**INPUTS, "target": target})


def bwrap_ok() -> bool:
    return sandbox._bwrap_works()


def marked_sleepers(marker: str) -> list[int]:
    """Pids of `sleep MARKER` processes anywhere on this machine."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:2] == [marker.encode()]:
                found.append(int(pid))
        except (OSError, IndexError):
            pass
    return found


def wait_until(check, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(params=["bwrap", "process"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test under bubblewrap, then under the fallback (plain process isolation).

    Attacks whose containment does not depend on the isolation layer (the worker's own checks,
    the trusted comparison) run under bubblewrap only: `@BWRAP`.
    """
    if request.param == "bwrap" and not bwrap_ok():
        if os.environ.get("LADDER_REQUIRE_BWRAP"):
            pytest.fail("bubblewrap is required (LADDER_REQUIRE_BWRAP) but fails its self-test")
        pytest.skip("bubblewrap is missing or fails its self-test here")
    if request.param == "process":
        monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
        monkeypatch.setattr(sandbox, "_warned", True)  # the warning has its own test
    return request.param


BWRAP = pytest.mark.parametrize("mode", ["bwrap"], indirect=True)


@pytest.fixture
def separated(mode: str) -> str:
    """Skip where the fallback runs as the grader's own user, which nothing then separates."""
    if mode == "process" and not (os.geteuid() == 0 and sandbox._fallback_uid_works()):
        pytest.skip("the fallback runs submissions as the grader's user: no separation to test")
    return mode


@pytest.fixture
def attack(mode: str) -> Iterator:
    """Start a hostile worker; afterwards a fresh worker of a correct submission must work."""
    control = Worker({"attention": HOSTILE / "correct_numpy.py"}, sandboxed=True, limits=LIMITS)
    workers: list[Worker] = []

    def start(name: str, limits: Limits = LIMITS, suffix: str = ".py") -> Worker:
        module = HOSTILE / f"{name}{suffix}"
        workers.append(Worker({"attention": module}, sandboxed=True, limits=limits))
        return workers[-1]

    yield start
    for w in workers:
        w.close()
    with control:
        reply = control.call(request())
    assert reply.ok, reply.error
    np.testing.assert_allclose(reply.output, expected(**INPUTS))


# ---------------------------------------------------------------------------------- attacks


def test_correct_submission_round_trip(mode: str) -> None:
    with Worker({"attention": HOSTILE / "correct_numpy.py"}, sandboxed=True, limits=LIMITS) as w:
        first, second = w.call(request()), w.call(request())
    assert first.ok and second.ok, first.error
    np.testing.assert_allclose(second.output, expected(**INPUTS))
    assert w.starts == 1 and 0 < second.seconds < 1


def listing(folder):
    from pathlib import Path

    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*.py"))


@BWRAP
def test_one_worker_serves_a_learner_and_a_broken_module_fails_only_its_own(mode) -> None:
    modules = {
        "attention": HOSTILE / "correct_numpy.py",
        "relu": HOSTILE / "raise_at_import.py",
        "backprop": HOSTILE / "exit_at_import.py",
    }
    with Worker(modules, sandboxed=True, limits=LIMITS) as w:
        broken = w.call(Request.of("broken", sdpa, INPUTS, "relu"))
        ok = w.call(Request.of("ok", sdpa, INPUTS, "attention"))
        exited = w.call(Request.of("exited", sdpa, INPUTS, "backprop"))
        folder = w.call(Request.of("folder", listing, {}, ALL))
        absent = w.call(Request.of("absent", sdpa, INPUTS, "gpt"))
    assert broken.error.startswith("importing relu.py, line 5 raised ValueError"), broken.error
    assert ok.ok, ok.error
    np.testing.assert_allclose(ok.output, expected(**INPUTS))
    assert "called sys.exit(3)" in exited.error, exited.error
    assert folder.output == ["attention/attention.py", "backprop/backprop.py", "relu/relu.py"]
    assert absent.error == "no gpt.py in the submission"
    assert w.starts == 1


@BWRAP
def test_exit_at_import_is_every_reply(attack) -> None:
    w = attack("exit_at_import")
    replies = [w.call(request()) for _ in range(3)]
    assert all(not r.ok and "called sys.exit(3)" in r.error for r in replies), replies[0]
    assert w.starts == 1  # remembered, not retried


@BWRAP
def test_syntax_error_names_file_and_line(attack) -> None:
    reply = attack("syntax_error", suffix=".txt").call(request())
    assert not reply.ok and reply.error.startswith("attention.py, line 5:"), reply.error


@BWRAP
def test_raise_at_import_names_the_line(attack) -> None:
    reply = attack("raise_at_import").call(request())
    assert reply.error.startswith("importing attention.py, line 5 raised ValueError: matmul")


@BWRAP
def test_exit_at_call_is_an_error_reply(attack) -> None:
    w = attack("exit_at_call")
    replies = [w.call(request()) for _ in range(2)]
    assert all(not r.ok and "SystemExit(4)" in r.error for r in replies), replies[0].error
    assert w.starts == 1  # the worker survived


def test_os_exit_restarts_the_worker(attack) -> None:
    w = attack("os_exit")
    replies = [w.call(request()) for _ in range(2)]
    assert all(r.error == "the process exited with status 3" for r in replies), replies[0]
    assert w.starts == 2


def test_infinite_loop_times_out(attack) -> None:
    reply = attack("infinite_loop").call(request(), timeout=1)
    assert reply.error == "timed out after 1 s" and 1 <= reply.seconds < 3, reply


def test_hang_at_import_times_out(attack) -> None:
    w = attack("hang_at_import", Limits(start_seconds=1))
    replies = [w.call(request()) for _ in range(2)]
    assert replies[0].error == "importing attention.py: timed out after 1 s", replies[0]
    assert replies[1].error == replies[0].error and w.starts == 1


def test_cpu_burn_hits_the_cpu_limit(attack) -> None:
    reply = attack("cpu_burn", Limits(cpu_seconds=1, memory_bytes=2**30)).call(request(), 10)
    assert reply.error == "killed: CPU time limit (1 s)", reply


def test_memory_bomb_hits_the_memory_limit(attack) -> None:
    w = attack("memory_bomb")
    reply = w.call(request())
    assert not reply.ok and "MemoryError" in reply.error, reply
    assert "the memory limit is 1 GiB" in reply.error
    w.call(request())
    assert w.starts == 2  # restarted after running out of memory


def test_fork_bomb_is_bounded_and_reaped(attack, separated: str) -> None:
    w = attack("fork_bomb")
    reply = w.call(request())
    assert reply.ok and reply.output < LIMITS.processes, reply
    w.close()
    assert wait_until(lambda: not marked_sleepers("86399.125"))


def test_daemon_dies_with_the_worker(attack, separated: str) -> None:
    w = attack("daemon")
    assert w.call(request()).ok
    assert wait_until(lambda: marked_sleepers("86399.375"))  # it did start
    w.close()
    assert wait_until(lambda: not marked_sleepers("86399.375"))


def test_output_flood_is_cut_off(attack) -> None:
    reply = attack("output_flood").call(request())
    assert reply.error == "wrote more than 256 KiB of output", reply.error
    assert "spam" in reply.log


def test_file_flood_hits_the_file_size_limit(attack) -> None:
    reply = attack("file_flood").call(request())
    assert not reply.ok and "File too large" in reply.error, reply.error


def test_disk_flood_is_cut_off(attack) -> None:
    reply = attack("disk_flood").call(request())
    assert reply.error == "wrote more than 48 MiB to its work folder", reply.error


@BWRAP
def test_recursion_bomb_names_the_line(attack) -> None:
    reply = attack("recursion_bomb").call(request())
    assert reply.error.startswith("RecursionError: maximum recursion depth"), reply.error
    assert "(at attention.py, line 8, in scaled_dot_product_attention)" in reply.error


def test_segfault_is_reported(attack) -> None:
    w = attack("segfault")
    reply = w.call(request())
    assert reply.error.startswith("crashed: segmentation fault (SIGSEGV)"), reply.error
    assert not w.call(request()).ok and w.starts == 2


@BWRAP
def test_patched_numpy_cannot_fool_the_trusted_side(attack) -> None:
    reply = attack("patch_numpy").call(request())
    assert reply.ok
    assert not np.allclose(reply.output, expected(**INPUTS))


@BWRAP
def test_patched_grader_cannot_smuggle_a_pickle(attack) -> None:
    reply = attack("patch_grader").call(request())
    assert not reply.ok and reply.error.startswith("the output is not plain data"), reply.error


def test_symlinked_output_is_refused(attack, tmp_path: Path) -> None:
    plain.dump({"grades": "everyone's"}, tmp_path, "secret")
    reply = attack("symlink_output").call(request(str(tmp_path / "secret")))
    assert not reply.ok and "cannot be opened safely" in reply.error, reply.error
    assert "everyone" not in reply.error


@BWRAP
def test_forged_replies_break_the_protocol(attack) -> None:
    reply = attack("forge_reply").call(request())
    assert not reply.ok and "broke its protocol" in reply.error, reply.error


@BWRAP
@pytest.mark.parametrize("name", ["always_equal", "float_subclass"])
def test_objects_that_equal_anything_are_refused(attack, name: str) -> None:
    reply = attack(name).call(request())
    assert not reply.ok and "is not plain data" in reply.error, reply.error


@BWRAP
def test_nan_and_wrong_shapes_are_just_data(attack) -> None:
    nan = attack("nan_output").call(request())
    assert nan.ok and np.isnan(nan.output).all()
    wrong = attack("wrong_shape").call(request())
    assert wrong.ok and wrong.output.dtype == np.float16 and wrong.output.shape == (2, 3, 4, 5)


@BWRAP
def test_faked_clocks_do_not_fool_the_timer(attack) -> None:
    reply = attack("fake_timer").call(request())
    assert reply.ok and reply.seconds >= 0.5, reply


@BWRAP
def test_stdin_is_empty(attack) -> None:
    reply = attack("read_stdin").call(request())
    assert reply.ok and reply.output == "", reply


def test_environment_is_scrubbed(attack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LADDER_SECRET_TOKEN", "hunter2")
    reply = attack("steal_environment").call(request())
    assert reply.ok, reply.error
    assert "LADDER_SECRET_TOKEN" not in reply.output and "hunter2" not in str(reply.output)
    assert reply.output["OMP_NUM_THREADS"] == "1"


def test_writes_outside_the_work_folder_fail(attack, separated: str, tmp_path: Path) -> None:
    grades = tmp_path / "grades.csv"
    grades.write_text("learner,0\n")
    package_file = kit_root() / "graders" / f".write-probe-{os.getpid()}"
    package_file.write_text("grader\n")
    try:
        reply = attack("write_outside").call(request([str(grades), str(package_file)]))
        assert reply.ok, reply.error
        assert all("done" not in outcomes for outcomes in reply.output.values()), reply.output
        assert grades.read_text() == "learner,0\n" and package_file.read_text() == "grader\n"
        assert not (tmp_path / "planted.txt").exists()
        assert not (package_file.parent / "planted.txt").exists()
    finally:
        package_file.unlink()


@BWRAP
def test_the_reference_is_invisible(attack, tmp_path: Path) -> None:
    other = tmp_path / "other_learner" / "attention.py"
    other.parent.mkdir()
    other.write_text("# someone else's work\n")
    paths = [str(REFERENCE), str(REFERENCE.parent), str(other), str(kit_root())]
    reply = attack("read_reference").call(request(paths))
    assert reply.ok, reply.error
    outcomes = reply.output
    assert all(outcomes[p].startswith("denied") for p in paths[:3]), outcomes
    assert "solutions" not in outcomes[str(kit_root())], outcomes


@BWRAP
def test_shell_commands_are_confined(attack, tmp_path: Path) -> None:
    grades = tmp_path / "grades.csv"
    grades.write_text("learner,0\n")
    reply = attack("shell").call(request([str(REFERENCE), str(grades), str(tmp_path)]))
    assert reply.ok, reply.error
    assert "Scaled dot-product" not in reply.output and "No such file" in reply.output
    assert grades.read_text() == "learner,0\n" and not (tmp_path / "pwned").exists()


@BWRAP
def test_network_is_unreachable(attack) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.2)
        reply = attack("network").call(request(server.getsockname()[1]))
        assert reply.ok, reply.error
        assert "connected" not in reply.output.values(), reply.output
        with pytest.raises(TimeoutError):
            server.accept()


def test_killing_the_grader_fails(attack, separated: str) -> None:
    with Worker({"attention": HOSTILE / "correct_numpy.py"}, sandboxed=False) as bystander:
        assert bystander.call(request()).ok
        reply = attack("kill_parent").call(request(os.getpid()))
        assert reply.ok, reply.error
        assert reply.output["grader"] != "sent" and reply.output["parent"] != "sent"
        assert bystander.call(request()).ok  # the trusted worker is untouched


@BWRAP
def test_as_root_workers_are_forked_from_one_zygote_each_as_its_own_uid(mode: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("without root there are no private uids: each worker has its own bubblewrap")

    def identity(m):
        import os

        return {"uid": os.getuid(), "home": os.environ["HOME"], "cwd": os.getcwd()}

    first = Worker({"attention": HOSTILE / "correct_numpy.py"}, sandboxed=True, limits=LIMITS)
    second = Worker({"attention": HOSTILE / "correct_numpy.py"}, sandboxed=True, limits=LIMITS)
    with first, second:
        a, b = (w.call(Request.of("who", identity, {})) for w in (first, second))
        plans = first._proc.plan, second._proc.plan
    assert a.ok and b.ok, (a.error, b.error)
    assert plans[0].zygote is not None and plans[0].zygote is plans[1].zygote
    assert a.output["uid"] != b.output["uid"] and 0 not in (a.output["uid"], b.output["uid"])
    assert a.output["home"] == a.output["cwd"] == plans[0].inner_dir != plans[1].inner_dir


def test_folders_of_a_killed_graders_zygote_are_swept() -> None:
    """A grader killed without its exit hooks leaves its zygote's folder; the next one sweeps it,
    and no folder of a grader still running."""
    gone = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # no process has this pid
    temp = Path(tempfile.gettempdir())
    stale = temp / f"{zygote.ROOT_PREFIX}{gone}-test"
    running = temp / f"{zygote.ROOT_PREFIX}{os.getpid()}-test"
    (stale / "ladder-worker-x").mkdir(parents=True)
    running.mkdir()
    try:
        zygote._sweep_abandoned_roots()
        assert not stale.exists() and running.is_dir()
    finally:
        shutil.rmtree(stale, ignore_errors=True)
        running.rmdir()


@BWRAP
def test_a_neighbour_graded_at_the_same_time_is_out_of_reach(attack) -> None:
    victim = Worker({"attention": HOSTILE / "correct_numpy.py"}, sandboxed=True, limits=LIMITS)
    with victim:
        assert victim.call(request()).ok
        folder = victim._proc.plan.inner_dir  # the neighbour's work folder, as workers see it
        reply = attack("neighbour").call(request(folder))
        assert reply.ok, reply.error
        assert all(reply.output[k].startswith("denied") for k in ("list", "read", "plant"))
        after = victim.call(request())
    assert after.ok, after.error  # the neighbour's worker survived, its submission unchanged
    np.testing.assert_allclose(after.output, expected(**INPUTS))


# ------------------------------------------------------------------- torch and the reference


@pytest.fixture(scope="module")
def torch_inputs() -> dict:
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(3)
    return {name: torch.randn(2, 4, 6, 8, generator=g) for name in "qkv"}


@pytest.fixture(scope="module")
def reference() -> Iterator[Worker]:
    """The reference in a trusted worker, shared by the torch tests (torch takes seconds)."""
    with Worker({"attention": REFERENCE}, sandboxed=False) as worker:
        yield worker


@BWRAP
def test_torch_attacks_against_the_reference(
    mode: str, torch_inputs: dict, reference: Worker
) -> None:
    """Two torch attacks start together, then are compared here with the reference's output."""
    import torch

    patched = Worker({"attention": HOSTILE / "patch_torch.py"}, sandboxed=True, limits=LIMITS)
    subclass = Worker({"attention": HOSTILE / "tensor_subclass.py"}, sandboxed=True, limits=LIMITS)
    with patched, subclass:
        ref = reference.call(Request.of("torch", sdpa, torch_inputs), timeout=60)
        fooled = patched.call(Request.of("torch", sdpa, torch_inputs), timeout=60)
        refused = subclass.call(Request.of("torch", sdpa, torch_inputs), timeout=60)
    assert ref.ok and type(ref.output) is torch.Tensor, ref.error
    want = torch.nn.functional.scaled_dot_product_attention(*torch_inputs.values())
    torch.testing.assert_close(ref.output, want)
    assert fooled.ok and not torch.allclose(fooled.output, ref.output)
    assert not refused.ok and "subclass" in refused.error, refused.error


def test_trusted_worker_is_single_threaded_and_moves_dtypes(
    torch_inputs: dict, reference: Worker
) -> None:
    import torch

    def threads(m, x):
        import torch

        return {"threads": torch.get_num_threads(), "x": x * 2, "dtype": str(x.dtype)}

    x = torch_inputs["q"].to(torch.bfloat16)
    reply = reference.call(Request.of("threads", threads, {"x": x}), timeout=60)
    assert reply.ok, reply.error
    assert reply.output["threads"] == 1 and reply.output["dtype"] == "torch.bfloat16"
    assert torch.equal(reply.output["x"], x * 2)


def test_trusted_worker_runs_a_mutant(torch_inputs: dict, reference: Worker) -> None:
    import torch

    with Worker({"attention": REFERENCE}, sandboxed=False, mutant="no_scale") as mutant:
        wrong = mutant.call(Request.of("mutant", sdpa, torch_inputs), timeout=60)
    right = reference.call(Request.of("mutant", sdpa, torch_inputs), timeout=60)
    assert wrong.ok and right.ok, wrong.error
    assert not torch.allclose(wrong.output, right.output)


@pytest.mark.skipif(not os.path.exists("/dev/nvidiactl"), reason="no NVIDIA GPU on this machine")
@BWRAP
def test_cuda_in_the_sandbox(mode: str, torch_inputs: dict) -> None:
    """On a GPU machine: the sandbox binds the devices and the output comes back to the CPU."""
    import torch

    def on_device(m, q, k, v):
        out = m.scaled_dot_product_attention(q, k, v)
        return {"device": str(q.device), "out": out}

    with Worker({"attention": REFERENCE}, sandboxed=True, device="cuda") as w:
        reply = w.call(Request.of("cuda", on_device, torch_inputs), timeout=120)
    assert reply.ok, reply.error + reply.log
    assert reply.output["device"].startswith("cuda") and reply.output["out"].device.type == "cpu"
    want = torch.nn.functional.scaled_dot_product_attention(*torch_inputs.values())
    torch.testing.assert_close(reply.output["out"], want, rtol=1e-3, atol=1e-3)


def test_fallback_warns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    monkeypatch.setattr(sandbox, "_warned", False)
    with pytest.warns(WeakIsolationWarning, match="bubblewrap"):
        assert sandbox.isolation() == "process"
    assert sandbox.isolation() == "process"  # a second call does not warn (pytest -W error)


@BWRAP
def test_bwrap_sees_only_what_python_needs(mode: str) -> None:
    argv = sandbox.bwrap_argv(Path("/tmp/x"), "cpu", (), os.geteuid() == 0, {"HOME": "/sandbox"})
    binds = [argv[i + 1] for i, a in enumerate(argv) if a == "--ro-bind"]
    assert str(kit_root()) not in binds and str(kit_root() / "graders") in binds
    assert "--unshare-net" in argv or "--unshare-all" in argv
    assert "--die-with-parent" in argv and "--clearenv" in argv


# ---------------------------------------------------------------------------------- plain data


def round_trip(obj: object, tmp_path: Path) -> object:
    plain.dump(obj, tmp_path, "x")
    return plain.load(tmp_path, "x")


def test_plain_round_trip_of_every_kind(tmp_path: Path) -> None:
    import torch

    tensors = [
        torch.randn(2, 3, dtype=dtype) for dtype in (torch.bfloat16, torch.float16, torch.float64)
    ]
    tensors += [torch.arange(5), torch.tensor([True, False]), torch.randn(3, 2).t()]
    tensors += [torch.randn(2, requires_grad=True), torch.zeros(2, dtype=torch.float8_e4m3fn)]
    obj = {
        "floats": [math.nan, math.inf, -math.inf, -0.0, 1e-300, 2.5],
        "ints": [0, -1, 10**40, True, None],
        "nest": ("a", ["b", ("c",)], {"d": "é\ud800"}),
        "np": [np.arange(6).reshape(2, 3), np.float32(1.5), np.ones((2, 2), order="F")],
        "torch": tensors,
    }
    back = round_trip(obj, tmp_path)
    assert math.isnan(back["floats"][0]) and back["floats"][1:] == obj["floats"][1:]
    assert math.copysign(1, back["floats"][3]) == -1
    assert back["ints"] == obj["ints"] and back["nest"] == obj["nest"]
    assert type(back["np"][1]) is np.float32 and back["np"][1] == 1.5
    for got, want in zip(back["torch"], tensors, strict=True):
        assert type(got) is torch.Tensor and got.dtype == want.dtype
        assert torch.equal(got.view(torch.uint8), want.detach().contiguous().view(torch.uint8))


plain_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5), children, max_size=4)
        | st.tuples(children, children)
    ),
    max_leaves=20,
)


@given(plain_values)
def test_plain_round_trip_property(tmp_path: Path, value) -> None:
    assert round_trip(value, tmp_path) == value


class Sneaky(list):
    pass


@pytest.mark.parametrize(
    "obj, words",
    [
        (Sneaky([1]), "Sneaky is not plain data"),
        ({1: "a"}, "dict keys must be str"),
        (object(), "object is not plain data"),
        (np.array([object()]), "dtype object"),
        (np.ma.masked_array([1, 2]), "MaskedArray is not plain data"),
        ({1.5, 2.5}, "set is not plain data"),
    ],
)
def test_dump_refuses_what_is_not_plain(obj: object, words: str, tmp_path: Path) -> None:
    with pytest.raises(PlainDataError, match=words):
        plain.dump(obj, tmp_path, "x")


def test_dump_refuses_cycles(tmp_path: Path) -> None:
    loop: list = []
    loop.append(loop)
    with pytest.raises(PlainDataError, match="nested more than"):
        plain.dump(loop, tmp_path, "x")


def write_pair(folder: Path, tree: object, arrays: dict | None = None) -> None:
    import json

    text = tree if isinstance(tree, str | bytes) else json.dumps(tree)
    (folder / "x.json").write_bytes(text.encode() if isinstance(text, str) else text)
    np.savez(folder / "x.npz", **(arrays or {}))


def node(root: object) -> dict:
    return {"format": plain.FORMAT, "root": root}


@pytest.mark.parametrize(
    "tree, arrays, words",
    [
        ('{"format": "ladder-plain/1", "root": NaN}', None, "bare NaN"),
        ('{"format": "ladder-plain/1", "root": 1, "root": 2}', None, "repeats a key"),
        ("[" * 100_000 + "]" * 100_000, None, "nested too deeply"),
        (node(eval("[" * 80 + "]" * 80)), None, "nested more than"),
        (node({"pickle": "a0"}), None, "unexpected JSON object"),
        (node({"ndarray": "a0", "dtype": "<f8", "shape": [3]}), None, "missing"),
        (node({"ndarray": "a0", "dtype": "<f8", "shape": [4]}), {"a0": np.ones(3)}, "match"),
        (node({"tensor": "a0", "dtype": "Tensor", "shape": [3]}), {"a0": np.ones(3)}, "dtype"),
        (node({"float": "1e999"}), None, "unknown float"),
        (node([{"ndarray": "a0", "dtype": "<f8", "shape": [3]}] * 2), {"a0": np.ones(3)}, "twice"),
        ({"format": "pickle", "root": 1}, None, "format"),
        ('{"format": "ladder-plain/1", "root": "\xff"}'.encode("latin-1"), None, "not UTF-8"),
        ('{"format": "ladder-plain/1", "root": ' + "9" * 5000 + "}", None, "malformed"),
    ],
)
def test_load_refuses_malformed_files(tree, arrays, words: str, tmp_path: Path) -> None:
    write_pair(tmp_path, tree, arrays)
    with pytest.raises(PlainDataError, match=words):
        plain.load(tmp_path, "x")


def test_load_refuses_pickles_links_fifos_and_big_files(tmp_path: Path) -> None:
    import io
    import zipfile

    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(tmp_path / "x.npz", "w") as zf:
        zf.writestr("a0.npy", buffer.getvalue())
    (tmp_path / "x.json").write_text('{"format": "ladder-plain/1", "root": null}')
    with pytest.raises(PlainDataError, match="not plain"):
        plain.load(tmp_path, "x")
    # a header that promises a terabyte
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (2**37,)}
    )
    with zipfile.ZipFile(tmp_path / "x.npz", "w") as zf:
        zf.writestr("a0.npy", header.getvalue() + b"\0" * 64)
    with pytest.raises(PlainDataError, match="declares more data"):
        plain.load(tmp_path, "x")
    np.savez(tmp_path / "x.npz")
    (tmp_path / "x.json").unlink()
    os.mkfifo(tmp_path / "x.json")
    with pytest.raises(PlainDataError, match="not a regular file"):
        plain.load(tmp_path, "x")
    (tmp_path / "x.json").unlink()
    (tmp_path / "x.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(PlainDataError, match="cannot be opened safely"):
        plain.load(tmp_path, "x")
    (tmp_path / "x.json").unlink()
    plain.dump(list(range(1000)), tmp_path, "x")
    with pytest.raises(PlainDataError, match="larger than"):
        plain.load(tmp_path, "x", max_bytes=100)


def test_load_caps_the_structure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Millions of small objects would cost the trusted side far more than their bytes."""
    monkeypatch.setattr(plain, "MAX_JSON_BYTES", 1000)
    plain.dump([0] * 1000, tmp_path, "x")
    with pytest.raises(PlainDataError, match="larger than 1000 bytes"):
        plain.load(tmp_path, "x")
    plain.dump(np.zeros(1000), tmp_path, "y")  # arrays do not count
    assert plain.load(tmp_path, "y").shape == (1000,)


def test_reply_is_plain() -> None:
    reply = Reply(True, 1, None, 0.1)
    assert reply.log == "" and reply.ok
