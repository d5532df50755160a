"""Reward services as their own Slurm jobs, and the reward router that a rollout task scores its shard with.

A stage's mix decides which services it needs (:func:`services_needed`):

    sandbox   code in ``data.mix`` and no ``reward.sandbox.url``: ``sandbox serve`` on ``reward.sandbox.workers``
              CPUs (:class:`SandboxServiceJob`), address in ``RunPaths.sandbox_address``
    judge     ``reward.judge.backend`` hf or vllm: an OpenAI-compatible server (:class:`JudgeServiceJob`): the
              HF-backed ``services.judge_server`` (CPU) for hf, ``vllm serve MODEL`` on one GPU for vllm;
              address in ``RunPaths.service_address("judge")`` (``records.ServiceRecord``)

The driver holds them for the stage (:func:`stage_services`, profile executor ``slurm`` only):

    with stage_services(paths, cfg, profile) as services:     # submits or re-attaches, waits for the addresses
        ... SlurmRollouts(ctx, launcher, services) ...          # services.ensure() before every rollout array

* Sizing: ``jobspec.job_spec("sandbox" | "judge", cfg, profile)``.
* Preemption: the jobs keep submitit's USR1 handler (``MathfirstJob``), which requeues them; a requeued service
  writes its new address. One that is gone for good (``scancel``, failed) is resubmitted by the next ``ensure()``.
* End: cancelled when the stage ends (final, or failed); left running when the driver itself is stopped for a
  requeue (``DriverStopped``): the requeued driver re-attaches to them through their manifest entries. A driver
  gone for good without cancelling them (``scancel``, time limit, lost node) is noticed by the jobs themselves:
  ``ensure()`` records the driver's job id as their owner, and each ends itself once that job has ended
  (``service_owner``, within ~10 s of a scancel).
* Outage: a rollout task whose judge or sandbox cannot be reached writes nothing (:class:`ServiceGuard` raises
  before the rewards are written): its shard stays generated but unscored, ``SlurmRollouts`` prints a warning,
  calls ``ensure()`` (restarting the dead service) and reruns the task, which only scores. The samples of an
  unreachable service are verdict ``error`` (the clients' contract), never a 0 in the training batch.

With the ``local`` executor no service job is started: each rollout task starts its own sandbox server and loads
the judge in-process, as a colocated run does.

Simplification: the sandbox job runs on the host Python (not in the profile's container, nor the sandbox image).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Iterator

from .. import preemption
from ..config import StageConfig
from ..errors import RunDirError
from ..manifest import Manifest
from ..paths import RunPaths
from ..records import JobEntry, ServiceRecord
from . import service_owner, slurm_state
from .executors import make_executor
from .jobbase import MathfirstJob, run_dir_of
from .jobspec import job_name, job_spec
from .launcher import DriverStopped
from .profiles import ClusterProfile

JUDGE_JOB_BACKENDS = ("hf", "vllm")
"""``reward.judge.backend`` values served by a judge job of the stage (``openai`` names a running server)."""
SERVICE_START_TIMEOUT_S = 900.0
"""How long the driver waits for a service's address before failing the stage (queue wait included)."""


def services_needed(cfg: StageConfig) -> list[str]:
    """The reward services this stage's mix needs as jobs (none for SFT)."""
    reward = getattr(cfg, "reward", None)
    if reward is None:
        return []
    out = []
    if "code" in cfg.data.mix and reward.sandbox.url is None:  # type: ignore[attr-defined]
        out.append("sandbox")
    if reward.judge.backend in JUDGE_JOB_BACKENDS:  # openai: a server that runs already, at reward.judge.url
        out.append("judge")
    return out


def healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def service_address(paths: RunPaths, kind: str) -> ServiceRecord | None:
    """The recorded address of a service (the sandbox's own address file read as a ServiceRecord)."""
    if kind == "sandbox":
        from ..sandbox.launch import read_address
        info = read_address(paths.root)
        if not info or "url" not in info:
            return None
        return ServiceRecord("sandbox", info["url"], info.get("host", ""), int(info.get("port", 0)),
                             int(info.get("pid", 0)), info.get("slurm_job_id"))
    return ServiceRecord.read(paths.service_address(kind))


# ---- the service jobs -------------------------------------------------------------------------------------------

class ServiceJob(MathfirstJob):
    """A reward service job: serves until stopped, and ends itself once its owning driver is gone for good
    (``service_owner``: a ``scancel``-ed driver cannot cancel it, a requeued one must find it running)."""

    def setup(self) -> None:
        service_owner.start_watch()


class SandboxServiceJob(ServiceJob):
    """``sandbox serve`` on all interfaces, any free port, recording its address in the run dir until stopped."""

    def __init__(self, run_dir: str, workers: int, isolation: str) -> None:
        self.run_dir, self.workers, self.isolation = run_dir_of(run_dir), workers, isolation

    def run(self) -> str:
        from ..sandbox.config import SandboxConfig
        from ..sandbox.launch import clear_address, record_address
        from ..sandbox.server import serve_forever

        cfg = SandboxConfig(host="0.0.0.0", port=0, workers=self.workers, isolation=self.isolation)
        try:
            asyncio.run(serve_forever(cfg, on_started=lambda server: print(
                f"[sandbox] serving on {record_address(self.run_dir, cfg, server.port)['url']}", flush=True)))
        finally:
            clear_address(self.run_dir, os.getpid())
        return "stopped"


class JudgeServiceJob(ServiceJob):
    """The judge model behind an OpenAI-compatible server: HF on CPU (``services.judge_server``), or
    ``vllm serve`` (GPU) whose address is recorded once its ``/health`` answers."""

    def __init__(self, run_dir: str, backend: str, model_path: str) -> None:
        self.run_dir, self.backend, self.model_path = run_dir_of(run_dir), backend, model_path

    def run(self) -> str:
        if self.backend == "vllm":
            return vllm_serve(self.run_dir, self.model_path)
        from ..rewards.judge import HfJudgeBackend
        from ..services.judge_server import serve
        serve(HfJudgeBackend.from_path(self.model_path), "0.0.0.0", 0, self.run_dir)
        return "stopped"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def vllm_serve(run_dir: str, model_path: str, start_timeout_s: float = SERVICE_START_TIMEOUT_S) -> str:
    """``vllm serve MODEL --served-model-name judge`` on a free port; records the address once healthy, forwards
    SIGTERM (scancel, preemption) to the server. Untested here: needs a GPU node with vLLM installed."""
    import signal

    port, host = _free_port(), socket.gethostname()
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
                             "--served-model-name", "judge", "--host", "0.0.0.0", "--port", str(port)])
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + start_timeout_s
    while not healthy(url) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(2.0)
    path = RunPaths(run_dir).service_address("judge")
    if proc.poll() is None:
        ServiceRecord("judge", url, host, port, os.getpid(), os.environ.get("SLURM_JOB_ID")).write(path)
    code = proc.wait()
    rec = ServiceRecord.read(path)
    if rec is not None and rec.pid == os.getpid():
        path.unlink(missing_ok=True)
    return f"vllm exited {code}"


def service_job(kind: str, paths: RunPaths, cfg: StageConfig) -> MathfirstJob:
    reward = cfg.reward  # type: ignore[attr-defined]
    if kind == "sandbox":
        return SandboxServiceJob(str(paths.root), reward.sandbox.workers, reward.sandbox.isolation)
    if not reward.judge.model_path:
        raise RunDirError(f"stage {cfg.stage}: reward.judge.backend={reward.judge.backend} needs "
                          "reward.judge.model_path", hint="set it to a model folder every node can read")
    return JudgeServiceJob(str(paths.root), reward.judge.backend, reward.judge.model_path)


