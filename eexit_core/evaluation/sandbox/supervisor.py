"""Run untrusted, model-written Python (HumanEval completions) and say whether it passed.

A sample *passes* when its process exits with status 0 within the wall-clock limit.

The code is hostile until proven otherwise, so it runs in a separate process behind
several independent layers. Each layer is used only where this machine supports it
(probed once, see `sandbox_report`), and every result records in `isolation` which
layers were active for that run:

``rlimits``          address space, CPU seconds, file size, open files, no core dumps,
                     process count (the last is not enforced for root: see uid_nobody).
``process_group``    the child leads a new session; a supervisor inside it (a child
                     subreaper) SIGKILLs the sample's process group on timeout and reaps
                     every descendant, and the parent SIGKILLs whatever is left.
``user_namespace``   (non-root only) the namespaces below without privileges.
``net_namespace``    a fresh network namespace: a loopback that is down, nothing else.
``mount_namespace``  private mounts; the project root and every ``hidden_paths`` entry
                     are covered by an empty read-only tmpfs (files by /dev/null).
``readonly_root``    the whole file system is read-only except the throwaway work dir.
``pid_namespace``    the sample runs as init of a new PID namespace: when it exits or is
                     killed, the kernel kills every process it left behind.
``uid_nobody``       (root only) the child drops to user ``nobody`` after the setup.
``audit_hook``       a `sys.addaudithook` hook, installed by a small bootstrap before the
                     sample runs, denies sockets, process creation and signals, writes or
                     deletions outside the work dir and any access to hidden paths.

The audit hook is defence in depth, not a boundary. Audit hooks are advisory and Python
code inside the interpreter can get around them: ctypes is the best-known route (the hook
denies importing it and every ctypes.* event, but that is not the only one); a path object
whose ``__fspath__`` answers differently to the hook and to the call, a second thread that
swaps a symlink between check and use, or ``dir_fd=`` calls (which the "open" event does not
report) relative to a directory inside the work dir defeat the path checks. The OS layers
(namespaces, uid, rlimits) are the real boundary; on a machine that offers none of them,
treat the sandbox as a guard against accidents, not against an adversary.

A run passes by exit status only: a sample that calls ``sys.exit(0)`` before its tests
run "passes" here. `grading.grade_humaneval` closes that gap by also requiring a random
token printed after the tests.

Set ``EEXIT_SANDBOX_OS_LAYERS=0`` (read by `eexit_core.settings`) to switch the namespace and uid layers off (rlimits,
process group and the audit hook stay on), e.g. to test the hook on its own.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import pwd
import resource
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from eexit_core import settings
from eexit_core.storage.workspace import REPOSITORY_ROOT

log = logging.getLogger(__name__)


def _program(name: str) -> str:
    """The source of a program the child interpreter runs (``python -I -c SOURCE``): a real
    file beside this one, so linters and type checkers see it, passed as text so the child
    never needs to read the project tree."""
    return Path(__file__).with_name(name).read_text(encoding="utf-8")

PROJECT_ROOT = REPOSITORY_ROOT
PROGRAM_NAME = "main.py"
OS_LAYERS_ENV = settings.SANDBOX_OS_LAYERS

# Namespace and uid layers in the order they are probed (a later one may rely on an earlier one).
_OS_LAYERS = (
    "user_namespace",
    "net_namespace",
    "mount_namespace",
    "readonly_root",
    "pid_namespace",
    "uid_nobody",
)
_MAX_OPEN_FILES = 256
_STOP_GRACE_S = 1.0  # time the supervisor gets to kill and reap its tree after SIGTERM
_SWEEP_S = 1.0  # time leftover processes get to die after SIGKILL

# <linux/sched.h>, <linux/mount.h>, <fcntl.h>
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_MOUNT_ATTR_RDONLY = 0x1
_AT_FDCWD, _AT_RECURSIVE = -100, 0x8000
_SYS_MOUNT_SETATTR = 442  # same number on x86_64 and the generic table (arm64)


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0  # wall clock
    cpu_s: int = 10  # RLIMIT_CPU
    memory_bytes: int = 1 << 30  # RLIMIT_AS (address space)
    max_processes: int = 64  # RLIMIT_NPROC where it is enforced
    max_file_bytes: int = 16 << 20  # RLIMIT_FSIZE
    max_output_bytes: int = 64 << 10  # stdout/stderr kept (tail)


@dataclass(frozen=True)
class SandboxResult:
    status: str  # "passed" | "failed" | "timeout" | "killed" (by a signal, e.g. a limit)
    returncode: int | None
    duration_s: float
    stdout: str  # tails, truncated to max_output_bytes
    stderr: str
    isolation: tuple[str, ...]  # layers that were active for this run

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def humaneval_program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """The HumanEval harness as one program: the function, its tests, then the call that runs them."""
    return f"{prompt}{completion}\n\n{test}\n\ncheck({entry_point})\n"


def run_python(
    source: str,
    limits: SandboxLimits = SandboxLimits(),
    *,
    hidden_paths: Sequence[Path] = (),
    _os_layers: bool | None = None,
    _audit_hook: bool = True,
) -> SandboxResult:
    """Run `source` as a Python program in the sandbox and grade it by its exit status.

    `hidden_paths` (besides the project root, always hidden) are made unreadable to the
    program. `_os_layers` / `_audit_hook` switch layers off, for tests only.
    """
    hidden = _hidden(hidden_paths)
    plan = _requested_plan(_os_layers)
    workdir = _make_workdir(hidden)
    try:
        return _run_in(workdir, source, limits, hidden, plan, _audit_hook)
    finally:
        _remove_tree(workdir)


def sandbox_report() -> dict[str, bool]:
    """Which isolation layers this machine supports (probed once per process)."""
    plan = _machine_plan()
    report = {"rlimits": True, "process_group": True}
    report.update({layer: getattr(plan, layer) for layer in _OS_LAYERS})
    report["audit_hook"] = hasattr(sys, "addaudithook")
    return report


# --- one run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """The OS layers to set up in the child."""

    user_namespace: bool = False
    net_namespace: bool = False
    mount_namespace: bool = False
    readonly_root: bool = False
    pid_namespace: bool = False
    uid_nobody: bool = False

    def layers(self) -> tuple[str, ...]:
        return tuple(layer for layer in _OS_LAYERS if getattr(self, layer))


def _run_in(
    workdir: Path, source: str, limits: SandboxLimits, hidden: tuple[Path, ...], plan: _Plan, audit: bool
) -> SandboxResult:
    program = workdir / PROGRAM_NAME
    program.write_text(source, encoding="utf-8")
    program.chmod(0o644)
    config = {
        "workdir": str(workdir),
        "program": PROGRAM_NAME,
        "hidden": [str(p) for p in hidden],
        "keep": sorted({_prefix(), os.path.dirname(_interpreter())}),  # the stdlib stays importable
        "audit": audit,
    }
    argv = [_interpreter(), "-I", "-B", "-c", _BOOTSTRAP, json.dumps(config)]
    mountable = _mountable(hidden)
    isolation = ["rlimits", "process_group", *plan.layers()]
    if plan.mount_namespace and len(mountable) < len(hidden):
        isolation.remove("mount_namespace")  # a hidden path holds the interpreter: only the hook hides it
    if audit:
        isolation.append("audit_hook")

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        try:
            proc = _spawn(argv, plan, workdir, limits, mountable, out, err)
        except subprocess.SubprocessError as exc:
            # the probe said these layers work; failing closed beats silently running with fewer
            raise RuntimeError(f"sandbox setup failed for layers {plan.layers()}") from exc
        timed_out = _wait(proc, limits.timeout_s)
        duration = time.monotonic() - start
        stdout = _tail(out, limits.max_output_bytes)
        stderr = _tail(err, limits.max_output_bytes)

    return SandboxResult(
        status=_status(proc.returncode, timed_out),
        returncode=proc.returncode,
        duration_s=duration,
        stdout=stdout,
        stderr=stderr,
        isolation=tuple(isolation),
    )


def _status(returncode: int | None, timed_out: bool) -> str:
    if timed_out:
        return "timeout"
    if returncode is None or returncode < 0:
        return "killed"
    return "passed" if returncode == 0 else "failed"


def _spawn(
    argv: list[str],
    plan: _Plan,
    workdir: Path,
    limits: SandboxLimits,
    hide: tuple[Path, ...],
    out: IO[bytes],
    err: IO[bytes],
) -> subprocess.Popen[bytes]:
    if plan.uid_nobody:
        uid, gid = _nobody()
        os.chown(workdir, uid, gid)
    setup = _ChildSetup(
        plan=plan,
        limits=limits,
        nproc=_nproc_limit(plan, limits),
        workdir=str(workdir),
        hide=tuple(str(p) for p in hide),
        prefix=_prefix(),
        cover=_cover_for_interpreter() if plan.uid_nobody and plan.mount_namespace else None,
        ids=_nobody() if plan.uid_nobody else (os.getuid(), os.getgid()),
        libc=_libc() if plan.layers() else None,
    )
    return subprocess.Popen(
        argv,
        cwd=workdir,
        env=_scrubbed_env(workdir),
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
        close_fds=True,
        start_new_session=True,
        umask=0o022,
        preexec_fn=setup,
    )


def _wait(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait for the child, stop it on timeout, kill its leftovers, reap it. True if it timed out.

    The child is reaped last: until then it is a zombie that holds its pid, so the session
    id the sweep looks for cannot have been reused by an unrelated process.
    """
    timed_out = not _exits_within(proc.pid, timeout_s)
    if timed_out:
        # SIGTERM goes to the supervisor (the bootstrap), which SIGKILLs the sample's process
        # group and reaps everything. Processes we killed ourselves would be reparented to
        # init, and an init that reaps late (this container's) leaves them as zombies that
        # count against RLIMIT_NPROC meanwhile.
        _signal_quietly(lambda: os.kill(proc.pid, signal.SIGTERM))
        if not _exits_within(proc.pid, _STOP_GRACE_S):
            _signal_quietly(lambda: os.killpg(proc.pid, signal.SIGKILL))
    _kill_leftovers(proc.pid)
    proc.wait()
    return timed_out


