"""The sandbox's layer probe: run in a sandboxed child (``python -I -S -c SOURCE EXPECT``)
by `supervisor.sandbox_report`; exits 0 only if every layer the parent expects is in force
(no network interfaces but lo, hidden directories empty, the file system read-only outside
the work dir, a new PID namespace, the nobody uid). Standard library only."""
# ruff: noqa: E401
import json
import os
import sys


def check(want: dict) -> None:
    if want["net"]:
        import socket
        assert [name for _, name in socket.if_nameindex()] == ["lo"], "network interfaces visible"
    for path in want["empty_dirs"]:
        assert not os.listdir(path), "hidden directory readable: " + path
    if want["readonly_probe"]:
        with open("inside", "w") as f:
            f.write("the work dir must stay writable")
        try:
            open(want["readonly_probe"], "w").close()
        except OSError:
            pass
        else:
            sys.exit("file system outside the work dir is writable")
    if want["pid"]:
        child = os.fork()  # the first child of a new PID namespace is its init
        if child == 0:
            os._exit(0 if os.getpid() == 1 else 1)
        assert os.waitpid(child, 0)[1] == 0, "no new PID namespace"
    if want["uid"] is not None:
        assert os.getuid() == want["uid"] and os.getgid() != 0 and not os.getgroups()


if __name__ == "__main__":
    check(json.loads(sys.argv[1]))
