"""Readers of a run dir: reasoning-skill labels of responses, plots, and the HTML/markdown run report.

- ``skills.py``  pattern classifier + LLM-judge classifier, frequencies per domain per checkpoint, agreement
- ``plots.py``   matplotlib PNGs from metrics.jsonl, the eval comparison and the skills tables
- ``report.py``  ``mathfirst-hpc report RUN_DIR``: self-contained HTML (embedded PNGs) and markdown
"""
