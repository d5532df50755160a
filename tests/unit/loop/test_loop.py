"""The one RL loop (``loop.run_rl_loop``) with fake runners: the order of its phases and every resume point.

The rollouts are real (``loop.InProcessRollouts`` over a fixed-token engine that records its calls, real shards,
real scoring with a scripted verifier); the learner is a fake ``LearnerRunner`` that records what the loop asks
of it and checks what must already be on disk when it is asked.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mathfirst_hpc import checkpoint as ckpt
from mathfirst_hpc.config import load_stage_config
from mathfirst_hpc.data.base import Problem
from mathfirst_hpc.loop import InProcessRollouts, run_rl_loop
from mathfirst_hpc.manifest import Manifest
from mathfirst_hpc.models import train_tokenizer
from mathfirst_hpc.paths import RunPaths
from mathfirst_hpc.records import DriverRecord, LearnerResult, RlState
from mathfirst_hpc.rewards.base import RewardResult
from mathfirst_hpc.rollout.base import Sample
from mathfirst_hpc.stage import StageContext

STEPS_PER_UPDATE = 2  # optimizer steps the fake learner takes per iteration with kept groups


class RecordingEngine:
    """Three fixed tokens per sample; logs each generate call (and checks its plan file was written first)."""

    spans_ranks = False

    def __init__(self, events: list, ctx_ref: dict) -> None:
        self.events, self.ctx_ref = events, ctx_ref

    def generate(self, prompts, sampling):
        self.events.append(("generate", len(prompts)))
        return [[Sample(i, p, [5, 6, 7], [-0.5] * 3, "length") for _ in range(sampling.n)]
                for i, p in enumerate(prompts)]

    def update_weights(self, state_dict) -> None:
        self.events.append(("sync",))

    def sleep(self) -> None:
        self.events.append(("sleep",))

    def wake_up(self) -> None:
        self.events.append(("wake",))

    def close(self) -> None:
        pass


class Rollouts(InProcessRollouts):
    """The in-process runner, logging each generation batch it is asked for (with its policy step)."""

    def __init__(self, ctx, engine, events) -> None:
        super().__init__(ctx, engine)
        self.events = events

    def rollout(self, iteration, gen_batch, policy_step):
        assert self.ctx.paths.plan(self.ctx.stage, iteration, gen_batch).exists(), "rollout before its plan"
        self.events.append(("rollout", iteration, gen_batch, policy_step))
        return super().rollout(iteration, gen_batch, policy_step)


class Router:
    """Every group informative: the first sample of each prompt is right."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def score_batch(self, problems, responses):
        out = []
        for p in problems:
            k = self.seen[p.uid] = self.seen.get(p.uid, -1) + 1
            out.append(RewardResult(1.0 if k % 4 == 0 else 0.0, "correct" if k % 4 == 0 else "incorrect", "x"))
        return out


class CountingMixer:
    def __init__(self) -> None:
        self.drawn = 0

    def next_batch(self, n):
        start, self.drawn = self.drawn, self.drawn + n
        return [Problem(uid=f"p{i}", domain="math", data_source="synthetic__math",
                        prompt=[{"role": "user", "content": f"q {i}"}], ground_truth="1")
                for i in range(start, start + n)]

    def state_dict(self):
        return {"drawn": self.drawn}

    def load_state_dict(self, state) -> None:
        self.drawn = state["drawn"]


