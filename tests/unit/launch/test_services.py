"""Where scoring runs on the Slurm path, and the reward services as jobs, with fakes for Slurm.

* a rollout task generates then scores its own shard (``phases.generate_and_score``); a finished, scored shard is
  reused untouched; the driver's router (``ScoredByTasks``) refuses to score;
* a task whose service is unreachable leaves its shard unscored; ``SlurmRollouts`` restarts the services and
  reruns it with a visible message, and gives up with a clear error after its retries;
* ``StageServices``: submits what the mix needs, waits for the recorded address, re-attaches to a live job,
  resubmits a dead one, cancels at the end of the stage but not when the driver is stopped for a requeue.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mathfirst_hpc.atomic import write_json
from mathfirst_hpc.config import load_stage_config
from mathfirst_hpc.data.base import Problem
from mathfirst_hpc.errors import RunDirError
from mathfirst_hpc.launch import services as services_mod
from mathfirst_hpc.launch.jobspec import job_spec
from mathfirst_hpc.launch.launcher import DriverStopped
from mathfirst_hpc.launch.phases import ScoredByTasks, SlurmRollouts, generate_and_score
from mathfirst_hpc.launch.profiles import ClusterProfile
from mathfirst_hpc.launch.services import (ServiceGuard, ServiceUnavailable, StageServices, services_needed,
                                           stage_services)
from mathfirst_hpc.loop import score_shard
from mathfirst_hpc.manifest import Manifest
from mathfirst_hpc.models import train_tokenizer
from mathfirst_hpc.paths import RunPaths
from mathfirst_hpc.records import ServiceRecord
from mathfirst_hpc.rewards.base import RewardResult
from mathfirst_hpc.rollout.base import Sample
from mathfirst_hpc.shards import read_shard
from mathfirst_hpc.stage import StageContext


class Engine:
    def __init__(self) -> None:
        self.calls = 0

    def generate(self, prompts, sampling):
        self.calls += 1
        return [[Sample(i, p, [5, 6, 7], [-0.5] * 3, "length") for _ in range(sampling.n)]
                for i, p in enumerate(prompts)]

    def close(self) -> None:
        pass


class Router:
    """First sample of each prompt right; ``outage`` calls answer like an unreachable judge."""

    def __init__(self, outages: int = 0) -> None:
        self.calls, self.outages = 0, outages

    def score_batch(self, problems, responses):
        self.calls += 1
        if self.calls <= self.outages:
            return [RewardResult(0.0, "error", "judge failed: JudgeUnavailable: judge server down") for _ in problems]
        return [RewardResult(float(i % 4 == 0), "correct" if i % 4 == 0 else "incorrect", "x")
                for i in range(len(problems))]


def make_ctx(tmp_path: Path) -> StageContext:
    settings = {"rollout.prompts_per_batch": 4, "rollout.n_per_prompt": 4, "rollout.num_shards": 2,
                "dapo.overlong_enable": "false"}
    cfg = load_stage_config("math_rl", overrides=[f"{k}={v}" for k, v in settings.items()])
    paths = RunPaths(tmp_path).make()
    ctx = StageContext(paths, cfg, train_tokenizer(["q 1 2 3 answer"] * 10, vocab_size=300), Manifest(paths),
                       should_stop=lambda: False, progress=False)
    problems = [Problem(uid=f"p{i}", domain="math", data_source="synthetic__math",
                        prompt=[{"role": "user", "content": f"q {i}"}], ground_truth="1") for i in range(4)]
    write_json(paths.plan(ctx.stage, 0, 0), [p.__dict__ for p in problems])
    return ctx


# ---- scoring in the rollout task ---------------------------------------------------------------------------------

def test_task_scores_its_shard_and_a_scored_shard_is_reused(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    engine, router = Engine(), Router()
    path = generate_and_score(ctx, engine, router, 0, 0, 1, policy_step=0)
    entry = ctx.manifest.shard_entry(path)
    assert entry is not None and entry.scored and entry.policy_step == 0
    data = read_shard(path, entry.sha256)
    assert list(data.verdict[:4]) == ["correct", "incorrect", "incorrect", "incorrect"]
    before = path.read_bytes()
    generate_and_score(ctx, engine, router, 0, 0, 1, policy_step=0)  # a requeued task
    assert (engine.calls, router.calls) == (1, 1) and path.read_bytes() == before
    # the driver reads it back without scoring
    assert list(score_shard(ctx, ScoredByTasks(), path).reward) == list(data.reward)


def test_driver_router_refuses_to_score(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    path = generate_and_score(ctx, Engine(), ServiceGuard(Router(outages=1)), 0, 0, 0, policy_step=0)
    assert not ctx.manifest.shard_entry(path).scored  # unreachable judge: generated, not scored
    with pytest.raises(RunDirError, match="unscored"):
        score_shard(ctx, ScoredByTasks(), path)


def test_service_guard_passes_ordinary_verifier_errors() -> None:
    class Crashy:
        def score_batch(self, problems, responses):
            return [RewardResult(0.0, "error", "math verifier crashed: ValueError: x")]

    assert ServiceGuard(Crashy()).score_batch([None], ["r"])[0].verdict == "error"
    sandbox_down = RewardResult(0.0, "error", "sandbox: sandbox server http://n1:1 unavailable after 4 tries (x)")

    class Down:
        def score_batch(self, problems, responses):
            return [sandbox_down]

    with pytest.raises(ServiceUnavailable, match="1 of 1"):
        ServiceGuard(Down()).score_batch([None], ["r"])


class FakeLauncher:
    """Runs each rollout task in-process with a shared guarded router (a Slurm array stand-in)."""

    def __init__(self, ctx: StageContext, router: Router) -> None:
        self.ctx, self.router, self.engine, self.keys = ctx, ServiceGuard(router), Engine(), []

    def run(self, role, requests):
        results = []
        for request in requests:
            self.keys.append(request.key)
            task = request.fn
            generate_and_score(self.ctx, self.engine, self.router, task.iteration, task.gen_batch,
                               task.shard_index, task.policy_step)
            from mathfirst_hpc.records import RolloutResult
            results.append(RolloutResult(str(self.ctx.paths.gen_shard(self.ctx.stage, 0, 0, task.shard_index)), {}))
        return results


class Services:
    def __init__(self) -> None:
        self.ensured = 0

    def ensure(self) -> dict[str, str]:
        self.ensured += 1
        return {}


def test_unreachable_service_reruns_only_the_unscored_shards_with_a_message(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    ctx = make_ctx(tmp_path)
    launcher, services = FakeLauncher(ctx, Router(outages=1)), Services()
    shards = SlurmRollouts(ctx, launcher, services).rollout(0, 0, 0)
    assert all(ctx.manifest.shard_entry(p).scored for p in shards)
    assert [k["shard"] for k in launcher.keys] == [0, 1, 0]  # shard 0 met the outage, shard 1 did not
    assert launcher.keys[-1]["rescore"] == 1 and launcher.engine.calls == 2  # the rerun only scored
    assert services.ensured == 2
    err = capsys.readouterr().err
    assert "left unscored" in err and "restarting services and rescoring (retry 1 of 3)" in err


def test_service_that_never_comes_back_fails_the_stage_clearly(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    with pytest.raises(RunDirError, match="unscored after 2 retries"):
        SlurmRollouts(ctx, FakeLauncher(ctx, Router(outages=99)), Services(), service_retries=2).rollout(0, 0, 0)


# ---- the service jobs ------------------------------------------------------------------------------------------

def test_services_follow_the_mix() -> None:
    math = load_stage_config("math_rl")
    assert services_needed(math) == []
    joint = load_stage_config("joint_rl", overrides=["reward.judge.backend=hf", "reward.judge.model_path=/m"])
    code = ["sandbox"] if "code" in joint.data.mix else []
    assert services_needed(joint) == code + ["judge"]
    assert services_needed(load_stage_config("sft")) == []


def test_service_jobs_are_sized_by_the_profile() -> None:
    cfg = load_stage_config("joint_rl", overrides=["reward.judge.backend=vllm", "reward.judge.model_path=/m",
                                                   "reward.sandbox.workers=32"])
    gpu = ClusterProfile(name="g", partition="gpu", cpu_partition="cpu", gpus_per_node=4, cpus_per_task=8)
    sandbox = job_spec("sandbox", cfg, gpu)
    assert (sandbox.cpus_per_task, sandbox.gpus_per_node, sandbox.partition) == (32, 0, "cpu")
    judge = job_spec("judge", cfg, gpu)
    assert (judge.gpus_per_node, judge.partition) == (1, "gpu")
    cpu_judge = job_spec("judge", cfg, ClusterProfile(name="c", partition="dev"))
    assert (cpu_judge.gpus_per_node, cpu_judge.partition) == (0, "dev")
    assert sandbox.slurm_parameters()["additional_parameters"]["requeue"] is True  # preempted -> requeued


class FakeSlurm:
    """job id -> state, for slurm_state.job_states / cancel; a submitted service 'starts' by writing its record."""

    def __init__(self, paths: RunPaths, url: str) -> None:
        self.paths, self.url, self.states, self.cancelled, self.next_id = paths, url, {}, [], 100

    def submit(self, kind: str, manifest: Manifest, stage: str) -> str:
        from mathfirst_hpc.records import JobEntry
        job_id = str(self.next_id)
        self.next_id += 1
        self.states[job_id] = "RUNNING"
        manifest.record_job(job_id, JobEntry("service", stage, {"kind": "service", "service": kind, "stage": stage}))
        ServiceRecord(kind, self.url, slurm_job_id=job_id).write(self.paths.service_address(kind))
        return job_id

    def job_states(self, ids):
        return {j: self.states.get(j, "UNKNOWN") for j in ids}

    def cancel(self, ids):
        for j in ids:
            self.states[j] = "CANCELLED"
        self.cancelled += list(ids)


@pytest.fixture
def judge_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from mathfirst_hpc.services.judge_server import start_server

    class Backend:
        def generate(self, prompts, max_new_tokens):
            return ["CORRECT"] * len(prompts)

    server = start_server(Backend())
    paths = RunPaths(tmp_path).make()
    cfg = load_stage_config("math_rl", overrides=["reward.judge.backend=hf", "reward.judge.model_path=/m"])
    slurm = FakeSlurm(paths, server.url)
    monkeypatch.setattr(services_mod.slurm_state, "job_states", slurm.job_states)
    monkeypatch.setattr(services_mod.slurm_state, "cancel", slurm.cancel)
    manifest = Manifest(paths)
    services = StageServices(paths, cfg, ClusterProfile(name="t"), poll_s=0.01, start_timeout_s=5,
                             submit=lambda kind: slurm.submit(kind, manifest, cfg.stage))
    yield services, slurm, server
    server.shutdown()


def test_ensure_submits_then_reattaches_then_replaces_a_dead_service(judge_service,
                                                                     capsys: pytest.CaptureFixture) -> None:
    services, slurm, server = judge_service
    assert services.ensure() == {"judge": server.url}
    assert services.ensure() == {"judge": server.url} and list(slurm.states) == ["100"]  # re-attached
    slurm.states["100"] = "CANCELLED"  # scancel of the judge
    services.ensure()
    assert list(slurm.states) == ["100", "101"] and services.jobs() == {"judge": "101"}
    assert "judge service job 100 is cancelled: submitting a new one" in capsys.readouterr().err


def test_stage_services_cancel_at_the_end_but_not_on_a_driver_requeue(judge_service) -> None:
    services, slurm, _ = judge_service
    with pytest.raises(DriverStopped):
        with stage_services(services.paths, services.cfg, services.profile, services):
            raise DriverStopped("USR1")
    assert slurm.cancelled == [] and slurm.states["100"] == "RUNNING"
    with stage_services(services.paths, services.cfg, services.profile, services):
        pass
    assert slurm.cancelled == ["100"]


def test_stage_services_cancel_when_the_stage_fails(judge_service) -> None:
    services, slurm, _ = judge_service
    with pytest.raises(RuntimeError):
        with stage_services(services.paths, services.cfg, services.profile, services):
            raise RuntimeError("learner failed")
    assert slurm.cancelled == ["100"]


def test_service_that_dies_before_answering_is_a_clear_error(judge_service) -> None:
    services, slurm, _ = judge_service
    services._submit = lambda kind: (slurm.states.__setitem__("7", "FAILED"), "7")[1]
    with pytest.raises(RunDirError, match="judge service job 7 .* ended \\(FAILED\\)"):
        services.ensure()


def test_task_router_uses_the_recorded_judge(judge_service, tmp_path: Path) -> None:
    from mathfirst_hpc.launch.services import task_router

    services, _, server = judge_service
    services.ensure()
    cfg = load_stage_config("joint_rl", overrides=["reward.judge.backend=hf", "reward.judge.model_path=/m",
                                                   "reward.sandbox.url=http://unused:1"])
    ctx = StageContext(services.paths, cfg, None, Manifest(services.paths), should_stop=lambda: False,
                       progress=False)
    stem = Problem(uid="s", domain="stem", data_source="stem_web", prompt=[], ground_truth="100 C", style="model")
    with task_router(ctx) as router:
        assert router.score_batch([stem], ["\\boxed{100}"])[0].verdict == "correct"  # the server said CORRECT
    assert server.requests_served == 1
    assert json.loads(services.paths.service_address("judge").read_text())["url"] == server.url
