"""The run report: one self-contained HTML file (plots embedded as base64 PNG) and a markdown twin, built only
from what is on disk in the run dir; stages never call it.

Reads ``manifest.json`` (stage status, iterations, checkpoints), ``metrics.jsonl`` (training curves and the
last record of each stage), ``eval/comparison.json`` and ``eval/<label>/summary.json`` (written by
``mathfirst-hpc eval --run-dir``) and ``eval/skills/`` (``mathfirst-hpc analyze skills``); whatever is missing
is left out of the report with a line saying how to produce it. Writes ``RUN_DIR/report/report.html``,
``report.md`` and the PNGs beside them.

    mathfirst-hpc report RUN_DIR
"""

from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import STAGES
from ..atomic import read_jsonl, write_text
from ..errors import RunDirError
from ..paths import RunPaths
from . import plots
from .skills import SKILL_TITLES, SKILLS

LAST_METRICS = ("reward_mean", "accuracy", "kept_group_fraction", "gen_batches", "response_len_mean",
                "response_len_max", "overlong_frac", "entropy", "clip_frac_low", "clip_frac_high", "grad_norm",
                "loss", "rollout_tokens_per_s", "train_tokens_per_s")

PLOT_CAPTIONS = {
    "reward_per_domain": "Mean reward of the sampled responses per domain, per RL iteration.",
    "response_length": "Response length in tokens (mean and max over the iteration's samples).",
    "kept_group_fraction": "Fraction of prompt groups kept by dynamic sampling (groups with unequal rewards).",
    "overlong_fraction": "Fraction of responses that reached the response length limit.",
    "sft_loss": "Stage 1 SFT loss per optimizer step.",
    "unparseable_per_domain": "Fraction of sampled responses with no parseable answer, per domain and RL iteration.",
    "heldout_per_stage": "Held-out accuracy per domain of the final checkpoint of each stage (eval --heldout).",
    "study": "Held-out accuracy, mean and std over seeds: sft, the curriculum, and the no-math-RL ablation.",
    "benchmarks_per_stage": "Benchmark pass@1 of each checkpoint (base and the final checkpoint of each stage).",
    "skills_per_stage_pattern": "Share of evaluated responses showing each reasoning skill (pattern classifier).",
    "skills_per_stage_judge": "Share of evaluated responses showing each reasoning skill (LLM judge).",
}


@dataclass
class Section:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def stage_section(run: RunPaths) -> Section:
    manifest = _read_json(run.manifest) or {}
    rows = []
    for stage in STAGES:
        info = manifest.get("stages", {}).get(stage, {})
        rows.append([stage, info.get("status", "absent"), _fmt(info.get("iteration")), _fmt(info.get("step")),
                     _fmt(info.get("final_checkpoint") or info.get("latest_checkpoint"))])
    note = "" if manifest else f"no manifest.json in {run.root}"
    return Section("Stages", ["stage", "status", "iteration", "optimizer step", "checkpoint"], rows, note)


def metrics_section(metrics: list[dict[str, Any]]) -> Section:
    """The last logged record of each stage, for the metrics it has."""
    last = {stage: [r for r in metrics if r.get("stage") == stage][-1]
            for stage in STAGES if any(r.get("stage") == stage for r in metrics)}
    keys = [k for k in LAST_METRICS if any(k in r for r in last.values())]
    rows = [[k, *[_fmt(last[s].get(k)) for s in last]] for k in keys]
    note = "" if last else "no metrics.jsonl records yet"
    return Section("Last logged metrics per stage", ["metric", *last], rows, note)


