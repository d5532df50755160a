"""mathfirst-hpc: the math-first reasoning curriculum on Slurm clusters.

Stage 1 (``sft``) cold-start SFT on math traces, stage 2 (``math_rl``) math-only DAPO, stage 3 (``joint_rl``)
DAPO on six domains. See README.md for the file tree and ``mathfirst-hpc --help`` for the commands.
"""

__version__ = "0.1.0"

STAGES = ("sft", "math_rl", "joint_rl")
DOMAINS = ("math", "stem", "code", "simulation", "logic", "tabular")
