"""Reasoning-skill labels of responses: backtracking, verification, subgoal setting, enumeration, backward chaining.

Two classifiers label each response with a yes/no per skill:

(a) :func:`classify_patterns`, a fast pattern classifier: a few regular expressions per skill ("wait, that's
    wrong", "let me check", "case 1 ... case 2", "working backwards"), some requiring a repeated cue;
(b) :class:`JudgeClassifier`, an LLM judge over any :class:`~mathfirst_hpc.rollout.base.RolloutEngine` (HF on the
    CPU, vLLM on a GPU). It must answer exactly five ``skill: yes|no`` lines in a fixed order; any other output is
    *unparseable*: counted and reported, never guessed.

:func:`skill_frequencies` gives, per checkpoint and domain, the fraction of responses showing each skill (the
paper reports backtracking/verification rising to 20-30% in some domains); :func:`agreement` compares (a) with
(b) per skill (raw agreement and Cohen's kappa) over the responses the judge labelled.

Run it with ``mathfirst-hpc analyze skills RUN_DIR_OR_EVAL_DIR [--judge-model PATH]``; it reads the per-sample
results that ``mathfirst-hpc eval`` wrote and writes ``skills/`` beside them.

Simplifications: the patterns are English-only and lexical (a trace that backtracks silently is missed); the judge
sees at most ``max_chars`` characters of each response (head and tail kept).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..rollout.base import RolloutEngine, SamplingParams

SKILLS: tuple[str, ...] = ("backtracking", "verification", "subgoal_setting", "enumeration", "backward_chaining")

SKILL_TITLES = {
    "backtracking": "Backtracking",
    "verification": "Verification",
    "subgoal_setting": "Subgoal setting",
    "enumeration": "Enumeration",
    "backward_chaining": "Backward chaining",
}

SKILL_DEFINITIONS = {
    "backtracking": "abandons a step or approach that went wrong and goes back or tries another one",
    "verification": "checks an intermediate or final result (substitutes back, recomputes, tests)",
    "subgoal_setting": "splits the task into intermediate goals (first ..., then ...; step 1, step 2)",
    "enumeration": "systematically lists cases, candidates or possibilities and examines each",
    "backward_chaining": "reasons from the goal or required result back towards the givens",
}

Labels = dict[str, bool]


# ---------------------------------------------------------------------------------------------------------------
# (a) pattern classifier
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cue:
    """A regular expression that signals a skill when it matches at least ``min_count`` times."""

    pattern: str
    min_count: int = 1
    compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", re.compile(self.pattern, re.IGNORECASE | re.MULTILINE))

    def hits(self, text: str) -> list[str]:
        found = [m.group(0) for m in self.compiled.finditer(text)]
        return found if len(found) >= self.min_count else []


# Each cue is written against a behaviour, not a single test trace; "wait" and "check" alone are not cues
# because they are ordinary words ("wait while it boils", "a bank check").
CUES: dict[str, tuple[Cue, ...]] = {
    "backtracking": (
        Cue(r"\b(?:no,?\s+)?wait\b\s*[,.!:;-]"),
        Cue(r"\b(?:hmm|oops|whoops)\b[,.!]?\s*(?:no\b|that|this|i\b|wait)"),
        Cue(r"\boops\b"),
        Cue(r"\b(?:that|this|it)(?:'s| is| was)\s+(?:not right|wrong|incorrect|a mistake)"),
        Cue(r"\b(?:doesn't|does not|didn't|did not)\s+(?:look right|seem right|work|hold|add up)"),
        Cue(r"\bcan(?:'t|not)\s+be\s+(?:right|correct)"),
        Cue(r"\bi\s+(?:think\s+)?(?:this|that)\s+is\s+(?:incorrect|wrong)"),
        Cue(r"\bi\s+(?:made|have made)\s+(?:a|an)\s+(?:mistake|error)|\bmy mistake\b"),
        Cue(r"\bi\s+(?:misread|miscalculated|miscounted|mixed up|forgot|missed|dropped|added .{0,20}instead)"),
        Cue(r"\b(?:let me|let's|i'll|i will|i need to|we need to)\s+(?:redo|re-do|reconsider|recompute|recalculate|"
            r"rethink|revise|correct|fix|start over|go back)"),
        Cue(r"\b(?:try|trying|use|using)\s+(?:a\s+)?(?:different|another|new)\s+(?:approach|method|idea|way|strategy)"),
        Cue(r"\b(?:start(?:ing)? over|scratch that|on second thought|hold on)\b"),
        Cue(r"\bgo(?:ing)?\s+back\s+(?:to|over)\b"),
        Cue(r"\b(?:hypothesis|assumption|approach|guess)\s+(?:fails|failed|is wrong|was wrong)"),
        Cue(r"\bcontradicts?\b"),
        Cue(r"\bactually,?\s+(?:hold on|no\b|wait|i\b|that|this|it's)"),
        Cue(r"\balternatively,?\s+(?:maybe|perhaps|let me|let's|i\b|we\b)"),
        Cue(r"\b(?:i|we)\s+(?:slipped|erred|messed up|got (?:that|it) wrong|was wrong|were wrong)\b"),
        Cue(r"\b(?:recomput|recalculat|redo|re-do|rework)(?:e|ed|es|ing)?\b"),
        Cue(r"\b(?:isn't|is not|wasn't|was not|aren't|are not)\s+working\b"),
        Cue(r"\blet me instead\b|\binstead,?\s+(?:let me|let's|i'll|we)\b"),
        Cue(r"\b(?:dropping|abandon\w*|discard\w*)\s+(?:that|this|the|my)\s+(?:assumption|approach|idea|hypothesis|guess)"),
        Cue(r"\b(?:is|are|was|were|gets|get)\s+violated\b"),
        Cue(r"(?:^|[.!?]\s+)no\s*[-\u2013\u2014,.]\s"),
        Cue(r"\bwait a (?:second|moment|minute)\b|\boh,?\s+(?:no|i|wait)\b"),
        Cue(r"\bmis-?(?:add|read|count|calculat|comput|appl|understood|interpret|took|stat|cop)\w*"),
        Cue(r"\b(?:reasoning|approach|idea|attempt|assumption|logic)\s+(?:was|is)\s+(?:flawed|wrong|incorrect|invalid)"),
        Cue(r"\b(?:idea|approach|hypothesis|option|guess)\s+is\s+out\b|\bnew (?:idea|approach|plan|attempt)\b"),
        Cue(r"\b(?:i|we)\s+(?:used|took|picked|applied|wrote|had)\s+the\s+wrong\b"),
        Cue(r"\bmy (?:first|earlier|previous|initial) (?:attempt|answer|approach|guess|value|try)\b"),
    ),
    "verification": (
        Cue(r"\b(?:let me|let's|let us|i'll|i will|we can|to)\s+(?:now\s+)?(?:check|verify|confirm|double[- ]check|"
            r"make sure|be sure|sanity[- ]check)"),
        Cue(r"\bcheck(?:ing)?\b\s*(?:it|this|that|the answer|the result|our answer)?\s*[:]"),
        Cue(r"\b(?:double[- ]check|sanity check|verif(?:y|ied|ies|ying|ication))"),
        Cue(r"\b(?:plug(?:ging)?|substitut\w*)\s+(?:\w+\s+){0,2}back\b"),
        Cue(r"✓|✔"),
        Cue(r"\b(?:to be sure|make sure|to confirm|confirms?|confirmed)\b"),
        Cue(r"\b(?:agrees|consistent) with\b|\bchecks out\b|\bas expected\b"),
        Cue(r"\btest(?:ing)?\s+(?:it|this|the function|the code)\s+(?:on|with)\b"),
        Cue(r"\bby another (?:route|method|way)\b|\b(?:differentiat|multiply|add)ing\s+(?:back\s+)?to check\b"),
        Cue(r"\b(?:once more|again) to be sure\b|\btrace it (?:once more|again)\b"),
        Cue(r"\bplug(?:ging|ged)?\s+\S+(?:\s*=\s*\S+)?\s+(?:in|into|back)\b"),
        Cue(r"\bwhich matches\b|\bmatches the (?:given|expected|original|right|left|target|answer)"),
        Cue(r"\b(?:run|go|went|walk|step)\s+through\s+.{0,30}?\b(?:again|by hand|once more)\b"),
        Cue(r"\b(?:re-?)?check(?:ed|s)?\s+(?:against|with)\b"),
        Cue(r"\bcross-?check|\bas a check\b"),
        Cue(r"\b(?:i|we)\s+(?:tested|checked|verified)\b|\btested (?:it|this|them)\b"),
        Cue(r"\b(?:the same|same) (?:value|result|answer|number)\b"),
    ),
    "subgoal_setting": (
        # "first" as a plan opener (sentence start, "we first", "by first"), not as a position ("Alice is first")
        Cue(r"(?:^|[.:;!?]\s+|\b(?:so|and|we|i|by|to|will|should|must|'ll|let's)\s+)first(?:\s*,|\s+(?:we|i|let's|let|\w+ing|find|compute|calculate|determine|note|figure|work|solve|consider|"
            r"get|set|define|identify|write|use|count|list|simplify|convert|express|rewrite|show|prove|apply|look)\b)"
            r"[\s\S]{0,400}?\b(?:then|next|finally|second(?:ly)?|after that)\b"),
        Cue(r"\bstep\s*(?:1|one)\b[\s\S]{0,400}?\bstep\s*(?:2|two)\b"),
        Cue(r"\bplan\s*:"),
        Cue(r"(?<![\w)\]])\((?:1|a|i)\)[\s\S]{0,300}?(?<![\w)\]])\((?:2|b|ii)\)"),
        Cue(r"\bbreak(?:ing)?\s+(?:this|it|the problem|the task)\s+(?:down|into)\b"),
        Cue(r"\b(?:split|divide|decompose)\s+(?:the|this)\s+(?:count|problem|task|question)\s+into\b"),
        Cue(r"\bsub-?(?:problems?|goals?|tasks?)\b"),
        Cue(r"\b(?:in|into)\s+(?:two|three|four|several|smaller)\s+(?:parts|stages|steps|pieces)\b|\bin stages\b"),
        Cue(r"\bwe need two things\b|\bour goal is\b"),
        Cue(r"\b(?:we need to|need to|we must|we have to|we should)\s+(?:compute|find|determine|figure out|work out|know)"
            r"\b.{0,80}?\b(?:before|first)\b"),
        Cue(r"\b(?:before anything else|to begin with|to start with)\b"),
        Cue(r"\bintermediate (?:results?|goals?|steps?|quantities|values)\b|\b(?:a few|several|two|three) pieces\b"),
        Cue(r"\bour first (?:target|goal|step|task)\b"),
    ),
    "enumeration": (
        Cue(r"\bcase\s+(?:\d+|[ivx]+|[a-d])\b", min_count=2),
        Cue(r"\bin (?:both|all|each of the) cases\b"),
        Cue(r"\b(?:option|house|scenario|candidate|possibility)\s+(?:\d+|[a-j])\s*[:)]", min_count=2),
        Cue(r"\b(?:let's|let me|we)\s+list\b|\blist (?:them|all|every)\b"),
        Cue(r"\ball (?:the )?(?:possible|subsets|pairs|possibilities|combinations|orderings|permutations|cases|"
            r"arrangements|options|candidates)\b"),
        Cue(r"\bpossible (?:\w+\s+)?(?:values|moves|orderings|outcomes|pairs|choices|cases|arrangements|options)\b"),
        Cue(r"\bgo(?:ing)?\s+through\s+(?:them|the \w+|all|each|every)\b"),
        Cue(r"(?:^|[.;]\s+)if\s+\w+\s*,", min_count=3),
        Cue(r"\b[a-z]\s*=\s*-?\d+\s*,\s*-?\d+\s*,\s*-?\d+"),
        Cue(r"\b(?:try|trying|test|testing|check|checking|consider)\s+(?:each|every|all)\b"),
        Cue(r"\bone by one\b|\b(?:each|them|all|every \w+) in turn\b"),
        Cue(r"\benumerat\w*|\bthe candidates? (?:for|are)\b"),
        Cue(r"\b(?:for|if)\s+[a-z]\s*=\s*-?\d+\s*[:,]", min_count=2),
        Cue(r"\b[a-z]\s*=\s*-?\d+\s+gives\b", min_count=2),
        # tuples, not call arguments: f(a, b) is no enumeration
        Cue(r"(?<![\w)\]])\(\s*-?\w+\s*,\s*-?\w+\s*\)", min_count=3),
        Cue(r"(?<![a-z])\{[^{}\n]{0,20}\}", min_count=4),
    ),
    "backward_chaining": (
        Cue(r"\b(?:work|working|worked|reason|reasoning|go|going)\s+backwards?\b"),
        Cue(r"\bstart(?:ing)?\s+(?:from|with|at)\s+the\s+(?:goal|end|answer|target|desired|output|final|result)"),
        Cue(r"\bmust have (?:been|received|had|come|started)\b"),
        Cue(r"\bfor the (?:output|result|answer|final value|sum|total) to be\b"),
        Cue(r"\bmust be\s+\S+\s+before\b"),
        Cue(r"\bthe last (?:step|operation|line|move|coin|press)\s+(?:must|could|has to|is|sets)\b"),
        Cue(r"\bto (?:find|get|reach|obtain|make|compute|determine)\s+[^.,;]{1,40},?\s+we\s+(?:need|must|have to)\b",
            min_count=2),
        Cue(r"\bwhat the final (?:answer|result) (?:has to|must|should) (?:look like|be)\b"),
        Cue(r"\breason(?:ing)?\s+from\s+(?:that|the|this)\s+(?:requirement|goal|target|condition|result|answer|end)"),
        Cue(r"\bthe (?:answer|result|output|number) must (?:be|have|satisfy)\b"),
        Cue(r"\bone (?:step|press|move|operation) earlier\b|\bbefore (?:that|the last) (?:press|step|move|operation)\b"),
        Cue(r"\bto (?:make|get|reach|end (?:up )?with) the (?:final|desired|target)\b"),
        Cue(r"\b(?:that|this|which) requires\b"),
        Cue(r"\bcan only (?:be )?(?:entered|reached|come|obtained|produced|made) from\b"),
        Cue(r"\bwork(?:ing)? from the (?:desired|target|goal|end|output|answer|final)"),
        Cue(r"\bin order to answer\b|\bwhat do we need\b"),
        Cue(r"\bfor the (?:final|desired|target) \w+ to\b"),
    ),
}


def pattern_hits(text: str) -> dict[str, list[str]]:
    """The matched snippets per skill (empty list = skill absent): the explanation of :func:`classify_patterns`."""
    return {skill: [hit for cue in CUES[skill] for hit in cue.hits(text)] for skill in SKILLS}


def classify_patterns(text: str) -> Labels:
    """Label one response with the pattern classifier."""
    return {skill: bool(hits) for skill, hits in pattern_hits(text).items()}


# ---------------------------------------------------------------------------------------------------------------
# (b) LLM judge
# ---------------------------------------------------------------------------------------------------------------

JUDGE_TEMPLATE = """You label a reasoning trace for five behaviours. Definitions:
{definitions}

