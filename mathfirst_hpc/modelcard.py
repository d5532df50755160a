"""Model cards: the ``README.md`` of every HF export (``checkpoints/<stage>/step_N/hf/``).

    write_card(paths, checkpoint_dir)   after a checkpoint save (``stage.save_stage_checkpoint``, rank 0)
    refresh_cards(run_dir)              after ``eval --heldout`` / ``eval --run-dir``: the final checkpoints' cards
                                        get the evaluation tables that did not exist at save time

A card holds: Hugging Face front matter (license and base_model where known, tags); the base model; the curriculum
up to the checkpoint's stage (status, length, the sha256 of each stage's resolved YAML and its key settings, with
the resolved YAML itself folded in a <details> block); the data mix; the held-out table (``eval/heldout.json``)
and the benchmark comparison (``eval/comparison.md``, beside comparison.json) when they exist; how to load the
folder.

The card is written after the checkpoint is finalised and is not among the files meta.json lists, so rewriting it
never makes a checkpoint look damaged (``status --verify`` checks only listed files). A crash between the save and
the card leaves a checkpoint without one until the next ``refresh_cards``.

License: read from the base model folder's own README.md front matter when it has one, else looked up by name
(``KNOWN_BASES``: SmolLM2 and Qwen3 apache-2.0, Llama 3.1 llama3.1); a random-init preset has none.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from . import STAGES
from .atomic import write_text
from .paths import RunPaths

KNOWN_BASES: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
    "smollm2": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
    "qwen3-4b": ("Qwen/Qwen3-4B-Base", "apache-2.0"),
    "qwen3": ("Qwen/Qwen3-4B-Base", "apache-2.0"),
    "llama-3.1-8b": ("meta-llama/Llama-3.1-8B", "llama3.1"),
    "llama3.1": ("meta-llama/Llama-3.1-8B", "llama3.1"),
}
"""Lower-cased name fragment of a base model path -> (Hugging Face id, license). Longest fragment first wins."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _stage_configs(paths: RunPaths, upto: str) -> list[tuple[str, Any, str]]:
    """(stage, resolved config, its YAML text) of each configured stage up to and including ``upto``."""
    from .config import load_resolved
    out = []
    for stage in STAGES[:STAGES.index(upto) + 1]:
        path = paths.stage_config(stage)
        if path.exists():
            out.append((stage, load_resolved(path), path.read_text()))
    return out


def base_model(paths: RunPaths, configs: list[tuple[str, Any, str]], manifest: dict[str, Any]) -> dict[str, Any]:
    """What the first stage started from: {description, hf_id, license} (hf_id/license None where unknown)."""
    if not configs:
        return {"description": "unknown", "hf_id": None, "license": None, "license_note": "unknown"}
    first, cfg, _ = configs[0]
    init_from = manifest.get("stages", {}).get(first, {}).get("init_from")
    if init_from and not Path(init_from).is_relative_to(paths.root):
        source = str(init_from)
    elif cfg.model.preset is None and cfg.model.path:
        source = str(cfg.model.path)
    else:
        return {"description": f"random-init `{cfg.model.preset}` preset (hidden {cfg.model.hidden_size}, "
                               f"{cfg.model.num_layers} layers, vocab {cfg.model.vocab_size}); no pretrained weights",
                "hf_id": None, "license": None, "license_note": "none (random initialisation, no upstream weights)"}
    license_ = _folder_license(Path(source))
    hf_id = None
    for fragment, (known_id, known_license) in sorted(KNOWN_BASES.items(), key=lambda kv: -len(kv[0])):
        if fragment in source.lower():
            hf_id, license_ = known_id, license_ or known_license
            break
    return {"description": f"`{source}`" + (f" ({hf_id})" if hf_id else ""), "hf_id": hf_id, "license": license_,
            "license_note": license_ or "unknown (see the base model's own card)"}


def _folder_license(path: Path) -> str | None:
    """``license:`` from the front matter of a model folder's README.md."""
    readme = path / "README.md" if path.is_dir() else None
    if readme is None or not readme.exists():
        return None
    match = re.search(r"^---\n(.*?)\n---", readme.read_text(errors="replace"), re.S)
    found = re.search(r"^license:\s*(\S+)", match.group(1), re.M) if match else None
    return found.group(1).strip("'\"") if found else None


def _settings(cfg: Any) -> str:
    """The key settings of a stage, one line."""
    parts = [f"steps {cfg.steps}", f"lr {cfg.optim.lr:g}", f"seed {cfg.seed}"]
    if hasattr(cfg, "sft"):
        parts += [f"batch {cfg.sft.batch_size}", f"max_seq_len {cfg.sft.max_seq_len}"]
    if hasattr(cfg, "rollout"):
        parts += [f"{cfg.rollout.prompts_per_batch} prompts x {cfg.rollout.n_per_prompt} responses",
                  f"max_response_len {cfg.rollout.max_response_len}", f"T {cfg.rollout.temperature:g}",
                  f"clip {cfg.dapo.clip_ratio_low:g}/{cfg.dapo.clip_ratio_high:g}"]
    return ", ".join(parts)


