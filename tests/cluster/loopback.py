"""Run a command in a network namespace of its own that holds only the loopback interface.

    python tests/cluster/loopback.py COMMAND...

Ray binds the host's network interface; the cluster tests must send traffic to loopback
only. As root this is ``unshare -n``; otherwise (or where that is refused)
``unshare -rn``, a user namespace around it.
Inside, ``lo`` is brought up (ioctl, no iproute2 needed), the namespace is checked to
hold nothing else, and COMMAND runs with ``TASKPGM_LOOPBACK_NS=1``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import sys

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def interfaces() -> list[str]:
    """The interfaces of this process's network namespace."""
    return sorted(name for _, name in socket.if_nameindex())


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--inside"]:
        loopback_up()
        if interfaces() != ["lo"]:
            print(f"loopback.py: the namespace holds {interfaces()}, not only lo",
                  file=sys.stderr)
            return 2
        os.environ["TASKPGM_LOOPBACK_NS"] = "1"
        os.execvp(argv[1], argv[1:])
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    unshare = shutil.which("unshare")
    if unshare is None:
        print("loopback.py: `unshare` (util-linux) is missing; apt-get install util-linux",
              file=sys.stderr)
        return 2
    import subprocess

    # as root a network namespace alone; otherwise (or where root lacks CAP_SYS_ADMIN, in
    # some containers) a user namespace around it
    for flag in (["-n"] if os.geteuid() == 0 else []) + ["-rn"]:
        if subprocess.run([unshare, flag, "true"], capture_output=True).returncode == 0:
            os.execv(unshare, [unshare, flag, sys.executable, __file__, "--inside", *argv])
    print("loopback.py: cannot create a network namespace here (unshare -n and unshare -rn "
          "both refused); the Ray tests need one so that they reach loopback only",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
