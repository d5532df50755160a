"""Every submitit job class of the project, in one list (each is defined beside the code it runs).

    MathfirstJob, DistributedJob   jobbase.py        Checkpointable bases: state on disk, requeue = same call
    DriverJob, EvalJob             driver.py         a stage's driver; ``submit eval``
    RolloutTask, LearnerJob        phases.py         a rollout array task; an RL iteration's update
    StageJob                       phases.py         a whole stage in one job (stage 1; one-allocation mode)
    EvalArrayTask                  eval/harness.py   one task of an evaluation array
    SandboxServiceJob, JudgeServiceJob services.py   a stage's reward services (sandbox, judge server)

Usage::

    executor.submit(LearnerJob(run_dir, "math_rl", iteration=3))
    executor.map_array(RolloutTask(run_dir, "math_rl", iteration=3, gen_batch=0, ...), range(num_shards))
"""

from __future__ import annotations

from .driver import DriverJob, EvalJob
from .jobbase import DistributedJob, MathfirstJob, run_dir_of
from .phases import LearnerJob, RolloutTask, StageJob
from .services import JudgeServiceJob, SandboxServiceJob

__all__ = ["DistributedJob", "DriverJob", "EvalJob", "JudgeServiceJob", "LearnerJob", "MathfirstJob", "RolloutTask",
           "SandboxServiceJob", "StageJob", "run_dir_of"]