def _exits_within(pid: int, timeout_s: float) -> bool:
    """Whether child `pid` has exited within `timeout_s`, without reaping it. A pidfd
    (Linux >= 5.3) wakes us the moment it exits; Popen.wait(timeout) would poll with
    sleeps of up to 50 ms, doubling the cost of a short sample."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    deadline = time.monotonic() + timeout_s
    if pidfd is not None:
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            poller.poll(max(0, int(timeout_s * 1000)))
        finally:
            os.close(pidfd)
    while not _has_exited(pid) and time.monotonic() < deadline:
        time.sleep(0.005)  # only without pidfd
    return _has_exited(pid)


def _has_exited(pid: int) -> bool:
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_leftovers(session: int) -> None:
    """SIGKILL anything still in the child's session (only possible if the supervisor was
    killed or bypassed), and give it a moment to die."""
    deadline = time.monotonic() + _SWEEP_S
    while True:
        members = _session_members(session)
        if not members:
            return
        for pgrp in {pgrp for _, pgrp in members}:
            # whole groups: a fork bomb can outrun one kill(2) per process, not a group kill
            _signal_quietly(lambda pgrp=pgrp: os.killpg(pgrp, signal.SIGKILL))
        for pid, _ in members:
            _signal_quietly(lambda pid=pid: os.kill(pid, signal.SIGKILL))
        if time.monotonic() > deadline:
            log.warning("sandbox: processes %s of session %d survived SIGKILL", members, session)
            return
        time.sleep(0.01)


def _session_members(session: int) -> list[tuple[int, int]]:
    """(pid, process group) of the live processes in `session` (zombies are dead already)."""
    members = []
    for pid, fields in _proc_stats():
        state, pgrp, sid = fields[0], int(fields[2]), int(fields[3])
        if state != b"Z" and session in (pgrp, sid):
            members.append((pid, pgrp))
    return members


def _proc_stats() -> list[tuple[int, list[bytes]]]:
    """(pid, fields after the command name) of /proc/<pid>/stat for every process."""
    stats = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return stats
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                # the command name may contain spaces and parentheses: split after the last ')'
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            continue
        stats.append((int(name), fields))
    return stats


def _signal_quietly(send: Callable[[], None]) -> None:
    try:
        send()
    except (ProcessLookupError, PermissionError):
        pass


def _tail(f: IO[bytes], limit: int) -> str:
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - limit))
    return f.read(limit).decode("utf-8", errors="replace")


def _scrubbed_env(workdir: Path) -> dict[str, str]:
    """A minimal environment: no PYTHONPATH, proxies, tokens or anything else of the parent's.
    `SANDBOX_OWNER` marks every process of the sandbox with the process that started it, so
    leftovers can be told apart when several processes run sandboxes at once (the tests'
    workers do)."""
    home = str(workdir)
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "SANDBOX_OWNER": str(os.getpid()),
    }


# --- paths --------------------------------------------------------------------------------


def _hidden(extra: Sequence[Path]) -> tuple[Path, ...]:
    """The project root plus `extra`, resolved, without duplicates, parents first."""
    paths = {Path(os.path.realpath(p)) for p in (PROJECT_ROOT, *extra)}
    return tuple(sorted(paths, key=lambda p: (len(p.parts), str(p))))


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _make_workdir(hidden: tuple[Path, ...]) -> Path:
    """A fresh directory outside every hidden path (TMPDIR might point into the project)."""
    for base in (tempfile.gettempdir(), "/tmp", "/var/tmp"):
        real = Path(os.path.realpath(base))
        if real.is_dir() and not any(_inside(real, h) for h in hidden):
            return Path(os.path.realpath(tempfile.mkdtemp(prefix="eexit-sandbox-", dir=real)))
    raise RuntimeError(f"no temporary directory outside the hidden paths {hidden}")


def _remove_tree(path: Path) -> None:
    """Delete the work dir whatever the sample did to it (files owned by nobody, directories
    without permissions). Runs after every sandboxed process is gone; never raises."""
    shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path):
        return
    _unlock_dirs(path)  # only a non-root parent gets here: chmod 000 stops it, root ignores modes
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        log.warning("sandbox: could not remove %s", path)


def _unlock_dirs(top: Path) -> None:
    stack = [str(top)]
    while stack:
        directory = stack.pop()
        try:
            # lstat, never follow: the sample may have planted symlinks to the parent's files
            if not stat.S_ISDIR(os.lstat(directory).st_mode):
                continue
            os.chmod(directory, 0o700)
            stack.extend(e.path for e in os.scandir(directory) if e.is_dir(follow_symlinks=False))
        except OSError:
            continue


def _interpreter() -> str:
    """The base interpreter, not the venv's: the venv lives in the (hidden) project root,
    and ``-I`` ignores its site-packages anyway."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _prefix() -> str:
    return os.path.realpath(sys.base_prefix)


