"""Run one untrusted process under isolation and limits, and report what happened (no verdicts here).

Per execution (``isolation="bwrap"``), a fresh bubblewrap sandbox:

- runs as an unprivileged uid, never root: when the server is root, worker ``i`` is user ``mfsbx{i}``
  (``sandbox/setup_system.sh``), held through a lock file so concurrent servers and ``sandbox run`` never share
  one; the sandbox itself adds a user namespace in which nested user namespaces are disabled;
- new user, pid, net, ipc, uts and cgroup namespaces: no network at all (only a loopback of its own), its
  own pid 1, so the server's processes and ``/proc/1/environ`` are not visible;
- read-only binds of ``/usr`` (+ the merged-usr symlinks) and a short list of ``/etc`` files needed by the
  dynamic loader, Python and g++; no home, project, run or scratch folders; the job's files read-only at
  ``/sandbox``; a private size-limited tmpfs at ``/tmp`` (the working directory) and a small one at
  ``/dev/shm``; everything else, the sandbox's own root and ``/dev`` included, is read-only;
- started with an empty environment (``env={}`` for bwrap itself, ``--clearenv`` inside, then PATH/HOME/LANG);
- rlimits set inside the sandbox by ``prlimit`` just before the program: CPU seconds (soft = hard, so the kernel
  sends SIGKILL), address space, file size, process count (counted per sandbox user namespace), no core files;
- a wall-clock limit: the whole process group is SIGKILLed, and ``--die-with-parent`` plus the pid namespace
  make the kernel kill every remaining process of the sandbox, background children included;
- stdout and stderr read with a byte cap: past it the sandbox is killed (``output_exceeded``).

Not isolated: the CPU time of other sandboxes (no cgroups: two jobs share the cores), kernel attack surface
(no seccomp filter), and the same-process test harness (see ``harness.py``). ``isolation="none"`` keeps only the
uid switch, rlimits, the process-group kill and a clean environment: it is for machines without bwrap, and the
server says so on every start.

Setup failures (bwrap cannot create the sandbox) come back as ``sandbox_failure`` so they are never mistaken
for a wrong answer: inside the finished sandbox a ``/bin/sh`` launcher first prints a per-run random line on
stdout and then execs prlimit and the program. A run whose stdout does not start with that line never reached
the program, whatever its stderr says; a program cannot fake the line's absence, since it comes first.
"""

from __future__ import annotations

import asyncio
import fcntl
import math
import os
import pwd
import secrets
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..errors import MathfirstError
from .config import SandboxConfig

# /etc entries the loader, Python and g++ read; everything else in /etc stays invisible.
ETC_ENTRIES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "passwd", "group",
               "nsswitch.conf", "python3", "python3.11", "python3.12", "python3.13")
# Merged-/usr systems: these are symlinks into /usr; older layouts get them bound instead.
ROOT_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
SANDBOX_ROOT = "/sandbox"
SHM_SIZE_MB = 16
SANDBOX_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}


class SandboxUnavailableError(MathfirstError):
    """The requested isolation cannot work on this machine (bwrap missing, user namespaces off, no users)."""


@dataclass
class Limits:
    """Limits of one process run."""

    cpu_s: float
    wall_s: float
    memory_mb: int
    file_size_mb: int
    max_processes: int
    max_output_bytes: int

    @classmethod
    def for_job(cls, cfg: SandboxConfig, time_limit_s: float, memory_mb: int) -> Limits:
        return cls(cpu_s=time_limit_s, wall_s=time_limit_s * cfg.wall_factor + cfg.wall_slack_s,
                   memory_mb=memory_mb, file_size_mb=cfg.file_size_mb, max_processes=cfg.max_processes,
                   max_output_bytes=cfg.max_output_bytes)

    def prlimit_args(self) -> list[str]:
        cpu = max(1, math.ceil(self.cpu_s))  # RLIMIT_CPU is whole seconds
        mem = self.memory_mb << 20
        fsize = self.file_size_mb << 20
        return [f"--cpu={cpu}:{cpu}", f"--as={mem}:{mem}", f"--fsize={fsize}:{fsize}",
                f"--nproc={self.max_processes}:{self.max_processes}", "--core=0:0"]


