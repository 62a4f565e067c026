"""The sandbox's child program: runs first in the child interpreter
(``python -I -B -c SOURCE CONFIG``, as nobody where possible), passed as text by
`supervisor._spawn`, so it reads nothing from the project tree.

It forks: the parent half supervises (a child subreaper that kills and reaps every
descendant and relays the sample's exit status; the parent of the sandbox SIGTERMs it on
timeout), the child half (PID 1 of the new PID namespace, if any) locks itself down with
the audit hook and execs the sample in a fresh __main__ module. The hook binds everything
it uses when it is installed, so the sample cannot monkeypatch os.path, builtins, ... to
steer it. Uncaught exceptions in the sample print a traceback and exit 1, as usual.

Standard library only, and nothing runs on import: the program starts at the bottom.
"""
# ruff: noqa: E401
import json
import os
import signal
import sys

CFG: dict = {}  # the sandbox's settings, from argv[1]
_worker = 0  # the sample's pid in the supervising half; 0 before the fork and in the worker


def _prctl(option, value):
    # no stdlib wrapper; if it fails, cleanup falls back on the parent's sweep
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except Exception:
        pass


def _children():
    me, found = os.getpid(), []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if name.isdigit():
            try:
                with open("/proc/" + name + "/stat", "rb") as f:
                    fields = f.read().rpartition(b")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                found.append(int(name))
    return found


def _kill_children(*_):
    # the sample's process group first: one kill(2) that a fork bomb cannot outrun
    if _worker > 0:  # 0 before the fork and in the worker itself: killpg(0) would hit us
        try:
            os.killpg(_worker, signal.SIGKILL)
        except OSError:
            pass
    for pid in _children():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _supervise(worker):
    status = None
    while True:
        if status is not None:
            _kill_children()  # orphans of the sample, reparented to us (subreaper)
        try:
            pid, st = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == worker:
            status = st
    sys.stdout.flush()
    sys.stderr.flush()
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def _make_hook(workdir, hidden, keep, posix, stat):
    lstat, stat_, readlink, getcwd, fspath = posix.lstat, posix.stat, posix.readlink, posix.getcwd, posix.fspath
    is_link, is_dir = stat.S_ISLNK, stat.S_ISDIR
    str_, bytes_, int_, type_, isinstance_, len_ = str, bytes, int, type, isinstance, len
    os_error, denied = OSError, PermissionError
    own_proc = "/proc/" + readlink("/proc/self")
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    devices = ("/dev/null", "/dev/stdout", "/dev/stderr")
    always_denied = frozenset((
        "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
        "subprocess.Popen", "os.startfile", "os.kill", "os.killpg", "signal.pthread_kill",
        "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
        "socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr", "socket.getnameinfo",
        "resource.setrlimit", "resource.prlimit",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents",  # would reach this hook's cells
    ))
    # stubbed or dropped below: a fresh import would restore the real functions
    forbidden_imports = frozenset(("ctypes", "_ctypes", "_posixsubprocess", "posix", "_signal"))
    # event -> ((path argument, its dir_fd argument or -1, follow a final symlink), ...)
    changes = {
        "os.chmod": ((0, 2, True),), "os.chown": ((0, 3, True),), "os.chflags": ((0, -1, True),),
        "os.lchflags": ((0, -1, False),), "os.link": ((0, 2, True), (1, 3, False)),
        "os.mkdir": ((0, 2, False),), "os.remove": ((0, 1, False),), "os.rmdir": ((0, 1, False),),
        "os.rename": ((0, 2, False), (1, 3, False)), "os.symlink": ((1, 2, False),),
        "os.truncate": ((0, -1, True),), "os.utime": ((0, 3, True),), "os.setxattr": ((0, -1, True),),
        "os.removexattr": ((0, -1, True),), "shutil.rmtree": ((0, 1, False),),
        "shutil.move": ((0, -1, False), (1, -1, False)), "shutil.copyfile": ((1, -1, True),),
        "shutil.copymode": ((1, -1, True),), "shutil.copystat": ((1, -1, True),),
        "shutil.copytree": ((1, -1, True),), "sqlite3.connect": ((0, -1, True),),
    }
    lists = frozenset(("os.listdir", "os.scandir", "os.chdir"))

    def exact(s):
        # a str/bytes subclass could override startswith & co.; the base type's methods cannot lie
        if isinstance_(s, bytes_):
            return bytes_.decode(s, "utf-8", "surrogateescape")
        return bytes_.decode(str_.encode(s, "utf-8", "surrogateescape"), "utf-8", "surrogateescape")

    def fd_path(fd):
        try:
            target = readlink("/proc/self/fd/%d" % fd)
        except (os_error, TypeError, ValueError):
            return None
        return target if target.startswith("/") else None

    def real(path):
        # os.path.realpath, with functions bound at install time
        todo = [p for p in path.split("/") if p]
        todo.reverse()
        done, hops = "", 0
        while todo:
            part = todo.pop()
            if part == ".":
                continue
            if part == "..":
                done = done.rpartition("/")[0]
                continue
            candidate = done + "/" + part
            try:
                mode = lstat(candidate).st_mode
            except os_error:
                done = candidate
                continue
            if not is_link(mode):
                done = candidate
                continue
            hops += 1
            if hops > 40:
                return None
            target = readlink(candidate)
            if target.startswith("/"):
                done = ""
            more = [p for p in target.split("/") if p]
            more.reverse()
            todo.extend(more)
        return done or "/"

    def resolve(path, dir_fd, follow=True):
        # -> (absolute path with symlinks resolved or None if unknown, absolute path as given)
        if type_(path) is int_:
            found = fd_path(path)
            return found, found
        if path is None:
            path = "."
        if not isinstance_(path, (str_, bytes_)):
            path = fspath(path)
        path = exact(path)
        if path.startswith("file:"):  # sqlite URI
            path = path[5:].partition("?")[0]
        if not path.startswith("/"):
            # audit events report "no dir_fd" as None or -1
            base = getcwd() if dir_fd is None or (type_(dir_fd) is int_ and dir_fd < 0) else fd_path(dir_fd)
            if base is None:
                return None, None
            path = base + "/" + path
        if follow:
            return real(path), path
        head, _, name = path.rstrip("/").rpartition("/")
        if name in ("", ".", ".."):
            return real(path), path
        parent = real(head or "/")
        return (None if parent is None else parent.rstrip("/") + "/" + name), path

    def under(path, root):
        return path == root or path.startswith(root + "/")

    def is_hidden(path):
        if path is None:
            return True
        for root in keep:
            if under(path, root):
                return False
        for root in hidden:
            if under(path, root):
                return True
        # other processes' /proc entries (environment, memory, open files)
        if path.startswith("/proc/") and path[6:].partition("/")[0].isdigit():
            return not under(path, own_proc)
        return False

    def may_change(path, given):
        if given in devices or path == "/dev/null":
            return True
        return path is not None and path != workdir and under(path, workdir) and not is_hidden(path)

    def opens_dir(path):
        try:
            return is_dir(stat_(path).st_mode)
        except os_error:
            return False

    def deny(event, detail=None):
        raise denied("eexit sandbox: %s denied" % (event if detail is None else event + " " + detail))

    def hook(event, args):
        if event in always_denied or event.startswith("ctypes."):
            deny(event)
        elif event == "open":
            path, mode, flags = args[0], args[1], args[2]
            if type_(path) is int_:
                return  # a descriptor this process already holds
            found, given = resolve(path, None)
            if is_hidden(found):
                deny(event, repr(given))
            writes = type_(flags) is int_ and flags & write_flags
            if isinstance_(mode, str_):
                mode = exact(mode)
                writes = writes or "w" in mode or "a" in mode or "x" in mode or "+" in mode
            if not may_change(found, given) and (writes or opens_dir(found)):
                # a descriptor of an outside directory would let dir_fd= calls, which the
                # "open" event does not report, reach outside the work dir
                deny(event, repr(given))
        elif event == "import":
            if exact(args[0]) in forbidden_imports:
                deny(event, args[0])
        elif event in changes:
            for index, fd_index, follow in changes[event]:
                if index < len_(args):
                    dir_fd = args[fd_index] if 0 <= fd_index < len_(args) else None
                    found, given = resolve(args[index], dir_fd, follow)
                    if not may_change(found, given):
                        deny(event, repr(given))
        elif event in lists:
            found, given = resolve(args[0], None)
            if is_hidden(found):
                deny(event, repr(given))

    return hook


def _lock_down(workdir, hidden, keep):
    import _posixsubprocess
    import _signal
    import posix
    import stat

    def no_processes(*args, **kwargs):
        raise PermissionError("eexit sandbox: creating or signalling processes is denied")

    # process creation and signalling that raise no audit event of their own
    _posixsubprocess.fork_exec = no_processes
    for module in (os, posix):
        if hasattr(module, "pidfd_open"):
            module.pidfd_open = no_processes
    for module in (signal, _signal):
        if hasattr(module, "pidfd_send_signal"):
            module.pidfd_send_signal = no_processes
    # ctypes was only for prctl; a re-import is denied, and its calls raise ctypes.* events
    for name in [m for m in sys.modules if m in ("ctypes", "_ctypes") or m.startswith("ctypes.")]:
        del sys.modules[name]
    sys.addaudithook(_make_hook(workdir, tuple(hidden), tuple(keep), posix, stat))


def _run_sample():
    import builtins
    import types

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setpgid(0, 0)  # a group of its own, so the supervisor can kill it and its forks at once
    _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the supervisor
    path = os.path.join(CFG["workdir"], CFG["program"])
    with open(path, encoding="utf-8") as f:
        code = compile(f.read(), path, "exec")
    if CFG["audit"]:
        _lock_down(CFG["workdir"], CFG["hidden"], CFG["keep"])
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.argv = [path]
    exec(code, main.__dict__)


if __name__ == "__main__":
    CFG = json.loads(sys.argv[1])
    sys.dont_write_bytecode = True
    _worker = 0
    signal.signal(signal.SIGTERM, _kill_children)  # before the fork: a timeout may come at once
    _prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphans of the sample become our children
    try:
        _worker = os.fork()
    except OSError as exc:
        sys.exit("eexit sandbox: cannot start the sample: %s" % exc)
    if _worker:
        try:
            os.setpgid(_worker, _worker)  # also here: whichever of the two runs first wins the race
        except OSError:
            pass
        _supervise(_worker)
    else:
        _run_sample()