# ---- the driver's side ------------------------------------------------------------------------------------------

class StageServices:
    """The service jobs of one stage: submit or re-attach (:meth:`ensure`), cancel (:meth:`cancel`)."""

    def __init__(self, paths: RunPaths, cfg: StageConfig, profile: ClusterProfile, poll_s: float = 1.0,
                 start_timeout_s: float = SERVICE_START_TIMEOUT_S,
                 submit: Callable[[str], str] | None = None) -> None:
        self.paths, self.cfg, self.profile = paths, cfg, profile
        self.poll_s, self.start_timeout_s = poll_s, start_timeout_s
        self.kinds = services_needed(cfg) if profile.executor == "slurm" else []
        self.manifest = Manifest(paths)
        self._submit = submit or self._sbatch

    def _key(self, kind: str) -> dict[str, Any]:
        return {"kind": "service", "service": kind, "stage": self.cfg.stage}

    def jobs(self) -> dict[str, str]:
        """kind -> newest recorded job id of this stage's services."""
        out: dict[str, tuple[float, str]] = {}
        for job_id, entry in self.manifest.jobs().items():
            if entry.kind == "service" and entry.stage == self.cfg.stage:
                kind = entry.key.get("service", "")
                if kind not in out or entry.submitted_unix >= out[kind][0]:
                    out[kind] = (entry.submitted_unix, job_id)
        return {kind: job_id for kind, (_, job_id) in out.items()}

    def _sbatch(self, kind: str) -> str:
        folder = self.paths.job_logs(self.cfg.stage)
        spec = job_spec(kind, self.cfg, self.profile, name=job_name(self.cfg.stage, kind))  # type: ignore[arg-type]
        job = make_executor("slurm", folder, spec).submit(service_job(kind, self.paths, self.cfg))
        self.manifest.record_job(str(job.job_id), JobEntry("service", self.cfg.stage, self._key(kind), "slurm",
                                                           str(folder)))
        return str(job.job_id)

    def ensure(self) -> dict[str, str]:
        """Every needed service running and answering; kind -> URL. Dead ones are resubmitted (with a message)."""
        if not self.kinds:
            return {}
        jobs = self.jobs()
        states = slurm_state.job_states(list(jobs.values())) if jobs else {}
        for kind in self.kinds:
            job_id = jobs.get(kind)
            if job_id is None or not slurm_state.is_alive(states.get(job_id, "")):
                if job_id is not None:
                    print(f"[driver] {self.cfg.stage}: {kind} service job {job_id} is "
                          f"{states.get(job_id, 'gone').lower()}: submitting a new one", file=sys.stderr, flush=True)
                jobs[kind] = self._submit(kind)
        self._claim([jobs[kind] for kind in self.kinds])
        return {kind: self._wait_address(kind, jobs[kind]) for kind in self.kinds}

    def _claim(self, job_ids: list[str]) -> None:
        """Record this driver as the owner of those service jobs (a resumed driver takes them over); they end
        themselves once it is gone for good. Nothing when the caller is no Slurm job (a test, a shell)."""
        owner = os.environ.get("SLURM_JOB_ID")
        if owner:
            for job_id in job_ids:
                service_owner.write_owner(service_owner.job_folder(self.paths.job_logs(self.cfg.stage), job_id),
                                          owner)

    def _wait_address(self, kind: str, job_id: str) -> str:
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            rec = service_address(self.paths, kind)
            if rec is not None and str(rec.slurm_job_id) == str(job_id) and healthy(rec.url):
                return rec.url
            if preemption.requested():
                raise DriverStopped(preemption.reason() or "stop")
            state = slurm_state.job_states([job_id]).get(job_id, "")
            if state and not slurm_state.is_alive(state) and state != slurm_state.UNKNOWN:
                raise RunDirError(f"{kind} service job {job_id} of stage {self.cfg.stage} ended ({state}) "
                                  "before answering", hint=f"see its log under {self.paths.submitit_dir}")
            if time.monotonic() > deadline:
                raise RunDirError(f"{kind} service job {job_id} did not answer within {self.start_timeout_s:.0f} s",
                                  hint="is the queue full? see squeue and the job's log")
            time.sleep(self.poll_s)

    def cancel(self) -> list[str]:
        """scancel this stage's service jobs that are still pending or running."""
        jobs = [j for j, e in self.manifest.jobs().items() if e.kind == "service" and e.stage == self.cfg.stage]
        states = slurm_state.job_states(jobs) if jobs else {}
        alive = [j for j in jobs if slurm_state.is_alive(states.get(j, ""))]
        slurm_state.cancel(alive)
        return alive