Trace:
<<<
{trace}
>>>

Reply with exactly five lines, in this order, each of the form "name: yes" or "name: no", and nothing else:
{format_lines}"""

_JUDGE_LINE = re.compile(r"^\s*([a-z_]+)\s*:\s*(yes|no)\s*$", re.IGNORECASE)


def judge_prompt(response: str, max_chars: int = 6000) -> str:
    """The judge's user message for one response (long responses keep their head and tail)."""
    if len(response) > max_chars:
        half = max_chars // 2
        response = response[:half] + "\n[...]\n" + response[-half:]
    definitions = "\n".join(f"- {s}: {SKILL_DEFINITIONS[s]}" for s in SKILLS)
    format_lines = "\n".join(f"{s}: yes|no" for s in SKILLS)
    return JUDGE_TEMPLATE.format(definitions=definitions, trace=response, format_lines=format_lines)


def parse_judge_output(text: str) -> Labels | None:
    """Parse a judge reply strictly: exactly the five ``skill: yes|no`` lines in order, blank lines allowed.

    Anything else (a missing or extra line, another order, a 'maybe') returns None: unparseable.
    """
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if len(lines) != len(SKILLS):
        return None
    labels: Labels = {}
    for skill, line in zip(SKILLS, lines):
        match = _JUDGE_LINE.match(line)
        if match is None or match.group(1).lower() != skill:
            return None
        labels[skill] = match.group(2).lower() == "yes"
    return labels


