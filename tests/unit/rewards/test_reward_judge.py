"""The model judge: strict verdict parsing, batching, caching by (reference, answer), failures, and the HF backend's
plumbing with a tiny random-init model (whose gibberish must come out as 'unparseable')."""

from __future__ import annotations

import pytest

from mathfirst_hpc.config import JudgeConfig, RewardConfig
from mathfirst_hpc.data.base import Problem
from mathfirst_hpc.rewards import RewardRouter
from mathfirst_hpc.rewards.judge import HfJudgeBackend, Judge, parse_verdict


@pytest.mark.parametrize("reply,verdict", [
    ("CORRECT", "correct"), (" incorrect.\n", "incorrect"), ("Correct!", "correct"), ("**INCORRECT**", "incorrect"),
    ("", None), ("The answer is correct", None), ("correct or incorrect", None), ("yes", None),
    ("CORRECTION", None), ("\n\nINCORRECT\nbecause ...", "incorrect"),
])
def test_parse_verdict_is_strict(reply: str, verdict: str | None) -> None:
    assert parse_verdict(reply) == verdict


class ScriptedBackend:
    """Replies 'CORRECT' when the student answer appears in the reference, else a scripted reply."""

    def __init__(self, other: str = "INCORRECT", fail: bool = False) -> None:
        self.other, self.fail = other, fail
        self.batches: list[int] = []

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        if self.fail:
            raise RuntimeError("CUDA out of memory")
        self.batches.append(len(prompts))
        out = []
        for prompt in prompts:
            ref = prompt.split("Reference answer: ")[1].split("\n")[0]
            ans = prompt.split("Student answer: ")[1].split("\n")[0]
            out.append("CORRECT" if ans in ref else self.other)
        return out


def test_judge_batches_and_caches_by_reference_and_answer() -> None:
    backend = ScriptedBackend()
    judge = Judge(backend, batch_size=2)
    items = [("q1", "100 C", "100"), ("q2", "100 C", "100"), ("q3", "9.8 m/s^2", "10"), ("q4", "N2", "N2"),
             ("q5", "x", "y")]
    results = judge.judge_batch(items)
    assert [r.verdict for r in results] == ["correct", "correct", "incorrect", "correct", "incorrect"]
    assert backend.batches == [2, 2]  # 4 distinct (reference, answer) pairs in batches of 2
    judge.judge_batch(items[:2])
    assert judge.calls == 4  # served from the cache


def test_unparseable_judge_reply_is_unparseable_not_incorrect() -> None:
    results = Judge(ScriptedBackend(other="I think the student is right")).judge_batch([("q", "a", "b")])
    assert results[0].verdict == "unparseable" and results[0].score == 0.0


def test_judge_crash_is_a_verifier_error() -> None:
    results = Judge(ScriptedBackend(fail=True)).judge_batch([("q", "a", "b")])
    assert results[0].verdict == "error" and not results[0].scored


def test_router_sends_free_form_stem_to_the_judge_and_letters_to_the_rule() -> None:
    backend = ScriptedBackend()
    router = RewardRouter(RewardConfig(), judge=Judge(backend))

    def stem(gt: str) -> Problem:
        return Problem(uid="s", domain="stem", data_source="stem_web", prompt=[{"role": "user", "content": "q"}],
                       ground_truth=gt, style="model")

    results = router.score_batch([stem("100 C"), stem("B"), stem("100 C")],
                                 ["\\boxed{100}", "Answer: B", "no final answer here"])
    assert [r.verdict for r in results] == ["correct", "correct", "unparseable"]
    assert backend.batches == [1]


def test_judge_backend_set_without_model_path_is_a_clear_error() -> None:
    from mathfirst_hpc.errors import DataError
    router = RewardRouter(RewardConfig(judge=JudgeConfig(backend="hf")))
    problem = Problem(uid="s", domain="stem", data_source="stem_web", prompt=[], ground_truth="100 C")
    with pytest.raises(DataError, match="model_path"):
        router.score(problem, "\\boxed{100}")


def test_hf_backend_plumbing_with_a_tiny_random_model() -> None:
    from mathfirst_hpc.config import ModelConfig
    from mathfirst_hpc.models import build_model, train_tokenizer

    texts = ["Reference answer: 100 C Student answer: 100 Verdict: CORRECT INCORRECT"] * 20
    tokenizer = train_tokenizer(texts, vocab_size=300)
    model = build_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                    intermediate_size=64, vocab_size=300), tokenizer)
    judge = Judge(HfJudgeBackend(model, tokenizer), max_new_tokens=4, batch_size=2)
    results = judge.judge_batch([("q", "100 C", "100"), ("q", "N2", "O2"), ("q", "100 C", "100")])
    assert len(results) == 3 and judge.calls == 2
    assert all(r.verdict == "unparseable" for r in results)  # random weights do not say CORRECT/INCORRECT


# ---- the judge as an HTTP service (OpenAI-compatible /v1/completions) --------------------------------------------