@dataclass
class RawRun:
    """What one process run did; ``runner.classify`` turns it into a status."""

    exit_code: int | None
    stdout: bytes = b""
    stderr: bytes = b""
    wall_s: float = 0.0
    wall_killed: bool = False
    output_exceeded: bool = False
    cancelled: bool = False
    sandbox_failure: str | None = None


@dataclass
class Slot:
    """One worker's identity: the uid its programs run as and its private host folder for job files."""

    index: int
    uid: int | None
    gid: int | None
    dir: Path
    lock_fd: int | None = None
    user: str = ""

    def spawn_kwargs(self) -> dict:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


@dataclass
class JobDir:
    """Host folder of one job's files, seen as ``root`` by the program."""

    host: Path
    root: str
    writable: list[str] = field(default_factory=list)


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _lock_dir() -> Path:
    path = Path(tempfile.gettempdir()) / f"mathfirst-sandbox-uids-{os.geteuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def acquire_slots(cfg: SandboxConfig, count: int) -> list[Slot]:
    """Reserve ``count`` worker identities. As root: free ``mfsbx*`` users, each held by an flock; otherwise the
    current user for all (its processes are still counted per sandbox by the kernel's namespaced NPROC)."""
    base = Path(tempfile.mkdtemp(prefix="mfsbx-"))
    os.chmod(base, 0o711)  # workers may traverse to their own folder, not list the others
    slots: list[Slot] = []
    try:
        if not _running_as_root():
            for i in range(count):
                slots.append(_make_slot(base, i, None, None, None, ""))
            return slots
        for user_index in range(1024):
            name = f"{cfg.user_prefix}{user_index}"
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                break
            fd = os.open(_lock_dir() / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            slots.append(_make_slot(base, len(slots), entry.pw_uid, entry.pw_gid, fd, name))
            if len(slots) == count:
                return slots
        raise SandboxUnavailableError(
            f"only {len(slots)} of {count} sandbox users ({cfg.user_prefix}0, {cfg.user_prefix}1, ...) exist and "
            "are free; untrusted code never runs as root",
            hint="run sandbox/setup_system.sh [N] as root, or lower --workers")
    except BaseException:
        release_slots(slots)
        shutil.rmtree(base, ignore_errors=True)
        raise


def _make_slot(base: Path, index: int, uid: int | None, gid: int | None, fd: int | None, user: str) -> Slot:
    slot_dir = base / f"w{index}"
    slot_dir.mkdir(mode=0o700)
    if uid is not None:
        os.chown(slot_dir, uid, gid)
    return Slot(index=index, uid=uid, gid=gid, dir=slot_dir, lock_fd=fd, user=user)


def release_slots(slots: list[Slot]) -> None:
    bases = {slot.dir.parent for slot in slots}
    for slot in slots:
        if slot.lock_fd is not None:
            os.close(slot.lock_fd)
            slot.lock_fd = None
    for base in bases:
        shutil.rmtree(base, ignore_errors=True)


class Isolation:
    """Runs a command for one slot. Subclasses decide how the command is wrapped."""

    name = "base"
    signal_exit_codes = False
    """True when a signal death shows as exit code 128 + N (bwrap's convention) rather than -N."""
    kill_uid_after = False
    """Sweep the worker uid after each run (no pid namespace to end background children)."""
    outer_env: ClassVar[dict[str, str]] = SANDBOX_ENV
    """Environment of the process we start (never the server's)."""

    def __init__(self, cfg: SandboxConfig) -> None:
        self.cfg = cfg

    def new_job_dir(self, slot: Slot) -> JobDir:
        host = slot.dir / "job"
        shutil.rmtree(host, ignore_errors=True)
        host.mkdir(mode=0o755)
        return JobDir(host=host, root=self._root_for(host))

    def make_writable(self, slot: Slot, job_dir: JobDir, name: str) -> str:
        """A folder inside the job dir that the program may write (C++ build output); returns its in-sandbox path."""
        path = job_dir.host / name
        path.mkdir(mode=0o700)
        if slot.uid is not None:
            os.chown(path, slot.uid, slot.gid)
        job_dir.writable.append(name)
        return f"{job_dir.root}/{name}"

    def seal(self, slot: Slot, job_dir: JobDir, name: str) -> None:
        """Make a folder from ``make_writable`` read-only again (the compiled binary's folder, before it runs)."""
        job_dir.writable.remove(name)
        if slot.uid is not None:
            os.chown(job_dir.host / name, 0, 0)
        (job_dir.host / name).chmod(0o755)

    def _root_for(self, host: Path) -> str:
        raise NotImplementedError

    def wrap(self, slot: Slot, job_dir: JobDir, argv: list[str], limits: Limits) -> tuple[list[str], str]:
        """The full command line and its working directory (outside the sandbox)."""
        raise NotImplementedError

    async def run(self, slot: Slot, job_dir: JobDir, argv: list[str], stdin: bytes, limits: Limits) -> RawRun:
        command, cwd = self.wrap(slot, job_dir, argv, limits)
        return await _run_process(command, cwd, dict(self.outer_env), slot, stdin, limits,
                                  kill_uid_after=self.kill_uid_after and slot.uid is not None)

    def launcher(self, argv: list[str], limits: Limits) -> list[str]:
        """sh prints the start marker (placeholder ``{MARKER}``), then becomes prlimit, then the program."""
        return [self.cfg.shell, "-c", 'printf "%s\\n" "$0"; exec "$@"', "{MARKER}",
                self.cfg.prlimit, *limits.prlimit_args(), "--", *argv]

    async def check(self, slot: Slot) -> None:
        """Run a trivial program exactly as jobs run; raise SandboxUnavailableError naming the cause if it fails."""
        job_dir = self.new_job_dir(slot)
        limits = Limits(cpu_s=5, wall_s=20, memory_mb=512, file_size_mb=1, max_processes=16,
                        max_output_bytes=4096)
        raw = await self.run(slot, job_dir, [self.cfg.python, "-I", "-c", "print('sandbox-ok')"], b"", limits)
        shutil.rmtree(job_dir.host, ignore_errors=True)
        if raw.sandbox_failure or raw.exit_code != 0 or raw.stdout.strip() != b"sandbox-ok":
            why = raw.sandbox_failure or raw.stderr.decode(errors="replace").strip()[-300:]
            raise SandboxUnavailableError(
                f"{self.name} isolation does not work here as {slot.user or 'the current user'}: {why}",
                hint=_hint_for(why, self.name))


def _hint_for(why: str, name: str) -> str:
    if name == "bwrap" and ("namespace" in why or "Operation not permitted" in why):
        return ("enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
                "user.max_user_namespaces>0) or install bwrap setuid; --isolation none runs without it (unsafe)")
    return "run sandbox/setup_system.sh as root; --isolation none runs without bwrap (unsafe)"


class BwrapIsolation(Isolation):
    """A fresh bubblewrap sandbox per execution (see the module docstring for what it covers)."""

    name = "bwrap"
    signal_exit_codes = True
    outer_env: ClassVar[dict[str, str]] = {}  # bwrap itself gets nothing; the program's env is set inside (--setenv)

    def __init__(self, cfg: SandboxConfig) -> None:
        super().__init__(cfg)
        bwrap = shutil.which(cfg.bwrap)
        if bwrap is None:
            raise SandboxUnavailableError(f"bubblewrap ({cfg.bwrap}) is not installed",
                                          hint="apt-get install bubblewrap, or run sandbox/setup_system.sh")
        for tool in (cfg.prlimit, cfg.python, cfg.shell):
            if not os.access(tool, os.X_OK):
                raise SandboxUnavailableError(f"{tool} is missing", hint="run sandbox/setup_system.sh")
        self.bwrap_path = bwrap
        self._system_args = self._system_binds()

    @staticmethod
    def _system_binds() -> list[str]:
        args = ["--ro-bind", "/usr", "/usr"]
        for name in ROOT_DIRS:
            path = Path("/") / name
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), f"/{name}"]
            elif path.is_dir():
                args += ["--ro-bind", str(path), f"/{name}"]
        for name in ETC_ENTRIES:
            if os.path.lexists(f"/etc/{name}"):
                args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        return args

    def _root_for(self, host: Path) -> str:
        return SANDBOX_ROOT

    def wrap(self, slot: Slot, job_dir: JobDir, argv: list[str], limits: Limits) -> tuple[list[str], str]:
        cfg = self.cfg
        command = [self.bwrap_path, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
                   "--new-session", "--hostname", "sandbox", "--cap-drop", "ALL", *self._system_args,
                   "--proc", "/proc", "--dev", "/dev",
                   "--size", str(cfg.tmp_size_mb << 20), "--tmpfs", "/tmp",
                   "--size", str(SHM_SIZE_MB << 20), "--tmpfs", "/dev/shm",  # multiprocessing semaphores
                   "--ro-bind", str(job_dir.host), SANDBOX_ROOT]
        for name in job_dir.writable:
            command += ["--bind", str(job_dir.host / name), f"{SANDBOX_ROOT}/{name}"]
        # The root is bwrap's own tmpfs: read-only, or / and /etc would be unlimited scratch space in memory.
        command += ["--remount-ro", "/", "--remount-ro", "/dev", "--chdir", "/tmp", "--clearenv"]
        for key, value in SANDBOX_ENV.items():
            command += ["--setenv", key, value]
        command += ["--", *self.launcher(argv, limits)]
        return command, "/"