class FakeLearner:
    """A LearnerRunner that trains nothing: each update adds STEPS_PER_UPDATE steps (or stops where told)."""

    def __init__(self, ctx, events, start: RlState = RlState(), preempt_at: int | None = None) -> None:
        self.ctx, self.events, self.state, self.preempt_at = ctx, events, start, preempt_at
        self.records: dict[int, DriverRecord] = {}

    def position(self) -> RlState:
        return self.state

    def update(self, iteration: int, record: DriverRecord) -> LearnerResult:
        paths, stage = self.ctx.paths, self.ctx.stage
        assert paths.iteration_plan(stage, iteration).exists(), "update before driver.json"
        assert paths.kept_batch(stage, iteration).exists() == (record.kept_groups > 0)
        assert record.policy_step == self.state.iteration_start_step  # shards of the iteration's start policy
        self.events.append(("update", iteration, self.state.mini_batch))
        self.records[iteration] = record
        if iteration == self.preempt_at:
            self.state = dataclasses.replace(self.state, mini_batch=1, step=self.state.step + 1)
            return LearnerResult(iteration, self.state.step, preempted=True)
        step = self.state.step + (STEPS_PER_UPDATE - self.state.mini_batch) * (record.kept_groups > 0)
        self.state = RlState(iteration, 0, step, step).next_iteration(record.data_after)
        return LearnerResult(iteration, step, final=iteration + 1 == self.ctx.cfg.steps)

    def save(self, final: bool) -> None:
        self.events.append(("save", self.state.iteration, final))
        paths, stage = self.ctx.paths, self.ctx.stage
        target = paths.checkpoint(stage, self.state.step)
        ckpt.save_checkpoint(target, {"x": 1}, {"step": self.state.step, **self.state.meta()})
        if final:
            ckpt.mark_final(paths.checkpoints(stage), target)
            self.ctx.manifest.set_stage(stage, status="final")

    def close(self) -> None:
        pass


def make_ctx(tmp_path: Path, stop_after_polls: int | None = None, **overrides) -> StageContext:
    settings = {"steps": 3, "checkpoint.every_steps": 2, "rollout.prompts_per_batch": 4,
                "rollout.n_per_prompt": 4, "rollout.num_shards": 2, "dapo.overlong_enable": "false", **overrides}
    cfg = load_stage_config("math_rl", overrides=[f"{k}={v}" for k, v in settings.items()])
    tokenizer = train_tokenizer(["q 1 2 3 answer"] * 10, vocab_size=300)
    paths = RunPaths(tmp_path).make()
    polls = {"n": 0}

    def should_stop() -> bool:
        polls["n"] += 1
        return stop_after_polls is not None and polls["n"] >= stop_after_polls

    return StageContext(paths, cfg, tokenizer, Manifest(paths), should_stop=should_stop, progress=False)


def run(ctx, events, learner=None, mixer=None) -> tuple[str, FakeLearner]:
    learner = learner or FakeLearner(ctx, events)
    rollouts = Rollouts(ctx, RecordingEngine(events, {}), events)
    return run_rl_loop(ctx, rollouts, learner, Router(), mixer=mixer or CountingMixer()), learner


def phases(events: list) -> list:
    """The events without the engine's per-shard generate calls."""
    return [e for e in events if e[0] != "generate"]


def test_phase_order_of_a_fresh_stage(tmp_path: Path) -> None:
    ctx, events = make_ctx(tmp_path), []
    result, learner = run(ctx, events)
    assert result == "final"
    assert phases(events) == [
        ("rollout", 0, 0, 0), ("sleep",), ("update", 0, 0), ("wake",),  # no checkpoint due after iteration 1
        ("rollout", 1, 0, 2), ("sleep",), ("update", 1, 0), ("wake",), ("save", 2, False),  # every_steps=2
        ("rollout", 2, 0, 4), ("sleep",), ("update", 2, 0), ("wake",), ("save", 3, True),  # the final one
    ]
    assert [e for e in events if e[0] == "generate"] == [("generate", 2)] * 6  # 2 shards x 2 prompts, 3 times
    # each iteration starts where the previous one's prompts ended
    assert [learner.records[i].data_at_iteration_start for i in range(3)] == [{"drawn": 0}, {"drawn": 4},
                                                                               {"drawn": 8}]
    assert all(learner.records[i].kept_groups == 4 for i in range(3))


def test_stop_request_after_an_iteration_saves_then_stops(tmp_path: Path) -> None:
    # polls: none inside the fake update; one after each non-final iteration
    ctx, events = make_ctx(tmp_path, stop_after_polls=1), []
    result, _ = run(ctx, events)
    assert result == "preempted"
    assert phases(events) == [("rollout", 0, 0, 0), ("sleep",), ("update", 0, 0), ("wake",), ("save", 1, False)]


def test_stop_inside_the_update_returns_without_another_save(tmp_path: Path) -> None:
    ctx, events = make_ctx(tmp_path), []
    learner = FakeLearner(ctx, events, preempt_at=1)
    result, _ = run(ctx, events, learner)
    assert result == "preempted"
    assert phases(events)[-3:] == [("sleep",), ("update", 1, 0), ("wake",)]  # its emergency save is its own
    assert ("save", 1, False) not in events


