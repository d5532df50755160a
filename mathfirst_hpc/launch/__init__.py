"""Launching on Slurm: cluster profiles, one JobSpec mapped to submitit/Slurm, explicit executors (slurm | local),
submitit job classes, the Slurm runners of the RL loop and the per-stage driver.

Modules, in the order a submission goes through them::

    profiles.py     slurm/profiles/*.yaml -> ClusterProfile (validated; unknown partition checked with sinfo)
    jobspec.py      JobSpec: generic job sizes -> submitit/Slurm parameters, in one place
    executors.py    make_executor("slurm" | "local", folder, spec): never submitit's AutoExecutor
    jobbase.py      submitit Checkpointable bases (state on disk; the requeue is the same call)
    launcher.py     Launcher: submit a stage's children (arrays), re-attach after a restart, wait
    phases.py       SlurmRollouts / SlurmLearner (the loop's runners as jobs) and the job bodies
    services.py     the reward services as jobs (sandbox, judge server) and the router a rollout task scores with
    service_owner.py  a service job ends itself once its owning driver is gone for good (not when requeued)
    driver.py       the per-stage driver (loop.run_rl_loop with those runners); submit / resume / cancel
    jobs.py         the list of every job class
    slurm_state.py  job states from sacct/squeue (status, re-attaching, cancel)
    distributed.py  init_distributed(): torch.distributed from torchrun / Slurm / submitit-local / MPI variables
                    (imported as ``mathfirst_hpc.distributed`` from below)

Below this package, used by it and by colocated runs alike: ``mathfirst_hpc/preemption.py`` (signals -> a flag
polled at safe points), ``mathfirst_hpc/loop.py`` (the RL loop) and ``mathfirst_hpc/stage.py``.
"""
