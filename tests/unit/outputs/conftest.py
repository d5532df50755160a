"""A real tiny run (SFT 2 steps, math RL 2 iterations) shared by the export and model card tests (~30 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_RUN = ["sft:steps=2", "sft.batch_size=8", "sft.micro_batch_size=4", "math_rl:steps=2",
            "rollout.prompts_per_batch=4", "rollout.max_response_len=16", "dapo.overlong_buffer_len=4",
            "data.synthetic_size=256"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    import torch

    from mathfirst_hpc.run import run_curriculum
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("tiny_run")
    assert run_curriculum(run_dir, ["sft", "math_rl"], overrides=TINY_RUN, progress=False) == {
        "sft": "final", "math_rl": "final"}
    return run_dir