def _mountable(hidden: tuple[Path, ...]) -> tuple[Path, ...]:
    """Hidden paths a mount may cover: not those holding the interpreter, which must stay reachable."""
    needed = (Path(_interpreter()), Path(_prefix()))
    return tuple(h for h in hidden if not any(_inside(n, h) for n in needed))


def _cover_for_interpreter() -> str | None:
    """The topmost ancestor of the interpreter's prefix that `nobody` cannot traverse (here
    /root, mode 0700), or None. The child covers it with a tmpfs and binds the prefix back."""
    prefix = Path(_prefix())
    for ancestor in reversed(prefix.parents):
        try:
            if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                return str(ancestor)
        except OSError:
            return None
    return None


def _nobody() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


def _nproc_limit(plan: _Plan, limits: SandboxLimits) -> int:
    """RLIMIT_NPROC counts all processes of the real uid: as `nobody` that is just the
    sandbox; as an ordinary user it must leave room for the user's own processes."""
    if plan.uid_nobody or os.geteuid() == 0:
        return limits.max_processes
    uid = str(os.getuid()).encode()
    own = 0
    for pid, _ in _proc_stats():
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                own += any(line.split()[1:2] == [uid] for line in f if line.startswith(b"Uid:"))
        except OSError:
            continue
    return own + limits.max_processes


