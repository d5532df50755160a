"""The per-worker launcher that runs *inside* a long-lived bubblewrap sandbox and starts each program in fresh
namespaces of its own (stdlib only: it runs as ``/usr/bin/python3 -I -S -c <this file> FD``; Python >= 3.9,
Linux >= 5.3 for pidfds, x86_64 or aarch64 for the raw clone).

Why: a fresh ``bwrap`` per execution costs ~6 ms of CPU and ~14 ms of latency (user, net, pid, ipc, uts and mount
namespaces, ~25 mounts, three extra execs for bwrap, sh and prlimit), more than the ~11 ms a tiny Python program
itself needs. Here the unchanging part (user + net + uts namespaces, the read-only root, no network) is built
once per worker, and each execution only gets what must be fresh: new pid, mount and ipc namespaces, a new
size-limited ``/tmp`` and ``/dev/shm``, a new ``/proc``, rlimits, no capabilities.

Protocol on the SOCK_SEQPACKET socket whose fd number is the first argument (one message per packet):

- zygote -> server, once: ``ready`` (the sandbox is built; the server hands it no job before this);
- server -> zygote: a job, NUL-separated fields (``isolation.encode_job``): ``job``, the job folder's bind (source,
  target, then an empty folder bound over the folder holding every job folder), cwd, tmp and shm bytes, the
  five rlimits (cpu, as, fsize, nproc, core), then three counted lists (read-only paths, environment ``K=V``,
  argv), with three fds attached (the program's stdin, stdout, stderr). Jobs are numbered 1, 2, ... in arrival
  order and run one at a time in that order; a few may wait while one runs (the server hands over the next job
  before the current one ends, so the sandbox never idles waiting for the server between two programs);
- server -> zygote: ``kill\0<n>`` (wall clock, output limit, cancellation): SIGKILL to job n's namespace init if
  it runs; dropped (and answered as killed) if it still waits;
- zygote -> server: ``<n>\0<exit code>\0<setup error or nothing>`` once no process of job n is left. The code
  follows bwrap's convention (128 + N for a death by signal N).

``zygote.c`` is the same launcher in C (the server compiles and prefers it: no Python process to fork per job);
this file is the fallback where no C compiler exists, and the reference for what the C one does. (The C one also
builds the next job's namespaces while the current job runs, and starts its program the moment the current job's
namespace is empty: see its header.)

Process tree of one job:

    zygote ── I (pid 1 of a new pid namespace, by a raw clone(CLONE_NEWPID); unshares mount + ipc; mounts /tmp,
               /dev/shm, /proc; drops every capability; reaps)
                └── P (the program: rlimits, default signal dispositions, clean environment, exec)

When P exits, I SIGKILLs every other process of its namespace (background children), reaps them, writes P's code
on a status pipe and exits; the zygote answers as soon as the code arrives (I's own exit, whose mount-namespace
teardown waits for an RCU grace period, finishes in the background). On ``kill`` the zygote SIGKILLs I: the
death of a namespace's init ends every process in it. I and the zygote are not dumpable, and P has no
capabilities, so the program can neither ptrace nor read them; signals from inside a pid namespace to its init
are dropped (I installs no handlers), and the zygote is outside the program's pid namespace (invisible).
A failure before the program's exec (a mount, an rlimit, exec itself) is written to a close-on-exec pipe and
comes back as ``setup_error``: the server reports ``sandbox_error``, never a verdict on the code.
"""

import ctypes
import gc
import os
import resource
import select
import signal
import socket
import sys

QUEUE_MAX = 4
CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
SYS_CLONE = {"x86_64": 56, "aarch64": 220}[os.uname().machine]  # clone(flags, 0, ...) on both
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 4, 24, 47, 4
CAP_LAST = 63
RLIMITS = {"cpu": resource.RLIMIT_CPU, "as": resource.RLIMIT_AS, "fsize": resource.RLIMIT_FSIZE,
           "nproc": resource.RLIMIT_NPROC, "core": resource.RLIMIT_CORE}
RLIMIT_ORDER = ("cpu", "as", "fsize", "nproc", "core")
EXIT_SETUP_FAILED = 127

_libc = None


def libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source, target, fstype, flags, data=None):
    check(libc().mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                       ctypes.c_ulong(flags), data and data.encode()), f"mount {target}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_CAP_HEADER = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
_CAP_NONE = (_CapData * 2)()


def cap_last():
    global _cap_last
    if _cap_last is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as handle:
                _cap_last = int(handle.read())
        except (OSError, ValueError):
            _cap_last = CAP_LAST
    return _cap_last