def eval_sections(run: RunPaths) -> list[Section]:
    comparison = _read_json(run.eval_dir / "comparison.json")
    if not comparison:
        return [Section("Benchmarks", [], [], f"no evaluation yet: run `mathfirst-hpc eval --run-dir {run.root} "
                                             "--benchmarks ... --data-dir ...`")]
    labels = comparison["checkpoints"]
    rows = [[r["row"], *[_pct(r.get(label)) for label in labels]] for r in comparison["rows"]]
    sections = [Section(f"Benchmarks: {comparison.get('metric', 'pass@1')} (%) per checkpoint",
                        ["benchmark", *labels], rows)]
    for label in labels:
        summary = _read_json(run.eval_dir / label / "summary.json")
        if not summary:
            continue
        detail = []
        for name, b in summary["benchmarks"].items():
            detail.append([b.get("title", name), b["domain"], str(b["problems"]), str(b["n"]), _pct(b.get("pass@1")),
                           _pct(b.get(f"avg@{b['n']}")), _pct(b.get(f"pass@{b['n']}")), str(b["errors"]),
                           str(b["unparseable"]), _pct(b.get("truncated_frac")), _fmt(b.get("response_tokens_mean"))])
        sections.append(Section(f"Evaluation detail: {label}",
                                ["benchmark", "domain", "problems", "n", "pass@1", "avg@n", "pass@n",
                                 "verifier errors", "unparseable", "truncated %", "mean tokens"], detail))
    return sections


def heldout_section(run: RunPaths) -> Section:
    """Held-out accuracy per domain (rows) and stage (columns), with n, interval and unparseable share."""
    table = _read_json(run.eval_dir / "heldout.json")
    if not table:
        return Section("Held-out accuracy per stage", [], [],
                       f"no held-out table yet: run `mathfirst-hpc eval --run-dir {run.root} --heldout`")
    detail = (_read_json(run.eval_dir / "heldout_detail.json") or {}).get("stages", {})
    stages = [s for s in ("base", *STAGES) if s in table]
    domains = sorted({d for row in table.values() for d in row})
    rows = []
    for domain in domains:
        cells = []
        for stage in stages:
            d = detail.get(stage, {}).get(domain)
            if domain not in table[stage]:
                cells.append("-")
            elif d:
                low, high = d["ci95"]
                cells.append(f"{_pct(d['accuracy'])} [{_pct(low)}, {_pct(high)}] (unparseable {_pct(d['unparseable'])})")
            else:
                cells.append(_pct(table[stage][domain]))
        rows.append([domain, *cells])
    decoding = (_read_json(run.eval_dir / "heldout_detail.json") or {}).get("decoding", "")
    n = {d: detail.get(stages[0], {}).get(d, {}).get("n") for d in domains}
    note = f"{decoding}; accuracy % [Wilson 95% interval]; problems per domain: " + \
        ", ".join(f"{d} {k}" for d, k in n.items() if k)
    return Section("Held-out accuracy per stage", ["domain", *stages], rows, note)


def skill_sections(run: RunPaths) -> list[Section]:
    out = []
    for classifier in ("pattern", "judge"):
        rows = _read_json(run.eval_dir / "skills" / f"frequencies_{classifier}.json")
        if rows:
            out.append(Section(f"Reasoning skills ({classifier} classifier): % of responses",
                               ["checkpoint", "domain", "responses", *[SKILL_TITLES[s] for s in SKILLS]],
                               [[r["checkpoint"], r["domain"], str(r["responses"]), *[_pct(r.get(s)) for s in SKILLS]]
                                for r in rows]))
    agreement = _read_json(run.eval_dir / "skills" / "agreement.json")
    if agreement:
        out.append(Section("Pattern classifier vs LLM judge", ["skill", "agreement %", "Cohen's kappa"],
                           [[SKILL_TITLES[s], _pct(v["agreement"]), _fmt(v["kappa"])]
                            for s, v in agreement["skills"].items()],
                           f"{agreement['judge_unparseable']} judge outputs were unparseable and left out."))
    if not out:
        out.append(Section("Reasoning skills", [], [], f"no skills analysis yet: run `mathfirst-hpc analyze skills "
                                                       f"{run.root}`"))
    return out


# ---------------------------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------------------------

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}img{max-width:100%}
figcaption{color:#555;font-size:.9em}.note{color:#666;font-style:italic}"""


def _html_table(section: Section) -> str:
    parts = [f"<h2>{html.escape(section.title)}</h2>"]
    if section.note:
        parts.append(f"<p class='note'>{html.escape(section.note)}</p>")
    if section.header:
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in section.header) + "</tr>")
        for row in section.rows:
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
    return "\n".join(parts)