class NoIsolation(Isolation):
    """rlimits + uid switch + process-group kill only. No namespaces: the program sees the machine."""

    name = "none"
    kill_uid_after = True

    def __init__(self, cfg: SandboxConfig) -> None:
        super().__init__(cfg)
        for tool in (cfg.prlimit, cfg.python, cfg.shell):
            if not os.access(tool, os.X_OK):
                raise SandboxUnavailableError(f"{tool} is missing", hint="run sandbox/setup_system.sh")

    def _root_for(self, host: Path) -> str:
        return str(host)

    def new_job_dir(self, slot: Slot) -> JobDir:
        job_dir = super().new_job_dir(slot)
        self.make_writable(slot, job_dir, "tmp")  # the working directory
        return job_dir

    def wrap(self, slot: Slot, job_dir: JobDir, argv: list[str], limits: Limits) -> tuple[list[str], str]:
        return self.launcher(argv, limits), str(job_dir.host / "tmp")


ISOLATIONS: dict[str, type[Isolation]] = {"bwrap": BwrapIsolation, "none": NoIsolation}


def make_isolation(cfg: SandboxConfig) -> Isolation:
    return ISOLATIONS[cfg.isolation](cfg)


# ---------------------------------------------------------------------------------------------------------------
# Process plumbing
# ---------------------------------------------------------------------------------------------------------------