class JudgeClassifier:
    """Labels responses with a judge model behind any RolloutEngine.

    ``encode`` turns chat messages into prompt token ids (the judge tokenizer's chat template).
    """

    def __init__(self, engine: RolloutEngine, encode: Callable[[list[dict[str, str]]], list[int]],
                 max_new_tokens: int = 48, batch_size: int = 16, temperature: float = 1e-3,
                 max_chars: int = 6000) -> None:
        self.engine = engine
        self.encode = encode
        self.sampling = SamplingParams(n=1, temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens)
        self.batch_size = batch_size
        self.max_chars = max_chars
        self.raw_outputs: list[str] = []

    def classify(self, responses: Sequence[str]) -> list[Labels | None]:
        """One Labels per response, or None when the judge's reply did not parse."""
        out: list[Labels | None] = []
        for start in range(0, len(responses), self.batch_size):
            batch = responses[start:start + self.batch_size]
            prompts = [self.encode([{"role": "user", "content": judge_prompt(r, self.max_chars)}]) for r in batch]
            for samples in self.engine.generate(prompts, self.sampling):
                text = samples[0].text
                self.raw_outputs.append(text)
                out.append(parse_judge_output(text))
        return out


# ---------------------------------------------------------------------------------------------------------------
# Frequencies and agreement
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class LabelledResponse:
    checkpoint: str
    domain: str
    benchmark: str
    uid: str
    sample_index: int
    pattern: Labels
    judge: Labels | None = None
    """None: no judge was run, or its output did not parse (see ``judge_status``)."""
    judge_status: str = "not_run"
    """not_run | parsed | unparseable"""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def skill_frequencies(rows: Iterable[LabelledResponse], which: str = "pattern") -> list[dict[str, Any]]:
    """Per (checkpoint, domain): responses counted and the fraction showing each skill.

    ``which`` = pattern | judge. For the judge, unparseable responses are left out of the fraction and counted
    in ``unparseable``. Rows are sorted by checkpoint order of first appearance, then domain; a domain ``all``
    row per checkpoint pools its domains.
    """
    groups: dict[tuple[str, str], list[LabelledResponse]] = defaultdict(list)
    order: list[str] = []
    for row in rows:
        if row.checkpoint not in order:
            order.append(row.checkpoint)
        groups[(row.checkpoint, row.domain)].append(row)
        groups[(row.checkpoint, "all")].append(row)
    table = []
    for checkpoint in order:
        domains = sorted(d for c, d in groups if c == checkpoint and d != "all") + ["all"]
        for domain in domains:
            members = groups[(checkpoint, domain)]
            labels = [getattr(r, which) for r in members]
            parsed = [lab for lab in labels if lab is not None]
            record: dict[str, Any] = {"checkpoint": checkpoint, "domain": domain, "responses": len(members),
                                      "labelled": len(parsed),
                                      "unparseable": sum(r.judge_status == "unparseable" for r in members)
                                      if which == "judge" else 0}
            for skill in SKILLS:
                record[skill] = (sum(lab[skill] for lab in parsed) / len(parsed)) if parsed else None
            table.append(record)
    return table


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> float | None:
    """Cohen's kappa of two binary labelings; None when undefined (fewer than one item or chance agreement 1)."""
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    expected = pa * pb + (1 - pa) * (1 - pb)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1 - expected)