# --- the child's setup, between fork and exec -------------------------------------------------


class _Libc:
    """The libc calls the setup needs. Resolved in the parent: loading a library in the
    forked child of a threaded process could deadlock on the loader's lock."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._unshare = libc.unshare
        self._unshare.argtypes = [ctypes.c_int]
        self._mount = libc.mount
        self._mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long

    @staticmethod
    def _check(result: int, what: str) -> None:
        if result != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"{what}: {os.strerror(code)}")

    def unshare(self, flags: int) -> None:
        self._check(self._unshare(flags), "unshare")

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
        def b(s: str | None) -> bytes | None:
            return None if s is None else os.fsencode(s)

        self._check(self._mount(b(source), b(target), b(fstype), flags, b(data)), f"mount {target}")

    def mount_setattr(self, path: str, *, set_: int = 0, clear: int = 0, recursive: bool = False) -> None:
        """Change mount attributes; unlike mount(2), recursively (Linux >= 5.12)."""
        attr = (ctypes.c_uint64 * 4)(set_, clear, 0, 0)  # struct mount_attr
        flags = _AT_RECURSIVE if recursive else 0
        result = self._syscall(
            ctypes.c_long(_SYS_MOUNT_SETATTR),
            ctypes.c_int(_AT_FDCWD),
            ctypes.c_char_p(os.fsencode(path)),
            ctypes.c_uint(flags),
            ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
        )
        self._check(0 if result == 0 else -1, f"mount_setattr {path}")


_LIBC: _Libc | None = None


def _libc() -> _Libc | None:
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = _Libc()
        except (OSError, AttributeError):  # no libc.unshare: not Linux
            return None
    return _LIBC


@dataclass(frozen=True)
class _ChildSetup:
    """`preexec_fn`: runs in the forked child, as root or the invoking user, before exec.
    Any exception aborts the spawn (fail closed). Keep it to system calls."""

    plan: _Plan
    limits: SandboxLimits
    nproc: int
    workdir: str
    hide: tuple[str, ...]
    prefix: str
    cover: str | None
    ids: tuple[int, int]  # uid, gid to run as
    libc: _Libc | None

    def __call__(self) -> None:
        self._limit_resources()
        plan, libc = self.plan, self.libc
        if plan.user_namespace:
            self._enter_user_namespace()
        flags = (
            (_CLONE_NEWNET if plan.net_namespace else 0)
            | (_CLONE_NEWNS if plan.mount_namespace else 0)
            | (_CLONE_NEWPID if plan.pid_namespace else 0)  # takes effect for the bootstrap's fork
        )
        if flags:
            assert libc is not None
            libc.unshare(flags)
        if plan.mount_namespace:
            self._mounts()
        if plan.uid_nobody:
            # after the mounts (they need root), before exec (so exec drops every capability)
            uid, gid = self.ids
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        # last: the forked child still has the parent's address space, which may be far larger,
        # and must not fail an allocation before exec replaces it
        memory = self.limits.memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    def _limit_resources(self) -> None:
        limits = self.limits
        for which, value in (
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_CPU, max(1, int(limits.cpu_s))),
            (resource.RLIMIT_FSIZE, limits.max_file_bytes),
            (resource.RLIMIT_NOFILE, _MAX_OPEN_FILES),
            (resource.RLIMIT_NPROC, self.nproc),
        ):
            _, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)  # only root may raise a hard limit
            resource.setrlimit(which, (value, value))

    def _enter_user_namespace(self) -> None:
        """Unprivileged: become "root" of a new user namespace mapped onto ourselves only,
        which allows the other namespaces; exec then drops the capabilities again."""
        assert self.libc is not None
        uid, gid = self.ids
        self.libc.unshare(_CLONE_NEWUSER)
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)

    def _mounts(self) -> None:
        libc = self.libc
        assert libc is not None
        libc.mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing we mount leaks back to the host
        if self.cover is not None:
            self._keep_interpreter_reachable(self.cover)
        for path in self.hide:
            if os.path.isdir(path):
                libc.mount("tmpfs", path, "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "size=4k,mode=0555")
            elif os.path.lexists(path):  # gone if a parent is hidden already
                libc.mount("/dev/null", path, None, _MS_BIND)
        if self.plan.readonly_root:
            libc.mount_setattr("/", set_=_MOUNT_ATTR_RDONLY, recursive=True)
            libc.mount(self.workdir, self.workdir, None, _MS_BIND)
            libc.mount_setattr(self.workdir, clear=_MOUNT_ATTR_RDONLY)
            os.chdir(self.workdir)  # the old cwd is the read-only mount underneath

    def _keep_interpreter_reachable(self, cover: str) -> None:
        """The base interpreter may live where `nobody` cannot go (pyenv under /root, 0700):
        cover that directory with a tmpfs holding only the interpreter's prefix, bound back at
        the same path (libpython is found through an absolute RUNPATH). Hides the rest of
        /root as a bonus. The prefix stays root-owned, so read-only to nobody."""
        libc = self.libc
        assert libc is not None
        fd = os.open(self.prefix, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            libc.mount("tmpfs", cover, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=64k,mode=0755")
            os.makedirs(self.prefix, mode=0o755, exist_ok=True)
            libc.mount(f"/proc/self/fd/{fd}", self.prefix, None, _MS_BIND | _MS_REC)
        finally:
            os.close(fd)


# --- probing ------------------------------------------------------------------------------

_PLAN_LOCK = threading.Lock()
_MACHINE_PLAN: _Plan | None = None


def _requested_plan(os_layers: bool | None) -> _Plan:
    if os_layers is None:
        os_layers = settings.sandbox_os_layers()
    return _machine_plan() if os_layers else _Plan()


def _machine_plan() -> _Plan:
    global _MACHINE_PLAN
    with _PLAN_LOCK:
        if _MACHINE_PLAN is None:
            _MACHINE_PLAN = _probe_machine()
        return _MACHINE_PLAN


def _probe_machine() -> _Plan:
    """Add the layers one at a time, keeping each that a real child can set up and that
    demonstrably took effect (e.g. the project root really looks empty)."""
    plan = _Plan()
    if _libc() is None:
        return plan
    root = os.geteuid() == 0
    for layer in _OS_LAYERS:
        if (layer == "user_namespace" and root) or (layer == "uid_nobody" and not root):
            continue  # root needs no user namespace; only root can become nobody
        if layer == "readonly_root" and not plan.mount_namespace:
            continue
        trial = replace(plan, **{layer: True})
        if _probe(trial):
            plan = trial
    log.info("sandbox layers on this machine: %s", plan.layers() or "none beyond rlimits")
    return plan


def _probe(plan: _Plan) -> bool:
    hidden = _hidden(())
    workdir = _make_workdir(hidden)
    outside = workdir.parent / f"{workdir.name}.outside"
    expect: dict[str, object] = {
        "net": plan.net_namespace,
        "empty_dirs": [str(p) for p in _mountable(hidden) if p.is_dir()] if plan.mount_namespace else [],
        "readonly_probe": str(outside) if plan.readonly_root else None,
        "pid": plan.pid_namespace,
        "uid": _nobody()[0] if plan.uid_nobody else None,
    }
    argv = [_interpreter(), "-I", "-S", "-c", _PROBE, json.dumps(expect)]
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = _spawn(argv, plan, workdir, SandboxLimits(), _mountable(hidden), out, err)
            timed_out = _wait(proc, 20.0)
            ok = not timed_out and proc.returncode == 0
            if not ok:
                log.debug("sandbox probe %s failed: %s", plan.layers(), _tail(err, 2000))
            return ok
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("sandbox probe %s failed: %s", plan.layers(), exc)
        return False
    finally:
        if os.path.lexists(outside) and not os.path.isdir(outside):
            os.unlink(outside)
        _remove_tree(workdir)


# Runs in the probe child: exit 0 only if every requested layer is in effect.
_PROBE = _program("probe.py")


# --- the bootstrap: child.py, the program the child interpreter runs first ---------------

_BOOTSTRAP = _program("child.py")
