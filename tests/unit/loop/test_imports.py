"""The package's import graph: no cycles, and the layers stay in order.

Every ``import`` statement counts, at module level or inside a function (a lazy import still ties two modules
together). Layers, bottom to top: the core (records, paths, manifest, checkpoint, preemption, distributed, learner,
rollout, registry, stage, loop, run) < ``launch/`` (Slurm) < ``cli/``. The core never imports ``launch`` or
``cli``, and nothing below ``run`` imports ``run``; the few modules that reach up on purpose are listed with why.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "mathfirst_hpc"
UPWARD = {
    # the code really lives in launch/distributed.py (stdlib only, imports nothing above itself): an alias
    "mathfirst_hpc.distributed": {"mathfirst_hpc.launch.distributed"},
    # offline eval submits its own Slurm arrays (a job class and the executors), and never the stage driver
    "mathfirst_hpc.eval.harness": {"mathfirst_hpc.launch.executors", "mathfirst_hpc.launch.jobbase",
                                   "mathfirst_hpc.launch.jobspec", "mathfirst_hpc.launch.profiles"},
    # status shows job states from sacct/squeue
    "mathfirst_hpc.status": {"mathfirst_hpc.launch.slurm_state"},
    # python -m mathfirst_hpc.sandbox is the CLI command
    "mathfirst_hpc.sandbox.__main__": {"mathfirst_hpc.cli.sandbox_cmd"},
}


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules that ``name`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            targets = subs if len(subs) == len(node.names) else [*subs, base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_a_cycle() -> None:
    """The check can fail: a made-up pair that imports each other is reported."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert "mathfirst_hpc.loop" in graph()["mathfirst_hpc.run"]


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_core_never_imports_launch_or_cli() -> None:
    bad = {}
    for name, targets in graph().items():
        if name.startswith(("mathfirst_hpc.launch", "mathfirst_hpc.cli")):
            continue
        upward = {t for t in targets if t.startswith(("mathfirst_hpc.launch", "mathfirst_hpc.cli"))}
        if upward - UPWARD.get(name, set()):
            bad[name] = sorted(upward - UPWARD.get(name, set()))
    assert bad == {}


BELOW_RUN = ("mathfirst_hpc.records", "mathfirst_hpc.paths", "mathfirst_hpc.manifest", "mathfirst_hpc.checkpoint",
             "mathfirst_hpc.preemption", "mathfirst_hpc.distributed", "mathfirst_hpc.registry", "mathfirst_hpc.stage",
             "mathfirst_hpc.loop", "mathfirst_hpc.learner", "mathfirst_hpc.rollout", "mathfirst_hpc.data",
             "mathfirst_hpc.rewards", "mathfirst_hpc.shards", "mathfirst_hpc.config", "mathfirst_hpc.models")


def test_nothing_below_run_imports_run() -> None:
    users = {name for name, targets in graph().items() if "mathfirst_hpc.run" in targets}
    assert not {u for u in users if u.startswith(BELOW_RUN)}, users


def test_the_loop_sits_below_run_and_launch() -> None:
    edges = graph()
    assert "mathfirst_hpc.loop" in edges["mathfirst_hpc.run"] and "mathfirst_hpc.loop" in edges[
        "mathfirst_hpc.launch.phases"]
    for low in ("mathfirst_hpc.loop", "mathfirst_hpc.stage", "mathfirst_hpc.registry", "mathfirst_hpc.preemption",
                "mathfirst_hpc.records"):
        assert not {t for t in edges[low] if t.startswith(("mathfirst_hpc.launch", "mathfirst_hpc.run"))}, low
