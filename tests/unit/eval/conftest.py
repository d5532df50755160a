"""Shared fixtures of the eval tests: the benchmark fixture folder, one local sandbox server per session, and
``canned``: a canned-response RolloutEngine (each prompt's responses come from a function of the prompt text)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from mathfirst_hpc.rollout.base import Sample, SamplingParams

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "benchmarks"


@pytest.fixture(scope="session")
def bench_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def sandbox_url():
    """A local sandbox server (bwrap); tests that need it are skipped where bwrap cannot run."""
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    from mathfirst_hpc.sandbox import start_local_server
    try:
        server = start_local_server(workers=2)
    except Exception as exc:  # noqa: BLE001 - SandboxUnavailableError and kin: this machine cannot isolate
        pytest.skip(f"sandbox unavailable here: {exc}")
    with server as (url, _stop):
        yield url




class CannedEngine:
    """``responses(prompt_text, sample_index) -> str``; counts generate calls and prompts for resume tests."""

    def __init__(self, responses: Callable[[str, int], str], fail_after_calls: int | None = None) -> None:
        self.responses = responses
        self.fail_after_calls = fail_after_calls
        self.texts: list[str] = []
        self.calls = 0
        self.prompts_generated = 0
        self.closed = False

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        self.texts.append(messages[-1]["content"])
        return [len(self.texts) - 1]

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[list[Sample]]:
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        self.prompts_generated += len(prompts)
        out = []
        for index, prompt in enumerate(prompts):
            text = self.texts[prompt[0]]
            out.append([Sample(prompt_index=index, prompt_token_ids=prompt, token_ids=list(range(k + 1)),
                               logprobs=[0.0] * (k + 1), finish_reason="stop", text=self.responses(text, k))
                        for k in range(sampling.n)])
        return out

    def update_weights(self, state_dict) -> None:  # pragma: no cover - unused
        pass

    def close(self) -> None:
        self.closed = True

    def factory(self):
        return lambda target: (self, self.encode)


@pytest.fixture
def canned():
    return CannedEngine