def test_openai_client_against_the_judge_server_gives_the_same_verdicts() -> None:
    from mathfirst_hpc.rewards.judge import OpenAiJudgeBackend
    from mathfirst_hpc.services.judge_server import start_server

    backend = ScriptedBackend()
    server = start_server(backend)
    try:
        judge = Judge(OpenAiJudgeBackend(server.url, retries=0), batch_size=2)
        items = [("q1", "100 C", "100"), ("q3", "9.8 m/s^2", "10"), ("q4", "N2", "N2")]
        assert [r.verdict for r in judge.judge_batch(items)] == ["correct", "incorrect", "correct"]
        assert backend.batches == [2, 1] and server.requests_served == 2  # batches travel as lists of prompts
    finally:
        server.shutdown()


def test_judge_server_with_a_tiny_hf_model_round_trips_its_replies() -> None:
    from mathfirst_hpc.config import ModelConfig
    from mathfirst_hpc.models import build_model, train_tokenizer
    from mathfirst_hpc.rewards.judge import OpenAiJudgeBackend
    from mathfirst_hpc.services.judge_server import start_server

    tokenizer = train_tokenizer(["Reference answer: 100 C Student answer: 100 Verdict: CORRECT"] * 20, vocab_size=300)
    model = build_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                    intermediate_size=64, vocab_size=300), tokenizer)
    hf = HfJudgeBackend(model, tokenizer)
    prompts = ["Question: q\nReference answer: 100 C\nStudent answer: 100\nVerdict:", "Verdict:"]
    server = start_server(hf)
    try:
        assert OpenAiJudgeBackend(server.url, retries=0).generate(prompts, 4) == hf.generate(prompts, 4)
    finally:
        server.shutdown()


def test_unreachable_judge_server_is_retried_visibly_then_verdict_error(capsys: pytest.CaptureFixture) -> None:
    import socket

    from mathfirst_hpc.rewards.judge import OpenAiJudgeBackend

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    judge = Judge(OpenAiJudgeBackend(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.01, timeout_s=2))
    results = judge.judge_batch([("q", "a", "b"), ("q", "c", "d")])
    assert [r.verdict for r in results] == ["error", "error"] and not any(r.scored for r in results)
    assert all("JudgeUnavailable" in r.reason for r in results)
    err = capsys.readouterr().err
    assert err.count(f"judge server http://127.0.0.1:{port} failed") == 3  # the first try and 2 retries
    assert "retrying in" in err and "giving up" in err


def test_failing_judge_server_is_verdict_error_not_zero() -> None:
    from mathfirst_hpc.rewards.judge import OpenAiJudgeBackend
    from mathfirst_hpc.services.judge_server import start_server

    server = start_server(ScriptedBackend(fail=True))  # answers HTTP 500
    try:
        results = Judge(OpenAiJudgeBackend(server.url, retries=1, backoff_s=0.01)).judge_batch([("q", "a", "a")])
    finally:
        server.shutdown()
    assert results[0].verdict == "error" and "500" in results[0].reason


def test_judge_server_refuses_bad_requests() -> None:
    import json
    import urllib.error
    import urllib.request

    from mathfirst_hpc.services.judge_server import start_server

    server = start_server(ScriptedBackend())
    try:
        request = urllib.request.Request(f"{server.url}/v1/completions", data=json.dumps({"max_tokens": 3}).encode())
        with pytest.raises(urllib.error.HTTPError, match="400"):
            urllib.request.urlopen(request, timeout=5)
        with urllib.request.urlopen(f"{server.url}/v1/models", timeout=5) as response:
            assert json.loads(response.read())["data"][0]["id"] == "judge"
    finally:
        server.shutdown()


def test_openai_backend_config_scores_through_a_running_server() -> None:
    """``reward.judge.backend=openai`` with ``url``: the router talks to a server that already runs (no judge job)."""
    from mathfirst_hpc.launch.services import services_needed
    from mathfirst_hpc.config import MathRlStage
    from mathfirst_hpc.services.judge_server import start_server

    backend = ScriptedBackend()
    server = start_server(backend)
    try:
        router = RewardRouter(RewardConfig(judge=JudgeConfig(backend="openai", url=server.url)))
        stem = Problem(uid="s", domain="stem", data_source="stem_web", prompt=[{"role": "user", "content": "q"}],
                       ground_truth="100 C", style="model")
        assert [r.verdict for r in router.score_batch([stem, stem], ["\\boxed{100}", "\\boxed{7}"])] == \
            ["correct", "incorrect"]
        assert server.requests_served == 1
    finally:
        server.shutdown()
    cfg = MathRlStage()
    cfg.reward.judge = JudgeConfig(backend="openai", url="http://judge:8000")
    assert services_needed(cfg) == []  # nothing to start
    cfg.reward.judge = JudgeConfig(backend="hf", model_path="/m")
    assert services_needed(cfg) == ["judge"]


def test_openai_backend_needs_a_url() -> None:
    from mathfirst_hpc.config import load_stage_config
    from mathfirst_hpc.errors import ConfigError

    with pytest.raises(ConfigError, match="reward.judge.url"):
        load_stage_config("math_rl", "tiny", ["reward.judge.backend=openai"], check_files=False)
    with pytest.raises(ConfigError, match="http"):
        load_stage_config("math_rl", "tiny", ["reward.judge.backend=openai", "reward.judge.url=judge:8000"],
                          check_files=False)
    cfg = load_stage_config("math_rl", "tiny", ["reward.judge.backend=openai", "reward.judge.url=http://j:1"],
                            check_files=False)
    assert cfg.reward.judge.url == "http://j:1"