async def _run_process(command: list[str], cwd: str, env: dict[str, str], slot: Slot, stdin: bytes,
                       limits: Limits, kill_uid_after: bool) -> RawRun:
    marker = f"mfsbx-started-{secrets.token_hex(8)}"
    command = [marker if part == "{MARKER}" else part for part in command]
    started = time.perf_counter()
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, cwd=cwd, process_group=0, **slot.spawn_kwargs())
    except OSError as exc:
        return RawRun(exit_code=None, sandbox_failure=f"could not start the sandbox: {exc}")
    raw = RawRun(exit_code=None)
    sweep = (lambda: _kill_all_of_uid(slot)) if kill_uid_after else None
    try:
        await _supervise(proc, stdin, limits, raw, sweep)
    except asyncio.CancelledError:
        raw.cancelled = True
        _kill_group(proc.pid)
        if sweep:
            await asyncio.shield(sweep())
        await asyncio.shield(proc.wait())
        raise
    finally:
        raw.wall_s = time.perf_counter() - started
    head = marker.encode() + b"\n"
    if raw.stdout.startswith(head):
        raw.stdout = raw.stdout[len(head):]
    else:
        detail = raw.stderr.decode(errors="replace").strip()[-300:] or f"exit code {raw.exit_code}"
        raw.sandbox_failure = f"the sandbox did not start: {detail}"
    return raw


