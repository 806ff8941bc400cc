"""The seccomp filter each job loads on itself before the candidate runs.

Built here, outside the jail, with libseccomp (through `pyseccomp`), and sent to the
zygote as raw BPF: the jail has no site-packages, and loading a ready program needs
only one `prctl`. It refuses what would let a job outlive itself or reach past its
uid: IPC objects (SysV and POSIX, which persist after the job's processes die), new
namespaces (a user namespace would undo the uid drop), io_uring (a second syscall
path that filters do not see), kernel keyrings, and unix-domain `socket()` (the host's
daemons listen on unix sockets, and `connect()` ignores read-only mounts; a job's own
`socketpair()` still works). Both backends load it.
"""

from __future__ import annotations

import errno
import functools
import tempfile

from sandbox.jail import SandboxUnavailable

REFUSED = (
    # IPC objects outlive the processes that made them
    "shmget shmat msgget msgsnd msgrcv semget semop semtimedop "
    "mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify "
    # new namespaces, or joining one
    "unshare setns "
    # a second syscall interface, and other kernel-held state
    "io_uring_setup io_uring_enter io_uring_register keyctl add_key request_key bpf "
    "userfaultfd perf_event_open"
).split()
# clone() flags that create namespaces (CLONE_NEWNS ... CLONE_NEWNET, CLONE_NEWTIME).
NAMESPACE_FLAGS = (
    0x80,
    0x20000,
    0x2000000,
    0x4000000,
    0x8000000,
    0x10000000,
    0x20000000,
    0x40000000,
)
AF_UNIX = 1


@functools.cache
def job_filter() -> bytes:
    """The filter as a BPF program (an array of `struct sock_filter`)."""
    try:
        import pyseccomp
    except (ImportError, OSError) as exc:  # no filter, no jobs: never a weaker run
        raise SandboxUnavailable(
            f"cannot build the sandbox's seccomp filter ({exc}); install libseccomp "
            "(apt-get install libseccomp2) and pyseccomp (pip install pyseccomp)"
        ) from None
    f = pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)
    for name in REFUSED:
        f.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
    for flag in NAMESPACE_FLAGS:
        f.add_rule(
            pyseccomp.ERRNO(errno.EPERM), "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag, flag)
        )
    f.add_rule(pyseccomp.ERRNO(errno.EPERM), "socket", pyseccomp.Arg(0, pyseccomp.EQ, AF_UNIX))
    # clone3 passes its flags in memory, where a filter cannot look: callers (glibc,
    # Python) fall back to clone() on ENOSYS, whose flags the rules above see.
    f.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read()