_cap_last = None


def drop_capabilities():
    """Empty bounding, ambient, inheritable, permitted and effective sets (needs CAP_SETPCAP for the first)."""
    lib = libc()
    lib.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for cap in range(cap_last() + 1):
        lib.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last cap: ignored
    check(lib.capset(ctypes.byref(_CAP_HEADER), ctypes.byref(_CAP_NONE)), "capset")


def fork_into_new_pid_namespace():
    """fork(), the child being pid 1 of a new pid namespace: a raw clone(CLONE_NEWPID | SIGCHLD), so that the
    zygote itself never changes namespaces (unshare(CLONE_NEWPID) could not be repeated without setns, which the
    nested user namespace forbids). Does what os.fork() does around it for the interpreter."""
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _raw_libc().syscall(SYS_CLONE, CLONE_NEWPID | signal.SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone: {os.strerror(err)}")
    return pid


_raw = None


def _raw_libc():
    """libc without releasing the GIL around calls (the child of a raw clone must return holding it)."""
    global _raw
    if _raw is None:
        _raw = ctypes.PyDLL(None, use_errno=True)
        _raw.syscall.restype = ctypes.c_long
    return _raw


def decode_job(message):
    """The job dict from its NUL-separated message (see the module docstring); ValueError if malformed."""
    parts = [part.decode() for part in message.split(b"\0")]
    if len(parts) < 13 or parts[0] != "job" or not all(part.isdigit() for part in parts[6:13]):
        raise ValueError("malformed job")
    job = {"bind": parts[1:5], "cwd": parts[5], "tmp_bytes": int(parts[6]), "shm_bytes": int(parts[7]),
           "rlimits": dict(zip(RLIMIT_ORDER, map(int, parts[8:13])))}
    rest = parts[13:]
    for key in ("readonly", "env", "argv"):
        count = int(rest[0])
        job[key], rest = rest[1:1 + count], rest[1 + count:]
    job["env"] = dict(item.split("=", 1) for item in job["env"])
    if not job["argv"]:
        raise ValueError("malformed job: no argv")
    return job


def exit_code(status):
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def run_program(job, fds, err_w):
    """P: becomes the program. Never returns."""
    try:
        for name, value in job["rlimits"].items():
            resource.setrlimit(RLIMITS[name], (value, value))
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)  # Python ignores these; the program must not inherit that
        for target, fd in enumerate(fds):
            os.dup2(fd, target)  # dup2 clears close-on-exec
        os.closerange(3, err_w)
        os.closerange(err_w + 1, 1 << 16)
        os.chdir(job["cwd"])
        os.execve(job["argv"][0], job["argv"], job["env"])
    except BaseException as exc:  # noqa: BLE001 - anything before exec is a setup failure
        os.write(err_w, f"{type(exc).__name__}: {exc}".encode()[:2000])
    os._exit(EXIT_SETUP_FAILED)