def agreement(rows: Sequence[LabelledResponse]) -> dict[str, Any]:
    """Pattern vs judge per skill over the responses the judge labelled; counts the unparseable ones."""
    both = [r for r in rows if r.judge is not None]
    result: dict[str, Any] = {"responses": len(rows), "judge_labelled": len(both),
                              "judge_unparseable": sum(r.judge_status == "unparseable" for r in rows),
                              "skills": {}}
    for skill in SKILLS:
        a = [r.pattern[skill] for r in both]
        b = [r.judge[skill] for r in both if r.judge is not None]
        result["skills"][skill] = {
            "agreement": (sum(x == y for x, y in zip(a, b)) / len(a)) if a else None,
            "kappa": cohen_kappa(a, b),
            "pattern_yes": sum(a), "judge_yes": sum(b),
        }
    return result


def precision_recall(predicted: Sequence[Labels], gold: Sequence[Iterable[str]]) -> dict[str, dict[str, float]]:
    """Per-skill precision, recall and support of predicted labels against gold skill sets."""
    gold_sets = [set(g) for g in gold]
    out = {}
    for skill in SKILLS:
        tp = sum(p[skill] and skill in g for p, g in zip(predicted, gold_sets))
        fp = sum(p[skill] and skill not in g for p, g in zip(predicted, gold_sets))
        fn = sum(not p[skill] and skill in g for p, g in zip(predicted, gold_sets))
        out[skill] = {"precision": tp / (tp + fp) if tp + fp else 1.0,
                      "recall": tp / (tp + fn) if tp + fn else 1.0,
                      "support": float(tp + fn)}
    return out