def _md_table(section: Section) -> str:
    parts = [f"## {section.title}", ""]
    if section.note:
        parts += [f"_{section.note}_", ""]
    if section.header:
        parts.append("| " + " | ".join(section.header) + " |")
        parts.append("|" + "---|" * len(section.header))
        parts += ["| " + " | ".join(row) + " |" for row in section.rows]
        parts.append("")
    return "\n".join(parts)


def _figure_html(png: Path) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    caption = PLOT_CAPTIONS.get(png.stem, png.stem)
    return (f"<figure id='{png.stem}'><img alt='{png.name}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(png.name)}: {html.escape(caption)}</figcaption></figure>")


def build_study_report(study_dir: Path) -> dict[str, Any]:
    """A study folder (``study.json``, from ``mathfirst-hpc study``): the arms table, the plot, links to runs."""
    from ..study import read_study, study_markdown

    summary = read_study(study_dir)
    out = study_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    pngs = [p for p in [study_dir / "study.png"] if p.exists()]
    table_md = study_markdown(summary)
    runs = sorted(str(p.relative_to(study_dir)) for p in study_dir.glob("*/seed_*") if p.is_dir())
    title = f"mathfirst-hpc study report: {study_dir.name}"
    md = [f"# {title}", "", table_md, "", "Run dirs (each has its own report): " + ", ".join(runs), ""]
    md += [f"![{PLOT_CAPTIONS['study']}](../{p.name})\n" for p in pngs]
    body = [f"<h1>{html.escape(title)}</h1>", f"<pre>{html.escape(table_md)}</pre>",
            f"<p>Run dirs (each has its own report): {html.escape(', '.join(runs))}</p>"]
    body += [_figure_html(p) for p in pngs]
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    write_text(out / "report.html", page)
    write_text(out / "report.md", "\n".join(md))
    return {"html": out / "report.html", "markdown": out / "report.md", "plots": pngs}


def build_report(run_dir: Path | str) -> dict[str, Any]:
    """Write report.html, report.md and the plots under RUN_DIR/report/ (or a study folder's report). Returns
    the paths written."""
    run = RunPaths(run_dir)
    if not run.root.is_dir():
        raise RunDirError(f"run dir {run.root} does not exist")
    if (run.root / "study.json").exists():
        return build_study_report(run.root)
    out = run.report_dir
    out.mkdir(parents=True, exist_ok=True)
    metrics = read_jsonl(run.metrics)
    pngs = plots.write_plots(run.metrics, run.eval_dir, out)
    sections = [stage_section(run), metrics_section(metrics), heldout_section(run), *eval_sections(run),
                *skill_sections(run)]
    title = f"mathfirst-hpc run report: {run.root.name}"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>Run dir <code>{html.escape(str(run.root))}</code>, built {stamp} "
            "from the files on disk.</p>", _html_table(sections[0]), _html_table(sections[1]), "<h2>Training</h2>"]
    body += [_figure_html(p) for p in pngs if not p.stem.startswith(("benchmarks", "skills"))]
    if not any(not p.stem.startswith(("benchmarks", "skills")) for p in pngs):
        body.append("<p class='note'>no training curves yet (metrics.jsonl is empty)</p>")
    body += [_html_table(s) for s in sections[2:] if not s.title.startswith("Reasoning skills")
             and not s.title.startswith("Pattern")]
    body += [_figure_html(p) for p in pngs if p.stem.startswith("benchmarks")]
    body += [_html_table(s) for s in sections[2:] if s.title.startswith(("Reasoning skills", "Pattern"))]
    body += [_figure_html(p) for p in pngs if p.stem.startswith("skills")]
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    md = [f"# {title}", "", f"Run dir `{run.root}`, built {stamp} from the files on disk.", ""]
    md += [_md_table(s) for s in sections]
    md += ["## Plots", ""] + [f"![{PLOT_CAPTIONS.get(p.stem, p.stem)}]({p.name})\n" for p in pngs]
    write_text(out / "report.html", page)
    write_text(out / "report.md", "\n".join(md))
    return {"html": out / "report.html", "markdown": out / "report.md", "plots": pngs}