async def _supervise(proc: asyncio.subprocess.Process, stdin: bytes, limits: Limits, raw: RawRun,
                     sweep) -> None:
    """Feed stdin, read capped output, enforce the wall clock. ``sweep`` (isolation none, as root) kills
    every process of the worker uid once the program exits, since nothing else ends its background children."""

    def exceeded() -> None:
        raw.output_exceeded = True
        _kill_group(proc.pid)

    out_task = asyncio.ensure_future(_pump(proc.stdout, limits.max_output_bytes, exceeded))
    err_task = asyncio.ensure_future(_pump(proc.stderr, limits.max_output_bytes, exceeded))
    feed_task = asyncio.ensure_future(_feed(proc.stdin, stdin))
    # Process.wait() also waits for the pipes to close, which a background child can hold open.
    wait_task = asyncio.ensure_future(proc.wait())
    tasks = [out_task, err_task, feed_task, wait_task]
    if sweep:
        tasks.append(asyncio.ensure_future(_sweep_on_exit(proc, sweep)))
    try:
        done, _ = await asyncio.wait({wait_task}, timeout=limits.wall_s)
        if not done:
            raw.wall_killed = True
            _kill_group(proc.pid)
            if sweep:
                await sweep()
            done, _ = await asyncio.wait({wait_task}, timeout=2.0)
            if not done:  # an escaped child still holds the pipes (isolation none, not root): let go of them
                for fd in (0, 1, 2):
                    pipe = proc._transport.get_pipe_transport(fd)  # no public handle on the pipes
                    if pipe is not None:
                        pipe.close()
        raw.exit_code = await wait_task
        await asyncio.wait({out_task, err_task}, timeout=2.0)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    raw.stdout = out_task.result() if not out_task.cancelled() else b""
    raw.stderr = err_task.result() if not err_task.cancelled() else b""


async def _sweep_on_exit(proc: asyncio.subprocess.Process, sweep) -> None:
    while proc.returncode is None:
        await asyncio.sleep(0.02)
    await sweep()


async def _pump(stream: asyncio.StreamReader, limit: int, on_exceed) -> bytes:
    buf = bytearray()
    try:
        while chunk := await stream.read(1 << 16):
            if len(buf) <= limit:
                buf += chunk[: limit + 1 - len(buf)]
                if len(buf) > limit:
                    on_exceed()
    except asyncio.CancelledError:
        pass
    return bytes(buf[:limit])


async def _feed(stream: asyncio.StreamWriter, data: bytes) -> None:
    try:
        if data:
            stream.write(data)
            await stream.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the program did not read all of its stdin: its business
    finally:
        stream.close()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def _kill_all_of_uid(slot: Slot) -> None:
    """``kill -9 -1`` as the worker's uid: ends every process that uid owns (it owns nothing else)."""
    proc = await asyncio.create_subprocess_exec("kill", "-9", "-1", env=dict(SANDBOX_ENV),
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL, **slot.spawn_kwargs())
    await proc.wait()
