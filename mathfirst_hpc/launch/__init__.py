"""Launching: cluster profiles, one JobSpec mapped to submitit/Slurm, explicit executors (slurm | local),
torch.distributed bootstrap, preemption handling, submitit job classes and the per-stage driver.

Modules, in the order a submission goes through them::

    profiles.py     slurm/profiles/*.yaml -> ClusterProfile (validated; unknown partition checked with sinfo)
    jobspec.py      JobSpec: generic job sizes -> submitit/Slurm parameters, in one place
    executors.py    make_executor("slurm" | "local", folder, spec): never submitit's AutoExecutor
    jobs.py         submitit Checkpointable job classes (driver, rollout task, learner, sft, eval)
    phases.py       what those jobs run: run.py's phase functions, one iteration split into jobs
    driver.py       the per-stage driver loop; submit / resume / cancel of a run dir
    slurm_state.py  job states from sacct/squeue (status, re-attaching, cancel)
    distributed.py  init_distributed(): torch.distributed from SLURM_* / torchrun / submitit-local variables
    preemption.py   SIGTERM/SIGUSR1 -> a flag polled at safe points; time_left_s(); should_stop()
"""
