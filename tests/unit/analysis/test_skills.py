"""Skill classifiers: the pattern classifier on handwritten labelled traces (precision and recall printed), the
strict judge-output parser, the LLM-judge classifier over a RolloutEngine, frequencies and agreement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mathfirst_hpc.analysis import skills as S
from mathfirst_hpc.errors import DataError
from mathfirst_hpc.rollout.base import Sample

HERE = Path(__file__).parent


def _load(name: str) -> list[dict]:
    return yaml.safe_load((HERE / name).read_text())


def _report(title: str, traces: list[dict]) -> dict:
    predicted = [S.classify_patterns(t["text"]) for t in traces]
    scores = S.precision_recall(predicted, [t["labels"] for t in traces])
    print(f"\n{title}: {len(traces)} traces")
    print(f"{'skill':20s} precision  recall  support")
    for skill, s in scores.items():
        print(f"{skill:20s} {s['precision']:9.2f} {s['recall']:7.2f} {int(s['support']):8d}")
    return scores


def test_labelled_traces_are_well_formed():
    for name in ("labelled_traces.yaml", "labelled_traces_heldout.yaml"):
        traces = _load(name)
        assert all(set(t["labels"]) <= set(S.SKILLS) and t["text"].strip() for t in traces)
    assert len(_load("labelled_traces.yaml")) >= 40
    assert all(sum(s in t["labels"] for t in _load("labelled_traces.yaml")) >= 5 for s in S.SKILLS)


def test_pattern_classifier_on_the_tuning_traces():
    scores = _report("pattern classifier, tuning traces (optimistic: the cues were written against them)",
                     _load("labelled_traces.yaml"))
    for skill, s in scores.items():
        assert s["precision"] >= 0.9 and s["recall"] >= 0.9, skill


def test_pattern_classifier_on_held_out_traces():
    """Measured, not tuned: lexical cues miss paraphrases (low recall) but rarely fire wrongly."""
    traces = _load("labelled_traces_heldout.yaml")
    scores = _report("pattern classifier, held-out traces", traces)
    predicted = [S.classify_patterns(t["text"]) for t in traces]
    tp = sum(p[s] and s in t["labels"] for p, t in zip(predicted, traces) for s in S.SKILLS)
    fp = sum(p[s] and s not in t["labels"] for p, t in zip(predicted, traces) for s in S.SKILLS)
    fn = sum(not p[s] and s in t["labels"] for p, t in zip(predicted, traces) for s in S.SKILLS)
    print(f"micro: precision {tp / (tp + fp):.2f} recall {tp / (tp + fn):.2f}")
    assert tp / (tp + fp) >= 0.75
    assert all(s["support"] >= 4 for s in scores.values())
    negatives = [p for p, t in zip(predicted, traces) if not t["labels"]]
    assert sum(any(p.values()) for p in negatives) == 0      # skill-free traces stay unlabelled


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
