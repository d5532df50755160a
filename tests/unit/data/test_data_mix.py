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
