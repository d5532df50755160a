"""Mix domains by the config's weights, in a deterministic order, with a resumable cursor.

    mixer = DomainMixer(cfg.data, seed=cfg.seed)
    batch = mixer.next_batch(8)               # list[Problem]
    state = mixer.state_dict()                # goes into the checkpoint
    mixer2 = DomainMixer(cfg.data, seed=cfg.seed); mixer2.load_state_dict(state)   # continues exactly

Order: draw ``i`` (counted over the whole run) picks its domain with ``random.Random(f"{seed}:pick:{i}")`` by the
weights; within a domain, items come in a fresh permutation per epoch (seeded by seed, domain and epoch). So the
sequence depends only on (data, weights, seed), and the cursor is three small counters per domain: resuming
from a state never repeats or skips an item. A state from other data (different domains or sizes) is refused.

Each domain's items come from its files (Guru parquet/jsonl, every row of each file routed to that domain), or,
with no files, from the synthetic generator (``data.synthetic_size`` items).
"""

from __future__ import annotations

import random
from typing import Any

from ..config import DataConfig, resolve_data_path
from ..errors import DataError
from .base import Problem
from .guru import load_problems
from .synthetic import make_problems

STATE_VERSION = 1


def load_domain(cfg: DataConfig, domain: str, seed: int) -> list[Problem]:
    """Problems of one mix entry: its files in order, or synthetic items when it has none."""
    mix = cfg.mix[domain]
    if not mix.files:
        return make_problems(domain, cfg.synthetic_size, seed)
    problems: list[Problem] = []
    for file in mix.files:
        path = resolve_data_path(cfg, file)
        loaded = load_problems(path)
        stray = next((p for p in loaded if p.domain != domain), None)
        if stray is not None:
            raise DataError(f"{path} is listed under data.mix.{domain} but row {stray.uid} "
                            f"(data_source {stray.data_source!r}) is {stray.domain}",
                            hint=f"list this file under data.mix.{stray.domain}, or split it by domain")
        problems.extend(loaded)
    return problems


class DomainMixer:
    def __init__(self, cfg: DataConfig, seed: int = 0) -> None:
        self.seed = seed + cfg.shuffle_seed
        self.domains = sorted(cfg.mix)
        self.weights = [cfg.mix[d].weight for d in self.domains]
        self.items: dict[str, list[Problem]] = {d: load_domain(cfg, d, seed) for d in self.domains}
        for domain, items in self.items.items():
            if not items:
                raise DataError(f"data.mix.{domain} has no items")
        self.drawn = 0
        self.cursor: dict[str, dict[str, int]] = {d: {"epoch": 0, "pos": 0} for d in self.domains}
        self._orders: dict[tuple[str, int], list[int]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self.items.values())

    def _order(self, domain: str, epoch: int) -> list[int]:
        key = (domain, epoch)
        if key not in self._orders:
            order = list(range(len(self.items[domain])))
            random.Random(f"{self.seed}:order:{domain}:{epoch}").shuffle(order)
            self._orders = {k: v for k, v in self._orders.items() if k[0] != domain}  # keep one epoch per domain
            self._orders[key] = order
        return self._orders[key]

    def _pick_domain(self, index: int) -> str:
        if len(self.domains) == 1:
            return self.domains[0]
        return random.Random(f"{self.seed}:pick:{index}").choices(self.domains, weights=self.weights)[0]

    def next_batch(self, n: int) -> list[Problem]:
        """The next ``n`` problems of the mix (advances the cursor)."""
        batch = []
        for _ in range(n):
            domain = self._pick_domain(self.drawn)
            cur = self.cursor[domain]
            batch.append(self.items[domain][self._order(domain, cur["epoch"])[cur["pos"]]])
            cur["pos"] += 1
            if cur["pos"] == len(self.items[domain]):
                cur["epoch"], cur["pos"] = cur["epoch"] + 1, 0
            self.drawn += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe cursor: draws so far, each domain's (epoch, pos), and what it was computed on."""
        return {"version": STATE_VERSION, "seed": self.seed, "drawn": self.drawn,
                "cursor": {d: dict(c) for d, c in self.cursor.items()},
                "sizes": {d: len(v) for d, v in self.items.items()}, "weights": dict(zip(self.domains, self.weights))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise DataError(f"data cursor version {state.get('version')!r} is not {STATE_VERSION}")
        sizes = {d: len(v) for d, v in self.items.items()}
        weights = dict(zip(self.domains, self.weights))
        if state.get("sizes") != sizes or state.get("seed") != self.seed or state.get("weights") != weights:
            raise DataError("the checkpoint's data cursor was made on other data "
                            f"(sizes {state.get('sizes')}, seed {state.get('seed')}, weights {state.get('weights')}; "
                            f"now {sizes}, {self.seed}, {weights})",
                            hint="resume with the run's saved config, or start a new run")
        self.drawn = int(state["drawn"])
        self.cursor = {d: {"epoch": int(c["epoch"]), "pos": int(c["pos"])} for d, c in state["cursor"].items()}
