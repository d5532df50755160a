"""DomainMixer: weights, epochs without repeats, and exact resume from a state dict."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from mathfirst_hpc.config import DataConfig, DomainMix
from mathfirst_hpc.data.mix import DomainMixer
from mathfirst_hpc.errors import DataError


def _cfg(size: int = 20, **weights: float) -> DataConfig:
    return DataConfig(mix={d: DomainMix(weight=w) for d, w in weights.items()}, synthetic_size=size)


def test_weights_set_the_domain_shares() -> None:
    counts = Counter(p.domain for p in DomainMixer(_cfg(50, math=3, logic=1), seed=0).next_batch(800))
    assert 0.68 < counts["math"] / 800 < 0.82


def test_an_epoch_visits_every_item_once() -> None:
    mixer = DomainMixer(_cfg(25, math=1), seed=1)
    first, second = mixer.next_batch(25), mixer.next_batch(25)
    assert sorted(p.uid for p in first) == sorted(p.uid for p in second) and len({p.uid for p in first}) == 25
    assert [p.uid for p in first] != [p.uid for p in second]  # each epoch has its own order


@pytest.mark.parametrize("split", [0, 1, 7, 19, 20, 33])
def test_resume_from_state_never_repeats_or_skips(split: int) -> None:
    cfg = _cfg(10, math=2, stem=1, logic=1)
    reference = [p.uid for p in DomainMixer(cfg, seed=5).next_batch(60)]
    mixer = DomainMixer(cfg, seed=5)
    head = [p.uid for p in mixer.next_batch(split)]
    state = json.loads(json.dumps(mixer.state_dict()))  # checkpoints store it as JSON
    resumed = DomainMixer(cfg, seed=5)
    resumed.load_state_dict(state)
    assert head + [p.uid for p in resumed.next_batch(60 - split)] == reference


def test_state_from_other_data_is_refused() -> None:
    state = DomainMixer(_cfg(10, math=1), seed=0).state_dict()
    with pytest.raises(DataError, match="other data"):
        DomainMixer(_cfg(12, math=1), seed=0).load_state_dict(state)
    with pytest.raises(DataError, match="other data"):
        DomainMixer(_cfg(10, math=1), seed=1).load_state_dict(state)


PREFIX = [{"role": "system", "content": "Answer in \\boxed{}."},
          {"role": "user", "content": "Calculate 1 + 1."}, {"role": "assistant", "content": "\\boxed{2}"}]


def test_prompt_prefix_goes_before_every_prompt_and_never_moves_the_heldout_split() -> None:
    from mathfirst_hpc.data.mix import heldout_problems

    plain, prefixed = _cfg(40, math=1), _cfg(40, math=1)
    prefixed.prompt_prefix = PREFIX
    for side in (lambda c: DomainMixer(c, seed=0).items["math"], lambda c: heldout_problems(c, "math", 0, 16)):
        before, after = side(plain), side(prefixed)
        assert [p.uid for p in after] == [p.uid for p in before]
        assert all(a.prompt == PREFIX + b.prompt for a, b in zip(after, before))


@pytest.mark.parametrize("message", [{"role": "tool", "content": "x"}, {"role": "user"},
                                     {"role": "user", "content": "x", "name": "y"}])
def test_a_bad_prompt_prefix_message_is_refused(message: dict) -> None:
    from mathfirst_hpc.config import load_stage_config
    from mathfirst_hpc.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data\.prompt_prefix\[0\]"):
        load_stage_config("math_rl", overrides=[f"data.prompt_prefix=[{json.dumps(message)}]"])