def _mix(cfg: Any) -> str:
    total = sum(m.weight for m in cfg.data.mix.values()) or 1.0
    cells = []
    for domain, mix in sorted(cfg.data.mix.items()):
        source = (f"{len(mix.files)} file(s)" if mix.files else
                  ", ".join(g.name for g in mix.generators) if mix.generators else "synthetic")
        cells.append(f"{domain} {100 * mix.weight / total:.0f}% ({source})")
    return "; ".join(cells)


def _front_matter(base: dict[str, Any]) -> list[str]:
    lines = ["---", "library_name: transformers", "pipeline_tag: text-generation"]
    if base["license"]:
        lines.append(f"license: {base['license']}")
    if base["hf_id"]:
        lines.append(f"base_model: {base['hf_id']}")
    lines += ["tags:", "- mathfirst-hpc", "- reinforcement-learning", "- dapo", "- math", "---", ""]
    return lines


def heldout_table(table: dict[str, dict[str, float]], detail: Any = None) -> str:
    """``eval/heldout.json`` as markdown: one row per domain, one column per stage (accuracy in %). Rendered here,
    not by eval/heldout.py, which imports this module to refresh the cards."""
    columns = [c for c in ("base", *STAGES) if c in table]
    domains = sorted({d for row in table.values() for d in row})
    lines = ["| domain | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for domain in domains:
        lines.append(f"| {domain} | " + " | ".join(
            f"{100 * table[c][domain]:.1f}" if isinstance(table[c].get(domain), (int, float)) else "-"
            for c in columns) + " |")
    if isinstance(detail, dict) and detail.get("decoding"):
        lines += ["", f"Decoding: {detail['decoding']}."]
    return "\n".join(lines)


def _eval_sections(paths: RunPaths) -> list[str]:
    """The held-out table and the benchmark comparison (``comparison.md``, written beside comparison.json by
    ``eval --run-dir``), when they exist."""
    lines: list[str] = []
    heldout = _read_json(paths.eval_dir / "heldout.json")
    if isinstance(heldout, dict) and heldout:
        lines += ["## Held-out accuracy (%)", "",
                  "On the run's generated held-out sets (seeds disjoint from training), one column per stage.", "",
                  heldout_table(heldout, _read_json(paths.eval_dir / "heldout_detail.json")), ""]
    comparison = paths.eval_dir / "comparison.md"
    if comparison.exists():
        lines += ["## Benchmarks", "", comparison.read_text().strip(), ""]
    return lines


def build_card(paths: RunPaths, stage: str, step: int, final: bool) -> str:
    """The README.md of ``stage``'s checkpoint at ``step``."""
    from .manifest import Manifest
    manifest = Manifest(paths).read()
    configs = _stage_configs(paths, stage)
    base = base_model(paths, configs, manifest)
    lines = _front_matter(base) + [
        f"# {paths.root.name}: {stage}, step {step}{' (final)' if final else ''}", "",
        f"A checkpoint of the math-first curriculum (SFT -> math DAPO -> joint six-domain DAPO) trained with "
        f"mathfirst-hpc, after stage `{stage}`.", "",
        "## Base model", "", f"{base['description']}; license: {base['license_note']}.", "",
        "## Curriculum", "", "| stage | status | config sha256 | key settings |", "|---|---|---|---|"]
    for name, cfg, text in configs:
        status = manifest.get("stages", {}).get(name, {}).get("status", "-")
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        lines.append(f"| {name} | {status} | `{digest}` | {_settings(cfg)} |")
    lines += ["", "## Data mix", ""] + [f"- {name}: {_mix(cfg)}" for name, cfg, _ in configs] + [""]
    lines += _eval_sections(paths)
    lines += ["## Resolved configs", ""]
    for name, _cfg, text in configs:
        lines += [f"<details><summary>{name}</summary>", "", "```yaml", text.rstrip(), "```", "", "</details>", ""]
    lines += ["## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
              "model = AutoModelForCausalLM.from_pretrained(PATH)", "tokenizer = AutoTokenizer.from_pretrained(PATH)",
              "```", ""]
    return "\n".join(lines)


def write_card(paths: RunPaths, checkpoint_dir: Path) -> Path | None:
    """Write ``checkpoint_dir/hf/README.md`` (stage and step from its meta.json); None when it has no HF export."""
    hf = Path(checkpoint_dir) / "hf"
    meta = _read_json(Path(checkpoint_dir) / "meta.json")
    if not (hf / "config.json").exists() or not isinstance(meta, dict) or meta.get("stage") not in STAGES:
        return None
    card = hf / "README.md"
    write_text(card, build_card(paths, meta["stage"], int(meta.get("step", 0)), bool(meta.get("final"))))
    return card


def refresh_cards(run_dir: str | Path) -> list[Path]:
    """Rewrite the cards of every stage's final checkpoint (with the evaluation tables now on disk)."""
    from .checkpoint import final_checkpoint
    paths = RunPaths(run_dir)
    written = []
    for stage in STAGES:
        final = final_checkpoint(paths.checkpoints(stage))
        if final is not None and (card := write_card(paths, final)) is not None:
            written.append(card)
    return written
