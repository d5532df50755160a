"""Run one untrusted process under isolation and limits, and report what happened (no verdicts here).

``isolation="bwrap"``: each worker keeps one long-lived bubblewrap sandbox (its *zygote*, ``zygote.py``), and
every execution gets fresh namespaces inside it. Per worker, built once:

- an unprivileged uid, never root: when the server is root, worker ``i`` is user ``mfsbx{i}``
  (``sandbox/setup_system.sh``), held through a lock file so concurrent servers and ``sandbox run`` never share
  one; the sandbox adds a user namespace in which nested user namespaces are disabled;
- new user, net, uts and cgroup namespaces: no network at all (only a loopback of its own);
- read-only binds of ``/usr`` (+ the merged-usr symlinks) and a short list of ``/etc`` files needed by the
  dynamic loader, Python and g++; no home, project, run or scratch folders; the worker's two job folders (one
  executes while the server writes the next job's files into the other: ``LANES``) read-only under ``/.jobs``
  (their ``build`` sub-folders writable only while compiling); the root and ``/dev`` read-only;
- a clean environment (``env={}`` for bwrap, ``--clearenv`` inside).

Per execution (the zygote forks it into them; see ``zygote.py`` for the process tree):

- new pid, mount and ipc namespaces: its own pid 1, so neither the server's nor the zygote's processes nor
  ``/proc/1/environ`` of anything outside are visible; its own job folder bound at ``/sandbox`` and an empty
  read-only folder over ``/.jobs``, so never the folder of the job before or after it; a fresh size-limited
  tmpfs at ``/tmp`` (the working
  directory), a fresh small one at ``/dev/shm``, a fresh ``/proc``; SysV IPC objects die with the job;
- no capabilities at all (bounding, ambient, permitted, effective, inheritable all empty; no_new_privs);
- rlimits set just before exec: CPU seconds (soft = hard, so the kernel kills), address space, file size,
  process count (counted per sandbox user namespace), no core files;
- when the program exits, everything it left behind in its pid namespace is killed before the result is
  reported; on the wall-clock limit the namespace's init is SIGKILLed, which ends every process in it;
- stdout and stderr read with a byte cap: past it the job is killed (``output_exceeded``).

Why a zygote: a fresh ``bwrap`` per execution (the previous design) cost ~6 ms of CPU and ~14 ms of latency
per program, more than half of what a tiny Python program costs itself (~12 ms here). The per-execution work
above costs ~0.4 ms of CPU with the C zygote (``zygote.c``, compiled once with the host's C compiler) and ~2.5 ms
with the Python fallback (``zygote.py``); ``SandboxConfig.zygote`` chooses. Not shared between jobs of one
worker: processes, /tmp, /dev/shm, /proc, IPC, the job folder (emptied by the server). Shared: the worker's uid,
its (empty) network namespace and its hostname.

Not isolated: the CPU time of other sandboxes (no cgroups: two jobs share the cores), kernel attack surface
(no seccomp filter), and the same-process test harness (see ``harness.py``). ``isolation="none"`` keeps only the
uid switch, rlimits, the process-group kill and a clean environment: it is for machines without bwrap, and the
server says so on every start.

Setup failures (the zygote cannot start, or a job's namespaces or mounts fail, or exec fails) come back as
``sandbox_failure`` so they are never mistaken for a wrong answer: the zygote reports them on its control
socket, apart from anything the program prints. ``isolation="none"`` uses a ``/bin/sh`` launcher that first
prints a per-run random line on stdout and then execs prlimit and the program; a run whose stdout does not
start with that line never reached the program.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import fcntl
import hashlib
import logging
import math
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

from ..errors import MathfirstError
from .config import SandboxConfig

log = logging.getLogger(__name__)

# /etc entries the loader, Python and g++ read; everything else in /etc stays invisible.
ETC_ENTRIES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "passwd", "group",
               "nsswitch.conf", "python3", "python3.11", "python3.12", "python3.13")
# Merged-/usr systems: these are symlinks into /usr; older layouts get them bound instead.
ROOT_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
SANDBOX_ROOT = "/sandbox"
SHM_JOB_FILES = "/dev/shm"
SHM_JOB_FILES_MIN_FREE = 1 << 30
"""job_files_root uses SHM_JOB_FILES only with this much free (a container's default 64 MiB is too small)."""
JOBS_IN_SANDBOX = "/.jobs"
"""Where a worker's job folders (one per lane) are bound in its sandbox; each execution binds its own at
SANDBOX_ROOT and covers this folder with EMPTY_IN_SANDBOX, so a program never sees the folder of another job."""
EMPTY_IN_SANDBOX = "/.empty"
LANES = 2
"""Jobs a bwrap worker holds at once: one executes, the next is already handed to the zygote (its files written,
its message queued), so the sandbox starts it the moment the first ends instead of waiting for the server."""
SHM_SIZE_MB = 16
BUILD_DIR = "build"
ZYGOTE_START_TIMEOUT_S = 30.0
"""The one job sub-folder a program may write (C++ build output), only while compiling."""
ZYGOTE_SOURCE = (Path(__file__).parent / "zygote.py").read_text(encoding="utf-8")


def _without_docstring(source: str) -> str:
    """``source`` less its module docstring: documentation, not code, and every job's pid 1 shows its command line."""
    first = ast.parse(source).body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return "".join(source.splitlines(keepends=True)[first.end_lineno:])
    return source


ZYGOTE_CODE = _without_docstring(ZYGOTE_SOURCE)
"""What the Python zygote runs (``python3 -I -S -c ZYGOTE_CODE``)."""
ZYGOTE_C = Path(__file__).parent / "zygote.c"
ZYGOTE_IN_SANDBOX = "/.zygote"
RLIMIT_ORDER = ("cpu", "as", "fsize", "nproc", "core")  # as zygote.c and zygote.py read them
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

    def rlimits(self) -> dict[str, int]:
        """name -> soft = hard value, as the zygote sets them (``prlimit_args`` says the same to prlimit)."""
        cpu = max(1, math.ceil(self.cpu_s))  # RLIMIT_CPU is whole seconds
        return {"cpu": cpu, "as": self.memory_mb << 20, "fsize": self.file_size_mb << 20,
                "nproc": self.max_processes, "core": 0}

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
    build_opened: bool = False
    """``make_writable`` was called on it (its ownership and mode need resetting afterwards)."""
    lane: int = 0
    """Which of its worker's job folders this is (``Isolation.lanes``)."""


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _lock_dir() -> Path:
    path = Path(tempfile.gettempdir()) / f"mathfirst-sandbox-uids-{os.geteuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def acquire_slots(cfg: SandboxConfig, count: int) -> list[Slot]:
    """Reserve ``count`` worker identities. As root: free ``mfsbx*`` users, each held by an flock; otherwise the
    current user for all (its processes are still counted per sandbox by the kernel's namespaced NPROC)."""
    base = Path(tempfile.mkdtemp(prefix="mfsbx-", dir=job_files_root()))
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


def job_files_root() -> str | None:
    """Where the workers' job folders go: ``/dev/shm`` when it is a RAM filesystem with room for C++ builds (every
    job creates, writes and deletes its files there: on a disk filesystem with a journal that cost ~0.1 ms of the
    server's CPU per job), else the default temporary folder (None)."""
    try:
        info = os.statvfs(SHM_JOB_FILES)
    except OSError:
        return None
    roomy = info.f_bavail * info.f_frsize >= SHM_JOB_FILES_MIN_FREE
    return SHM_JOB_FILES if roomy and os.access(SHM_JOB_FILES, os.W_OK | os.X_OK) else None


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
    lanes = 1
    """Jobs one worker may hold at once, each with a job folder of its own; executions still run one at a time
    per worker (``BwrapIsolation``: the next waits in the zygote)."""

    def __init__(self, cfg: SandboxConfig) -> None:
        self.cfg = cfg

    def new_job_dir(self, slot: Slot, lane: int = 0) -> JobDir:
        host = slot.dir / "job"
        shutil.rmtree(host, ignore_errors=True)
        host.mkdir(mode=0o755)
        return JobDir(host=host, root=self._root_for(host))

    def release_job_dir(self, job_dir: JobDir) -> None:
        """After the job: its files go."""
        shutil.rmtree(job_dir.host, ignore_errors=True)

    async def close(self) -> None:
        """Stop whatever the isolation keeps running between jobs (nothing here)."""

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
        self.release_job_dir(job_dir)
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
    """One long-lived bubblewrap sandbox per worker (the zygote) and fresh pid, mount and ipc namespaces, ``/tmp``,
    ``/dev/shm``, ``/proc`` and rlimits per execution (see the module docstring for what it covers)."""

    name = "bwrap"
    signal_exit_codes = True
    lanes = LANES

    def __init__(self, cfg: SandboxConfig) -> None:
        super().__init__(cfg)
        bwrap = shutil.which(cfg.bwrap)
        if bwrap is None:
            raise SandboxUnavailableError(f"bubblewrap ({cfg.bwrap}) is not installed",
                                          hint="apt-get install bubblewrap, or run sandbox/setup_system.sh")
        for tool in (cfg.python,):
            if not os.access(tool, os.X_OK):
                raise SandboxUnavailableError(f"{tool} is missing", hint="run sandbox/setup_system.sh")
        self.bwrap_path = bwrap
        self._system_args = self._system_binds()
        self._zygotes: dict[int, Zygote] = {}
        self._starting: dict[int, asyncio.Lock] = {}
        """Per worker: its lanes find a dead zygote together, and only one of them starts the next."""
        self._clean_job_dirs: set[Path] = set()
        self._specs: dict[tuple, bytes] = {}
        """Job folders that release_job_dir emptied (new_job_dir need not empty them again)."""
        self.zygote_binary = compiled_zygote() if cfg.zygote != "python" else None
        if self.zygote_binary is None and cfg.zygote == "c":
            raise SandboxUnavailableError("the C zygote could not be compiled (no cc/gcc?)",
                                          hint="apt-get install gcc, or set the sandbox zygote to 'python'")
        if self.zygote_binary is None and cfg.zygote == "auto":
            log.warning("sandbox: no C compiler for zygote.c; using the Python zygote (~2 ms more CPU per run)")

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

    # --- job folders: one per lane of a worker, bound once into its zygote, emptied between jobs ----------------
    @staticmethod
    def _jobs_dir(slot: Slot) -> Path:
        return slot.dir / "jobs"

    def new_job_dir(self, slot: Slot, lane: int = 0) -> JobDir:
        host = self._jobs_dir(slot) / str(lane)
        if host in self._clean_job_dirs:  # emptied by release_job_dir and untouched since
            self._clean_job_dirs.discard(host)
        elif host.is_dir():
            _empty(str(host))
            _reset_build_dir(host / BUILD_DIR)
        else:
            host.mkdir(mode=0o755, parents=True)
            (host / BUILD_DIR).mkdir(mode=0o755)
        return JobDir(host=host, root=SANDBOX_ROOT, lane=lane)

    def release_job_dir(self, job_dir: JobDir) -> None:
        _empty(str(job_dir.host))
        if job_dir.build_opened:  # it was made writable for a compile
            _reset_build_dir(job_dir.host / BUILD_DIR)
        self._clean_job_dirs.add(job_dir.host)

    def make_writable(self, slot: Slot, job_dir: JobDir, name: str) -> str:
        if name != BUILD_DIR:
            raise ValueError(f"only {BUILD_DIR!r} can be made writable under bwrap, not {name!r}")
        job_dir.build_opened = True
        path = job_dir.host / name
        path.chmod(0o700)
        if slot.uid is not None:
            os.chown(path, slot.uid, slot.gid)
        job_dir.writable.append(name)
        return f"{job_dir.root}/{name}"

    # --- running -----------------------------------------------------------------------------------------------
    def zygote_command(self, slot: Slot, control_fd: int) -> list[str]:
        """bwrap around the zygote: everything that is the same for every job of this worker."""
        jobs = self._jobs_dir(slot)
        for lane in range(self.lanes):
            if not (jobs / str(lane)).is_dir():
                self.release_job_dir(self.new_job_dir(slot, lane))
        builds = [arg for lane in range(self.lanes)
                  for arg in ("--bind", str(jobs / str(lane) / BUILD_DIR), f"{JOBS_IN_SANDBOX}/{lane}/{BUILD_DIR}")]
        return [self.bwrap_path, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
                "--new-session", "--hostname", "sandbox",
                # The zygote needs these two in its own user namespace to build each job's namespaces and to
                # drop every capability in the program (bounding set included) before exec.
                "--cap-drop", "ALL", "--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_SETPCAP",
                *self._system_args, "--proc", "/proc", "--dev", "/dev",
                "--size", str(1 << 20), "--tmpfs", "/tmp",  # each job mounts its own /tmp and /dev/shm over these
                # every lane's job folder, read-only, and its build folder (read-only per job unless compiling);
                # each job binds its own folder at SANDBOX_ROOT and detaches JOBS_IN_SANDBOX (zygote.c)
                "--ro-bind", str(jobs), JOBS_IN_SANDBOX, *builds, "--dir", SANDBOX_ROOT, "--dir", EMPTY_IN_SANDBOX,
                # The root is bwrap's own tmpfs: read-only, or / and /etc would be unlimited scratch space.
                *(["--ro-bind", str(self.zygote_binary), ZYGOTE_IN_SANDBOX] if self.zygote_binary else []),
                "--remount-ro", "/", "--remount-ro", "/dev", "--chdir", "/", "--clearenv", "--",
                *([ZYGOTE_IN_SANDBOX] if self.zygote_binary else [self.cfg.python, "-I", "-S", "-c", ZYGOTE_CODE]),
                str(control_fd)]

    async def run(self, slot: Slot, job_dir: JobDir, argv: list[str], stdin: bytes, limits: Limits) -> RawRun:
        readonly = BUILD_DIR not in job_dir.writable
        key = (tuple(argv), readonly, job_dir.lane, limits.cpu_s, limits.memory_mb, limits.file_size_mb,
               limits.max_processes)
        spec = self._specs.get(key)
        if spec is None:  # the same few messages recur (one per program kind, lane and limits): encoded once each
            bind = (f"{JOBS_IN_SANDBOX}/{job_dir.lane}", SANDBOX_ROOT, EMPTY_IN_SANDBOX, JOBS_IN_SANDBOX)
            spec = encode_job(argv, SANDBOX_ENV, "/tmp", limits.rlimits(), self.cfg.tmp_size_mb << 20,
                              SHM_SIZE_MB << 20, [f"{SANDBOX_ROOT}/{BUILD_DIR}"] if readonly else [], bind)
            if len(self._specs) >= 64:
                self._specs.clear()
            self._specs[key] = spec
        for attempt in range(2):  # a zygote found dead before it took the job is replaced once: nothing ran
            zygote = await self._zygote(slot)
            if isinstance(zygote, str):
                return RawRun(exit_code=None, sandbox_failure=f"the sandbox did not start: {zygote}")
            try:
                return await zygote.run(spec, stdin, limits)
            except _Refused as exc:
                if attempt:
                    return await zygote.died(RawRun(exit_code=None), f"could not hand it the job: {exc}")
                await zygote.stop()
        raise AssertionError("unreachable")

    async def _zygote(self, slot: Slot) -> Zygote | str:
        """The worker's live zygote, started if needed; or why it did not start."""
        lock = self._starting.setdefault(slot.index, asyncio.Lock())
        async with lock:
            zygote = self._zygotes.get(slot.index)
            if zygote is None or not zygote.alive:
                zygote = self._zygotes[slot.index] = Zygote(self, slot)
                failure = await zygote.start()
                if failure:
                    return failure
            return zygote

    async def close(self) -> None:
        zygotes, self._zygotes = list(self._zygotes.values()), {}
        await asyncio.gather(*(z.stop() for z in zygotes), return_exceptions=True)


def encode_job(argv: list[str], env: dict[str, str], cwd: str, rlimits: dict[str, int], tmp_bytes: int,
               shm_bytes: int, readonly: list[str], bind: tuple[str, str, str, str] = ("", "", "", "")) -> bytes:
    """A job message for the zygote (zygote.py / zygote.c): NUL-separated fields, lists counted. ``bind``: the job
    folder's source and target, then an empty folder and the folder it covers (all empty: no binds)."""
    fields = ["job", *bind, cwd, str(tmp_bytes), str(shm_bytes), *(str(rlimits[name]) for name in RLIMIT_ORDER)]
    for items in (readonly, [f"{k}={v}" for k, v in env.items()], argv):
        fields += [str(len(items)), *items]
    if any("\0" in field for field in fields):
        raise ValueError("a NUL byte in the program's arguments or environment")
    return "\0".join(fields).encode()


def compiled_zygote() -> Path | None:
    """zygote.c compiled with the host's C compiler, cached by source hash in a folder only we can write
    (readable by the sandbox users, whose bwrap binds it); None when no compiler works."""
    try:
        source = ZYGOTE_C.read_bytes()
    except OSError:
        return None  # an install without the C source
    folder = Path(tempfile.gettempdir()) / f"mathfirst-sandbox-{os.geteuid()}"
    binary = folder / f"zygote-{hashlib.sha256(source).hexdigest()[:16]}"
    try:
        folder.mkdir(mode=0o755, exist_ok=True)
        info = os.lstat(folder)
        if not (os.path.isdir(folder) and not folder.is_symlink() and info.st_uid == os.geteuid()
                and info.st_mode & 0o022 == 0):
            return None  # not ours, or others may write there: never run a binary from it
        if binary.exists():
            return binary
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            return None
        scratch = folder / f".{binary.name}.{os.getpid()}"
        done = subprocess.run([compiler, "-O2", "-o", str(scratch), str(ZYGOTE_C)], capture_output=True,
                              timeout=120, check=False)
        if done.returncode != 0:
            log.warning("sandbox: zygote.c did not compile: %s", done.stderr.decode(errors="replace")[-500:])
            scratch.unlink(missing_ok=True)
            return None
        scratch.chmod(0o755)
        os.replace(scratch, binary)
        return binary
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("sandbox: could not build the C zygote: %s", exc)
        return None


def _empty(folder: str, top: bool = True) -> None:
    """Remove everything inside ``folder`` (the top folder's build folder stays, emptied)."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if top and entry.name == BUILD_DIR:
                    _empty(entry.path, top=False)
                else:
                    shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _reset_build_dir(build: Path) -> None:
    """The build folder back to read-only for the worker's uid (owned by us, 0755) after a compile."""
    info = os.stat(build)
    if info.st_uid != os.geteuid() or info.st_mode & 0o777 != 0o755:
        os.chown(build, os.geteuid(), os.getegid())
        os.chmod(build, 0o755)


class _Refused(Exception):
    """The zygote could not even be handed the job (it was already gone): nothing ran."""


@dataclass
class _Handed:
    """One execution handed to the zygote: its reply, and what to do once it starts (the executions handed before
    it have all ended: the zygote runs them one at a time, in order)."""

    reply: asyncio.Future
    on_start: Callable[[], None]
    started: bool = False


class Zygote:
    """The server's side of one worker's zygote (``zygote.py``): start it, hand it jobs, kill jobs, stop it.
    Executions are numbered as handed over (the zygote counts the same way); ``kill`` and replies name them."""

    def __init__(self, isolation: BwrapIsolation, slot: Slot) -> None:
        self.isolation = isolation
        self.slot = slot
        self.proc: asyncio.subprocess.Process | None = None
        self.sock: socket.socket | None = None
        self.alive = False
        self._ready: asyncio.Future | None = None
        self._handed = 0
        self._inflight: dict[int, _Handed] = {}
        """Handed over and not answered yet, in the order handed (dicts keep it): the first one runs."""

    async def start(self) -> str | None:
        """None once the zygote answers, else why it did not start."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.isolation.zygote_command(self.slot, theirs.fileno()), pass_fds=[theirs.fileno()],
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, env={}, cwd="/", process_group=0, **self.slot.spawn_kwargs())
        except OSError as exc:
            ours.close()
            return f"could not start bwrap: {exc}"
        finally:
            theirs.close()
        ours.setblocking(False)
        self.sock = ours
        self.alive = True
        loop = asyncio.get_running_loop()
        ready = self._ready = loop.create_future()
        loop.add_reader(ours.fileno(), self._on_reply)  # for the zygote's whole life
        done, _ = await asyncio.wait({ready}, timeout=ZYGOTE_START_TIMEOUT_S)
        self._ready = None
        if done and ready.result() == b"ready":
            return None
        why = "no answer within %g s" % ZYGOTE_START_TIMEOUT_S if not done else "it exited"
        detail = ""
        await self.stop()
        if self.proc.stderr is not None:
            with contextlib.suppress(BaseException):
                detail = (await asyncio.wait_for(self.proc.stderr.read(4096), 2.0)).decode(errors="replace")
        return f"{why}: {detail.strip()[-300:]}" if detail.strip() else why

    async def run(self, spec: bytes, stdin: bytes, limits: Limits) -> RawRun:
        """Hand over one execution and wait for its end; it starts once those handed before it have ended, and
        its wall clock runs from then. Raises ``_Refused`` if the zygote is already gone."""
        raw = RawRun(exit_code=None)
        loop = asyncio.get_running_loop()
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            socket.send_fds(self.sock, [spec], [in_r, out_w, err_w])
        except OSError as exc:
            for fd in (in_w, out_r, err_r):
                os.close(fd)
            raise _Refused(str(exc)) from None
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        self._handed += 1
        number = self._handed
        killed = False
        started = 0.0
        timer: asyncio.TimerHandle | None = None

        def kill() -> None:
            nonlocal killed
            if not killed and not reply.done():
                killed = True
                with contextlib.suppress(OSError):
                    self.sock.send(b"kill\0%d" % number)

        def exceeded() -> None:
            raw.output_exceeded = True
            kill()

        def on_start() -> None:  # the executions before it have ended: the zygote starts it now
            nonlocal started, timer
            started = time.perf_counter()
            timer = loop.call_later(limits.wall_s, wall_limit)

        def wall_limit() -> None:  # the program ran too long: kill it, and give the zygote 5 s to answer
            nonlocal timer
            raw.wall_killed = True
            kill()
            timer = loop.call_later(5.0, no_answer)

        def no_answer() -> None:
            if not reply.done():
                reply.set_result(_NO_ANSWER)

        reply: asyncio.Future = loop.create_future()
        handed = self._inflight[number] = _Handed(reply, on_start)
        if next(iter(self._inflight)) == number:
            handed.started = True
            on_start()
        out = _FdReader(loop, out_r, limits.max_output_bytes, exceeded)
        err = _FdReader(loop, err_r, limits.max_output_bytes, exceeded)
        feeder = _FdWriter(loop, in_w, stdin) if stdin else None
        if feeder is None:
            os.close(in_w)  # an empty stdin: EOF at once
        try:
            message = await reply
            if message is _NO_ANSWER:  # the zygote does not answer: end it and everything under it
                return await self.died(raw, "its launcher did not answer a kill within 5 s", "the sandbox failed")
            if message is None:
                return await self.died(raw, "its launcher exited while the job ran", "the sandbox failed")
            code, _, setup_error = message.partition(b"\0")
            raw.exit_code = int(code)
            if setup_error:
                raw.sandbox_failure = f"the sandbox did not start: {setup_error.decode(errors='replace')}"
            if not (out.done.done() and err.done.done()):
                await asyncio.wait({out.done, err.done}, timeout=2.0)
        except asyncio.CancelledError:
            raw.cancelled = True
            kill()
            with contextlib.suppress(BaseException):
                await asyncio.shield(asyncio.wait({reply}, timeout=5.0))
            if not reply.done():
                await asyncio.shield(self.stop())
            raise
        finally:
            if timer is not None:
                timer.cancel()
            raw.wall_s = time.perf_counter() - started if started else 0.0
            if not reply.done():
                reply.cancel()
            self._forget(number)
            raw.stdout, raw.stderr = out.close(), err.close()
            if feeder is not None:
                feeder.close()
        return raw

    def _forget(self, number: int) -> None:
        """Execution ``number`` is answered (or given up): the first one still handed, if any, runs now."""
        if self._inflight.pop(number, None) is None or not self._inflight:
            return
        first = next(iter(self._inflight.values()))
        if not first.started:
            first.started = True
            first.on_start()

    def _on_reply(self) -> None:
        try:
            message = self.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            message = b""
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(message or None)
        elif message:
            number, _, rest = message.partition(b"\0")
            handed = self._inflight.get(int(number)) if number.isdigit() else None
            if handed is not None and not handed.reply.done():
                handed.reply.set_result(rest)
            if handed is not None:
                self._forget(int(number))
        if not message:  # the zygote is gone, and with it every execution handed to it
            self.alive = False
            self._unwatch()
            for handed in self._inflight.values():
                if not handed.reply.done():
                    handed.reply.set_result(None)

    def _unwatch(self) -> None:
        if self.sock is not None and self.sock.fileno() >= 0:
            with contextlib.suppress(ValueError, OSError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self.sock.fileno())

    async def died(self, raw: RawRun, why: str, what: str = "the sandbox did not start") -> RawRun:
        """End the zygote and say why in ``raw``, with the tail of its stderr."""
        await self.stop()
        detail = ""
        if self.proc is not None and self.proc.stderr is not None:
            with contextlib.suppress(BaseException):
                detail = (await asyncio.wait_for(self.proc.stderr.read(4096), 2.0)).decode(errors="replace")
        raw.sandbox_failure = f"{what}: {why}" + (f": {detail.strip()[-300:]}" if detail else "")
        return raw

    async def stop(self) -> None:
        """Close the socket (the zygote exits) and end the whole sandbox."""
        self.alive = False
        if self.sock is not None:
            self._unwatch()
            with contextlib.suppress(OSError):
                self.sock.close()
        if self.proc is not None:
            _kill_group(self.proc.pid)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self.proc.wait(), 5.0)
        for handed in self._inflight.values():
            if not handed.reply.done():
                handed.reply.set_result(None)


_NO_ANSWER = object()
"""Set as the reply when the zygote does not answer a kill within 5 s."""


class _FdReader:
    """Reads one pipe into memory with the event loop, up to ``limit`` bytes (``on_exceed`` past it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, limit: int, on_exceed) -> None:
        self.loop, self.fd, self.limit, self.on_exceed = loop, fd, limit, on_exceed
        self.buf = bytearray()
        self.done: asyncio.Future = loop.create_future()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.loop.remove_reader(self.fd)
            if not self.done.done():
                self.done.set_result(None)
            return
        if len(self.buf) <= self.limit:
            self.buf += chunk[: self.limit + 1 - len(self.buf)]
            if len(self.buf) > self.limit:
                self.on_exceed()

    def close(self) -> bytes:
        if not self.done.done():
            self.loop.remove_reader(self.fd)
            self.done.cancel()
        os.close(self.fd)
        return bytes(self.buf[: self.limit])


class _FdWriter:
    """Writes ``data`` to a pipe with the event loop, then closes it (the program's stdin; EOF after it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, data: bytes) -> None:
        self.loop, self.fd, self.data = loop, fd, memoryview(data)
        self.open = True
        os.set_blocking(fd, False)
        self._write()
        if self.open:
            loop.add_writer(fd, self._write)

    def _write(self) -> None:
        try:
            while self.data:
                self.data = self.data[os.write(self.fd, self.data):]
        except BlockingIOError:
            return
        except OSError:
            pass  # the program did not read all of its stdin: its business
        self.close()

    def close(self) -> None:
        if self.open:
            self.open = False
            self.loop.remove_writer(self.fd)
            os.close(self.fd)


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

    def new_job_dir(self, slot: Slot, lane: int = 0) -> JobDir:
        job_dir = super().new_job_dir(slot, lane)
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