# ---------------------------------------------------------------------------------------------------------------
# The analysis over evaluation results on disk
# ---------------------------------------------------------------------------------------------------------------

def eval_root_of(source: Path | str) -> Path:
    """An evaluation folder from a run dir (its eval/) or an evaluation output folder itself."""
    from ..errors import DataError
    from ..paths import RunPaths

    source = Path(source).expanduser()
    if not source.is_dir():
        raise DataError(f"{source} is not a folder", hint="give a run dir or the --out folder of mathfirst-hpc eval")
    run = RunPaths(source)
    if run.manifest.exists() or (source / "config").is_dir():
        return run.eval_dir
    return source


def read_eval_responses(eval_root: Path) -> list[dict[str, Any]]:
    """Every per-sample row under an evaluation folder, checkpoints in evaluation order."""
    from ..atomic import read_jsonl
    from ..errors import DataError
    from ..eval.harness import EvalPaths

    paths = EvalPaths(eval_root)
    rows: list[dict[str, Any]] = []
    for label in paths.labels():
        for chunk in sorted(paths.label_dir(label).glob("*/chunk_*.jsonl")):
            rows.extend(read_jsonl(chunk))
    if not rows:
        raise DataError(f"no evaluation results under {eval_root}", hint="run mathfirst-hpc eval first")
    return rows