def namespace_init(job, fds, err_w, status_w):
    """I: pid 1 of the job's pid namespace. Mounts the fresh filesystems, starts P; once P has ended, kills and
    reaps every process left in the namespace, then reports P's code on ``status_w`` (before its own exit, whose
    mount-namespace teardown waits for an RCU grace period: tens of ms on a loaded machine)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # pid 1 with no handlers: the program cannot signal it at all
    try:
        check(libc().unshare(CLONE_NEWNS | CLONE_NEWIPC), "unshare")
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        source, target, empty, hide = job["bind"]
        if source:  # the job's own folder; an empty one covers the folder holding every job folder (zygote.c)
            mount(source, target, None, MS_BIND | MS_REC)
            mount(empty, hide, None, MS_BIND)
        mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={job['tmp_bytes']},mode=0700")
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={job['shm_bytes']},mode=1777")
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        for path in job.get("readonly", ()):
            mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        drop_capabilities()  # here, once: the program inherits the empty sets and its exec cannot regain any
        program = os.fork()
    except BaseException as exc:  # noqa: BLE001
        os.write(err_w, f"{type(exc).__name__}: {exc}".encode()[:2000])
        os._exit(EXIT_SETUP_FAILED)
    if program == 0:
        os.close(status_w)
        run_program(job, fds, err_w)
    os.closerange(0, status_w)
    os.closerange(status_w + 1, 1 << 16)
    code = None
    while True:  # reap everything; once the program has ended, end everything else too
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid == program:
            code = exit_code(status)
        if code is not None:
            try:
                os.kill(-1, signal.SIGKILL)  # every process of this namespace but pid 1
            except ProcessLookupError:
                pass
    os.write(status_w, b"%d" % code)
    os._exit(0)


class Jobs:
    """The jobs received and not yet run, in order, and the one running (its number and namespace init)."""

    def __init__(self, control):
        self.control = control
        self.waiting = []  # (number, message, fds)
        self.received = 0
        self.running = None  # (number, init pid)

    def receive(self):
        """Take one message from the server: queue a job (or refuse it at once), apply a kill. False: the server
        went away."""
        message, fds, flags, _ = socket.recv_fds(self.control, 1 << 20, 3)
        if not message:
            return False
        if message.startswith(b"kill\0") and not fds:
            self.cancel(int(message[5:]) if message[5:].isdigit() else 0)
            return True
        self.received += 1
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != 3 or len(self.waiting) >= QUEUE_MAX:
            for fd in fds:
                os.close(fd)
            self.reply(self.received, EXIT_SETUP_FAILED, "malformed job" if len(self.waiting) < QUEUE_MAX
                       else "too many jobs queued")
            return True
        self.waiting.append((self.received, message, fds))
        return True

    def cancel(self, number):
        """SIGKILL to job ``number``'s init if it runs (its namespace ends with it), or drop it if it waits."""
        if self.running is not None and self.running[0] == number:
            try:
                os.kill(self.running[1], signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        for entry in self.waiting:
            if entry[0] == number:
                self.waiting.remove(entry)
                for fd in entry[2]:
                    os.close(fd)
                self.reply(number, 128 + signal.SIGKILL, "")
                return

    def reply(self, number, code, error):
        try:
            self.control.send(b"%d\0%d\0%s" % (number, code, error.encode()[:2000]))
        except OSError:
            pass  # a gone server shows as the end of the control socket


def serve(control):
    """The zygote's loop: jobs one at a time in arrival order, until the server closes the socket."""
    lib = libc()
    lib.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    cap_last()
    gc.disable()  # forked children must not walk (and so copy) the whole heap
    gc.freeze()
    control.send(b"ready")
    jobs = Jobs(control)
    while True:
        while not jobs.waiting:
            if not jobs.receive():
                return
        reap_finished()
        if not run_next(jobs):
            return


def run_next(jobs):
    """Run the first waiting job to its end and reply; False if the server went away."""
    number, message, fds = jobs.waiting.pop(0)
    try:
        job = decode_job(message)
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        for fd in fds:
            os.close(fd)
        jobs.reply(number, EXIT_SETUP_FAILED, str(exc))
        return True
    err_r, err_w = os.pipe()
    status_r, status_w = os.pipe()
    try:
        init = fork_into_new_pid_namespace()
    except OSError as exc:
        for fd in (*fds, err_r, err_w, status_r, status_w):
            os.close(fd)
        jobs.reply(number, EXIT_SETUP_FAILED, str(exc))
        return True
    if init == 0:
        jobs.control.close()
        os.close(err_r)
        os.close(status_r)
        namespace_init(job, fds, err_w, status_w)  # closes the waiting jobs' fds too
    for fd in (*fds, err_w, status_w):
        os.close(fd)
    jobs.running = (number, init)
    code, closed = wait_for_job(jobs, init, status_r)
    jobs.running = None
    setup_error = read_all(err_r) if code == EXIT_SETUP_FAILED else ""
    os.close(err_r)
    os.close(status_r)
    if closed:
        return False
    jobs.reply(number, code, setup_error)
    return True


def wait_for_job(jobs, init, status_r):
    """(P's exit code, whether the server went away). The code comes from I's status pipe as soon as the
    namespace is empty; if I never reports (killed, or setup failed), from I's own exit. Meanwhile further jobs
    are queued and kills applied (a kill of this job: SIGKILL to I, whose death ends its whole pid namespace)."""
    pidfd = os.pidfd_open(init)
    watched = [status_r, pidfd, jobs.control]
    try:
        while True:
            ready, _, _ = select.select(watched, [], [])
            if status_r in ready:
                text = read_all(status_r)
                if text:
                    return int(text), False
                watched.remove(status_r)  # I is gone without a word: its exit decides
                continue
            if pidfd in ready:
                _, status = os.waitpid(init, 0)
                return exit_code(status), False
            if not jobs.receive():
                try:
                    os.kill(init, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(init, 0)
                return None, True
    finally:
        os.close(pidfd)


def reap_finished():
    """Collect the job leaders whose namespaces finished tearing down meanwhile."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def read_all(fd):
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
    sys.exit(0)
