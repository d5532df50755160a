"""The ``stages/twin-pp`` preset on the local Slurm cluster: its Megatron learner is a PP=2 pipeline laid out like
llama3.1-8b's (a learner job of two nodes, one rank on each of n1 and n2), its rollouts vLLM arrays from
``.venv-vllm``. Kept short (one stage, one iteration): ``submit stage2 --preset twin-pp --init-from`` the preset's
random-init model saved as an HF folder (vLLM loads weights from a folder; no stage 1 to wait for), with dynamic
sampling off so that the random-init model's all-zero groups still reach the learner. The learner job is
``scontrol requeue``-d once its two ranks have started; the stage must still reach final (``status`` says so), the
learner must have restarted in place, run on both nodes, and written one checkpoint shard per pipeline stage
(``layout``: pp 2, pp_rank 0 and 1).

The jobs get the Megatron CPU shim and vLLM as in ``test_twin_slurm.py`` (its ``twin_setup`` fixture). About 2 min
on the 2-core machine (~100 s measured).

    .venv/bin/pytest -q -p no:cacheprovider tests/integration/slurm/test_twin_pp_slurm.py
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from mathfirst_hpc.launch.driver import cancel_run

from . import test_twin_slurm
from .support import final_meta, jobs_of, log_of, manifest, ran_on_both_nodes, wait_final
from .test_twin_slurm import _cli, _status, _wait

pytest.importorskip("megatron.core")
pytestmark = [pytest.mark.slurm, pytest.mark.megatron, pytest.mark.vllm, pytest.mark.timeout(600)]

SHORT = ["math_rl:steps=1", "math_rl:dapo.dynamic_sampling=false"]
"""One iteration; every group trained (a random-init model scores all zeros)."""
TIMEOUT_S = 420
twin_setup = test_twin_slurm.twin_setup
"""The shim hook and the profile with ``rollout_python`` (skips without ``.venv-vllm``): the same fixture here."""


def _base_weights(folder: Path) -> Path:
    """The twin-pp model, random-init, with the tokenizer a run of the preset trains (the same seed and corpus)."""
    from mathfirst_hpc.config import load_stage_config
    from mathfirst_hpc.data.synthetic import corpus_texts
    from mathfirst_hpc.models import build_model, train_tokenizer

    cfg = load_stage_config("math_rl", "twin-pp", check_files=False)
    tokenizer = train_tokenizer(corpus_texts(n=3000, seed=cfg.seed), vocab_size=cfg.model.vocab_size)
    build_model(cfg.model, tokenizer, seed=cfg.seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _learner_ranks_started(run_dir: Path) -> str | None:
    """The learner job, once both ranks (one per node) logged their start: then a SIGTERM reaches a stop handler
    (a rank still importing would die of it while its peer waits)."""
    jobs = jobs_of(run_dir, "learner", "math_rl")
    if not jobs:
        return None
    job = next(iter(jobs))
    return job if log_of(run_dir, job).count(f"Slurm job {job}, restart 0") >= 2 else None


def _checkpoint_layouts(run_dir: Path) -> list[dict]:
    import torch

    final = Path(run_dir) / manifest(run_dir)["stages"]["math_rl"]["final_checkpoint"]
    ranks = sorted(final.rglob("rank_*.pt"))
    return [torch.load(path, map_location="cpu", weights_only=False)["backend"]["layout"] for path in ranks]


def test_twin_pp_stage_with_a_pp2_learner_on_two_nodes_survives_a_learner_requeue(twin_setup) -> None:
    start = time.monotonic()
    run_dir = twin_setup["root"] / "pp"
    try:
        _cli("submit", "stage2", "--run-dir", str(run_dir), "--preset", "twin-pp", "--profile",
             str(twin_setup["profile"]), "--init-from", str(_base_weights(twin_setup["root"] / "base")), *SHORT)
        learner = _wait(run_dir, lambda: _learner_ranks_started(run_dir), "the PP=2 learner's two ranks",
                        TIMEOUT_S, poll_s=0.5)
        subprocess.run(["scontrol", "requeue", learner], check=True, timeout=30)
        wait_final(run_dir, "math_rl", TIMEOUT_S)
    except BaseException:
        if (run_dir / "manifest.json").exists():
            cancel_run(run_dir)  # nothing left queued by a failed test
        raise
    assert list(jobs_of(run_dir, "learner", "math_rl")) == [learner]  # requeued in place, not resubmitted
    log = log_of(run_dir, learner)
    assert f"Slurm job {learner}, restart 1" in log, log[-3000:]
    assert ran_on_both_nodes(learner)
    assert _status(run_dir)["stages"]["math_rl"]["status"] == "final"
    meta = final_meta(run_dir, "math_rl")
    assert (meta["iteration"], meta["step"], meta["world_size"]) == (1, 2, 2), meta  # 2 mini-batches, 2 ranks
    layouts = _checkpoint_layouts(run_dir)
    assert sorted((lay["pp"], lay["pp_rank"], lay["tp"]) for lay in layouts) == [(2, 0, 1), (2, 1, 1)], layouts
    print(f"twin-pp: stage 2 final in {time.monotonic() - start:.0f} s, learner {learner} requeued once")