def _write_table(base: Path, rows: list[dict[str, Any]], title: str) -> None:
    import csv
    import io

    from ..atomic import write_json, write_text

    write_json(base.with_suffix(".json"), rows)
    if not rows:
        return
    header = list(rows[0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(base.with_suffix(".csv"), buffer.getvalue())
    shown = [[("-" if v is None else f"{100 * v:.1f}") if k in SKILLS else str(v) for k, v in r.items()]
             for r in rows]
    md = [f"# {title}", "", "Skill columns: % of labelled responses.", "",
          "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in shown]
    write_text(base.with_suffix(".md"), "\n".join(md) + "\n")


def analyze_skills(source: Path | str, judge: JudgeClassifier | None = None,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Label every evaluated response, write skills/ beside the results, return frequencies and agreement."""
    from ..atomic import write_json, write_text

    eval_root = eval_root_of(source)
    rows = read_eval_responses(eval_root)
    labelled = [LabelledResponse(r.get("checkpoint", "?"), r.get("domain", "?"), r.get("benchmark", "?"),
                                 r.get("uid", "?"), int(r.get("sample_index", 0)), classify_patterns(r["response"]))
                for r in rows]
    if judge is not None:
        if progress:
            progress(f"judging {len(rows)} responses")
        for item, verdict in zip(labelled, judge.classify([r["response"] for r in rows])):
            item.judge = verdict
            item.judge_status = "parsed" if verdict is not None else "unparseable"
    out = eval_root / "skills"
    write_text(out / "labels.jsonl", "".join(json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in labelled))
    result: dict[str, Any] = {"responses": len(labelled), "pattern": skill_frequencies(labelled, "pattern")}
    _write_table(out / "frequencies_pattern", result["pattern"], "Skill frequencies (pattern classifier)")
    if judge is not None:
        result["judge"] = skill_frequencies(labelled, "judge")
        result["agreement"] = agreement(labelled)
        _write_table(out / "frequencies_judge", result["judge"], "Skill frequencies (LLM judge)")
        write_json(out / "agreement.json", result["agreement"])
        write_text(out / "agreement.md", agreement_markdown(result["agreement"]))
    return result


def agreement_markdown(result: dict[str, Any]) -> str:
    lines = ["# Pattern classifier vs LLM judge", "",
             f"{result['judge_labelled']} of {result['responses']} responses labelled by the judge; "
             f"{result['judge_unparseable']} judge outputs unparseable (left out, not guessed).", "",
             "| skill | agreement (%) | Cohen's kappa | pattern yes | judge yes |", "|---|---|---|---|---|"]
    for skill, s in result["skills"].items():
        agree = "-" if s["agreement"] is None else f"{100 * s['agreement']:.1f}"
        kappa = "-" if s["kappa"] is None else f"{s['kappa']:.2f}"
        lines.append(f"| {SKILL_TITLES[skill]} | {agree} | {kappa} | {s['pattern_yes']} | {s['judge_yes']} |")
    return "\n".join(lines) + "\n"


def make_judge(model_path: str, backend: str = "hf", max_new_tokens: int = 48, batch_size: int = 16
               ) -> JudgeClassifier:
    """A JudgeClassifier on a local HF model folder, served by the HF engine (CPU/GPU) or vLLM."""
    from ..eval.harness import EvalConfig, EvalPaths, EvalTarget, default_engine_factory

    cfg = EvalConfig(benchmarks=["math500"], backend=backend, max_new_tokens=max_new_tokens,  # type: ignore[arg-type]
                     batch_size=batch_size)
    engine, encode = default_engine_factory(cfg, EvalPaths("."))(EvalTarget("judge", hf_path=model_path))
    return JudgeClassifier(engine, encode, max_new_tokens=max_new_tokens, batch_size=batch_size)