def test_resume_mid_update_reuses_the_collected_iteration(tmp_path: Path) -> None:
    """Restarted inside iteration 1's update: its driver.json exists, so nothing is regenerated or redrawn; the
    update resumes at the saved mini-batch; iteration 2 starts from iteration 1's data cursor."""
    ctx, events = make_ctx(tmp_path), []
    first = FakeLearner(ctx, events, preempt_at=1)
    assert run(ctx, events, first)[0] == "preempted"
    events.clear()
    resumed = FakeLearner(ctx, events, start=first.state)  # what the emergency checkpoint holds
    assert resumed.state.iteration == 1 and resumed.state.mini_batch == 1
    result, learner = run(ctx, events, resumed, mixer=CountingMixer())  # a new process: a fresh mixer
    assert result == "final"
    assert phases(events) == [
        ("sleep",), ("update", 1, 1), ("wake",), ("save", 2, False),
        ("rollout", 2, 0, 4), ("sleep",), ("update", 2, 0), ("wake",), ("save", 3, True),
    ]
    assert learner.records[1] == first.records[1]  # the same record, read back from driver.json
    assert learner.records[2].data_at_iteration_start == first.records[1].data_after == {"drawn": 8}


def test_resume_after_a_crash_in_collection_keeps_complete_shards(tmp_path: Path) -> None:
    """Killed after the shards of iteration 0 were written but before driver.json: the prompts are redrawn from
    the iteration's cursor and the complete shards (same policy step) are reused, not regenerated."""
    ctx, events = make_ctx(tmp_path, steps=1), []
    assert run(ctx, events)[0] == "final"
    paths = ctx.paths
    paths.iteration_plan("math_rl", 0).unlink()
    paths.kept_batch("math_rl", 0).unlink()
    ckpt_dir = paths.checkpoints("math_rl")
    import shutil
    shutil.rmtree(ckpt_dir)
    Manifest(paths).set_stage("math_rl", status="running")
    events.clear()
    result, learner = run(ctx, events)
    assert result == "final"
    assert phases(events) == [("rollout", 0, 0, 0), ("sleep",), ("update", 0, 0), ("wake",), ("save", 1, True)]
    assert not [e for e in events if e[0] == "generate"], "complete shards were regenerated"
    assert learner.records[0].data_after == {"drawn": 4}


def test_shards_of_another_policy_are_regenerated(tmp_path: Path) -> None:
    ctx, events = make_ctx(tmp_path, steps=1), []
    assert run(ctx, events)[0] == "final"
    ctx.paths.iteration_plan("math_rl", 0).unlink()
    events.clear()
    start = RlState(0, 0, 5, 5)  # a checkpoint whose policy is step 5, not the shards' step 0
    Manifest(ctx.paths).set_stage("math_rl", status="running")
    shutil_rm_final(ctx)
    run(ctx, events, FakeLearner(ctx, events, start=start))
    assert ("rollout", 0, 0, 5) in events and events.count(("generate", 2)) == 2


def shutil_rm_final(ctx) -> None:
    (ctx.paths.checkpoints("math_rl") / "final.json").unlink()


def test_resumed_at_the_end_only_marks_final(tmp_path: Path) -> None:
    ctx, events = make_ctx(tmp_path), []
    learner = FakeLearner(ctx, events, start=RlState(3, 0, 6, 6, {"drawn": 12}))
    result, _ = run(ctx, events, learner)
    assert result == "final" and events == [("save", 3, True)]


@pytest.mark.parametrize("policy_step", [0, 3])
def test_weights_are_synced_once_per_policy(tmp_path: Path, policy_step: int) -> None:
    """An engine that does not share the learner's model gets the weights before the first rollout of a policy
    step, and not again for that step's top-up generation batches."""
    ctx, events = make_ctx(tmp_path), []

    class Learner:
        def hf_state_dict(self):
            return {}

    rollouts = InProcessRollouts(ctx, RecordingEngine(events, {}), Learner(), shares_weights=False)
    from mathfirst_hpc.loop import plan_generation_batch
    mixer = CountingMixer()
    for gen_batch in range(2):
        plan_generation_batch(ctx, mixer, 0, gen_batch)
        rollouts.rollout(0, gen_batch, policy_step)
    assert events.count(("sync",)) == 1 and events[0] == ("sync",)
