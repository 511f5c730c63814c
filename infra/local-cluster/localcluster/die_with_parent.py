"""`python die_with_parent.py PARENT_PID ARGV...`: exec ARGV, to get SIGTERM when the thread that started it ends.

PR_SET_PDEATHSIG is set here, in a fresh interpreter with one thread, not in a `preexec_fn`,
which Python documents as unsafe in a process with threads (a test run has several). The
setting survives exec. A parent that ended before it was set would never send the signal, so
the parent is checked after it is set, as prctl(2) advises, and ARGV is not started then.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    parent, argv = int(sys.argv[1]), sys.argv[2:]
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        sys.exit(f"not starting {argv[0]}: the process that started it has ended")
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
