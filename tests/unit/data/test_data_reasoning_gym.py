"""reasoning-gym as a data source: rows, routing, traces, held-out disjointness, bad configs."""

from __future__ import annotations

import pytest

from mathfirst_hpc.config import GeneratorSpec, RewardConfig, load_stage_config
from mathfirst_hpc.data.mix import DomainMixer, generated_problems, heldout_problems, is_heldout_prompt, training_pool
from mathfirst_hpc.data.reasoning_gym import arithmetic_trace, make_rg_problems, rg_entry, seed_for
from mathfirst_hpc.data.synthetic import EXTRA_KINDS, make_problems
from mathfirst_hpc.errors import DataError
from mathfirst_hpc.rewards import RewardRouter, domain_of

CHAIN = GeneratorSpec(name="chain_sum", config={"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1})


def test_rows_are_deterministic_typed_and_routed_to_their_domain() -> None:
    a = make_rg_problems("math", CHAIN, 20, seed=3)
    b = make_rg_problems("math", CHAIN, 30, seed=3)[:20]  # a prefix of a larger pool is the smaller pool
    assert [p.prompt for p in a] == [p.prompt for p in b]
    assert a[0].data_source == "math__rg_chain_sum" and domain_of(a[0].data_source) == "math"
    assert a[0].prompt[0]["content"].endswith("\\boxed{}.")
    assert len({p.uid for p in a}) == 20
    logic = make_rg_problems("logic", GeneratorSpec(name="syllogism"), 3, seed=0)
    assert domain_of(logic[0].data_source) == "logic"


def test_every_trace_reaches_the_key_and_scores_correct() -> None:
    problems = make_rg_problems("math", CHAIN, 64, seed=0)
    assert all(p.solution for p in problems)
    results = RewardRouter(RewardConfig()).score_batch(problems, [p.solution for p in problems])
    assert all(r.verdict == "correct" for r in results), [r.reason for r in results if r.verdict != "correct"]


def test_arithmetic_trace_steps_and_refusals() -> None:
    assert arithmetic_trace("4 - 1 - 7", "-4") == "4 - 1 = 3. 3 - 7 = -4. \\boxed{-4}"
    assert arithmetic_trace("2 + 3 * 4", "14") == "3 * 4 = 12. 2 + 12 = 14. \\boxed{14}"
    assert arithmetic_trace("2 + 3", "6") is None          # never a trace that disagrees with the key
    assert arithmetic_trace("1 / 0", "0") is None
    assert arithmetic_trace("__import__('os')", "0") is None


def test_rg_entry_gives_the_row_back_for_its_own_scorer() -> None:
    problem = make_rg_problems("math", CHAIN, 5, seed=1, split="heldout")[4]
    dataset, entry = rg_entry(problem)
    assert entry["question"] in problem.prompt[0]["content"]
    assert dataset.score_answer(problem.ground_truth, entry) == 1.0


def test_heldout_is_disjoint_from_training_and_seeds_differ() -> None:
    assert seed_for(0, "chain_sum", "train") != seed_for(0, "chain_sum", "heldout")
    cfg = load_stage_config("math_rl", "tiny", ["data.synthetic_size=4096"], check_files=False)
    pool = training_pool(cfg.data, "math", cfg.seed)
    train = {p.prompt[0]["content"] for p in pool}
    held = heldout_problems(cfg.data, "math", cfg.seed, 200)
    assert len(pool) == 4096 and len(held) == 200
    assert not train & {p.prompt[0]["content"] for p in held}
    assert all(is_heldout_prompt(p) for p in held) and not any(is_heldout_prompt(p) for p in pool)


def test_heldout_follows_the_training_distribution() -> None:
    """The held-out part of the space is chosen by prompt hash, not by what training happened to draw: the term
    counts of held-out chain sums match the training pool's (dropping seen prompts instead left 4-term sums only)."""
    cfg = load_stage_config("math_rl", "tiny", ["data.synthetic_size=8192"], check_files=False)

    def term_shares(problems) -> list[float]:
        left_sides = [p.prompt[0]["content"].split("=")[0] for p in problems]
        counts = [side.count(" + ") + side.count(" - ") for side in left_sides]
        return [counts.count(k) / len(counts) for k in (1, 2, 3)]

    train, held = term_shares(training_pool(cfg.data, "math", 0)), term_shares(heldout_problems(cfg.data, "math", 0))
    assert all(abs(a - b) < 0.1 for a, b in zip(train, held)), (train, held)


def test_generators_share_the_domain_by_weight_and_the_mixer_resumes() -> None:
    cfg = load_stage_config("math_rl", "tiny", [
        "data.synthetic_size=30",
        "data.mix.math.generators=[{name: chain_sum, weight: 2}, {name: basic_arithmetic, weight: 1}]"],
        check_files=False)
    items = generated_problems(cfg.data, "math", 30, 0)
    sources = [p.data_source for p in items]
    assert sources.count("math__rg_chain_sum") == 20 and sources.count("math__rg_basic_arithmetic") == 10
    mixer = DomainMixer(cfg.data, seed=0)
    mixer.next_batch(7)
    state = mixer.state_dict()
    again = DomainMixer(cfg.data, seed=0)
    again.load_state_dict(state)
    assert [p.uid for p in again.next_batch(5)] == [p.uid for p in mixer.next_batch(5)]


def test_transfer_kinds_have_correct_traces() -> None:
    router = RewardRouter(RewardConfig())
    for domain, kinds in EXTRA_KINDS.items():
        for kind in kinds:
            problems = make_problems(domain, 24, 0, kind=kind)
            results = router.score_batch(problems, [p.solution for p in problems])
            assert all(r.verdict == "correct" for r in results), (domain, kind, [r.reason for r in results])
            held = make_problems(domain, 24, 0, kind=kind, split="heldout")
            assert {p.uid for p in held}.isdisjoint({p.uid for p in problems})


@pytest.mark.parametrize("override,message", [
    ("data.mix.math.generators=[{name: chain_summ}]", "did you mean chain_sum"),
    ("data.mix.math.generators=[{name: chain_sum, config: {no_such_knob: 1}}]", "bad config"),
    ("data.mix.math.generators=[{name: most, source: synthetic}]", "has no kind"),
])
def test_bad_generators_are_one_clear_error(override: str, message: str) -> None:
    cfg = load_stage_config("math_rl", "tiny", [override], check_files=False)
    with pytest.raises(DataError) as exc:
        generated_problems(cfg.data, "math", 4, 0)
    assert message in exc.value.one_line()


@pytest.mark.parametrize("name", ["chain_sum", "basic_arithmetic", "gsm_symbolic", "knights_knaves"])
def test_our_verifier_agrees_with_reasoning_gym_on_references_and_wrong_answers(name: str) -> None:
    """bench/rg_agreement.py in small: every reference is accepted and every wrong value rejected by our verifier,
    and by reasoning-gym's scorer except its documented gsm_symbolic sign slip (its regex drops a leading '-')."""
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("rg_agreement", Path(__file__).parents[3] / "bench" / "rg_agreement.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["rg_agreement"] = module
    spec.loader.exec_module(module)
    domain, config = {**module.PRESET_GENERATORS, **module.OTHER_GENERATORS}[name]
    c = module.compare(name, domain, config, entries=12)["counts"]
    assert c["ref/ours"] == c["ref/theirs"] == c["ref/pairs"]
    assert c["wrong/ours"] == 0
    if name != "gsm_symbolic":
        assert c["wrong/theirs"] == 0


def test_answer_only_rows_keep_just_the_boxed_answer() -> None:
    cfg = load_stage_config("sft", "tiny", [
        "data.mix.stem={generators: [{name: mc_arith, source: synthetic, solution: answer_only}]}"], check_files=False)
    problems = generated_problems(cfg.data, "stem", 6, 0)
    assert [p.solution for p in problems] == [f"\\boxed{{{p.ground_truth}}}" for p in problems]
