"""Reward services that run as their own processes or Slurm jobs.

    judge_server   an OpenAI-compatible completions server backed by an HF model (CPU stand-in for vllm serve)

The sandbox server lives in ``mathfirst_hpc.sandbox``; ``launch/services.py`` submits both as Slurm jobs.
"""