@contextlib.contextmanager
def stage_services(paths: RunPaths, cfg: StageConfig, profile: ClusterProfile,
                   services: StageServices | None = None) -> Iterator[StageServices]:
    """The stage's services for the ``with`` body: cancelled at its end unless the driver is stopped for requeue."""
    services = services or StageServices(paths, cfg, profile)
    services.ensure()
    try:
        yield services
    except DriverStopped:
        raise  # the requeued driver re-attaches to them
    except BaseException:
        services.cancel()
        raise
    services.cancel()


# ---- the rollout task's side ------------------------------------------------------------------------------------

class ServiceUnavailable(RuntimeError):
    """A reward service could not be reached while scoring a shard: nothing is written, the driver retries."""


def _outage(reason: str) -> bool:
    return "JudgeUnavailable" in reason or (reason.startswith("sandbox: sandbox server") and "unavailable" in reason)


class ServiceGuard:
    """A reward router that raises :class:`ServiceUnavailable` instead of returning the 'error' verdicts of an
    unreachable service, so the shard is not written as scored (``loop.score_shard`` writes after scoring)."""

    def __init__(self, router: Any) -> None:
        self.router = router

    def score_batch(self, problems: Any, responses: Any) -> list:
        results = self.router.score_batch(problems, responses)
        outages = [r.reason for r in results if r.verdict == "error" and _outage(r.reason)]
        if outages:
            raise ServiceUnavailable(f"{len(outages)} of {len(results)} samples could not be scored: {outages[0]}")
        return results


@contextlib.contextmanager
def task_router(ctx: Any) -> Iterator[ServiceGuard]:
    """The reward router of a rollout task: the stage's service jobs when their addresses are recorded (judge
    through ``OpenAiJudgeBackend``), else in-process (a sandbox server of its own, the judge model loaded here)."""
    from ..rewards import RewardRouter
    from ..rewards.judge import Judge, OpenAiJudgeBackend

    cfg, paths = ctx.cfg, ctx.paths
    reward = cfg.reward
    judge = None
    rec = service_address(paths, "judge") if reward.judge.backend in JUDGE_JOB_BACKENDS else None
    if rec is not None:
        j = reward.judge
        judge = Judge(OpenAiJudgeBackend(rec.url, rec.model), j.max_new_tokens, j.batch_size, j.cache)
    sandbox_rec = service_address(paths, "sandbox") if "code" in cfg.data.mix and reward.sandbox.url is None \
        else None
    if sandbox_rec is not None:
        reward = dataclasses.replace(reward, sandbox=dataclasses.replace(reward.sandbox, url=sandbox_rec.url))
    if "code" in cfg.data.mix and reward.sandbox.url is None:  # no service job (local executor): our own server
        from ..sandbox.server import start_local_server
        with start_local_server(workers=reward.sandbox.workers, isolation=reward.sandbox.isolation) as (url, _):
            local = dataclasses.replace(reward, sandbox=dataclasses.replace(reward.sandbox, url=url))
            yield ServiceGuard(RewardRouter(local, judge=judge))
        return
    yield ServiceGuard(RewardRouter(reward, judge=judge))
