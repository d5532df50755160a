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
with no files, from its generators (reasoning-gym or our synthetic kinds, ``data.synthetic_size`` items in all;
with no generators, every default synthetic kind). Generated domains split the problem space itself: a prompt
whose hash falls in bucket 0 of ``HELDOUT_BUCKETS`` is held out, and only such prompts are. The training pool
skips them; ``heldout_problems`` draws (from its own seeds) only them. Both sides then follow the same
distribution and can never share a prompt. (Dropping training prompts from an independent draw instead, as
before, biased the held-out set towards the hardest items: a 32k pool covers nearly every 2- and 3-term chain
sum, which left 4-term sums only.) A small space repeats prompts inside the held-out set: it is a sample, with
replacement, of the held-out part of the space.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Any

from ..config import DataConfig, resolve_data_path
from ..errors import DataError
from ..rewards.extract import last_boxed
from .base import Problem
from .guru import load_problems
from .reasoning_gym import make_rg_problems
from .synthetic import make_problems

STATE_VERSION = 1


def _shares(total: int, weights: list[float]) -> list[int]:
    """``total`` split by ``weights`` (largest remainder), so the shares always sum to ``total``."""
    raw = [total * w / sum(weights) for w in weights]
    shares = [int(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: shares[i] - raw[i])[: total - sum(shares)]:
        shares[i] += 1
    return shares


def generated_problems(cfg: DataConfig, domain: str, n: int, seed: int, split: str = "train") -> list[Problem]:
    """``n`` items of a domain from its generators (reasoning-gym or ours), split by their weights; a domain with
    no generators uses every default synthetic kind."""
    gens = cfg.mix[domain].generators
    if not gens:
        return make_problems(domain, n, seed, split=split)
    problems: list[Problem] = []
    for gen, share in zip(gens, _shares(n, [g.weight for g in gens])):
        if gen.source == "synthetic":
            made = make_problems(domain, share, seed, kind=gen.name, split=split)
        else:
            made = make_rg_problems(domain, gen, share, seed, split=split)
        if gen.solution == "answer_only":
            made = [dataclasses.replace(p, solution=_boxed(p.solution)) for p in made]
        problems.extend(made)
    return problems


def _boxed(solution: str | None) -> str | None:
    """The last ``\\boxed{...}`` of a worked solution, alone (the answer without the work)."""
    answer = last_boxed(solution) if solution else None
    return solution if answer is None else f"\\boxed{{{answer}}}"


def _prompt_key(problem: Problem) -> str:
    return "\n".join(m["content"] for m in problem.prompt)


HELDOUT_BUCKETS = 8
"""One prompt in eight (by hash) belongs to the held-out part of a generated domain."""


def is_heldout_prompt(problem: Problem) -> bool:
    """Whether this prompt lies in the held-out part of the problem space (training never sees it)."""
    return hashlib.sha256(_prompt_key(problem).encode()).digest()[0] % HELDOUT_BUCKETS == 0


def _drawn(cfg: DataConfig, domain: str, n: int, seed: int, split: str, heldout: bool) -> list[Problem]:
    """``n`` generated items of one side of the split, drawing more until there are enough."""
    drawn = n + n // 4 + 8 if not heldout else n * HELDOUT_BUCKETS + 64
    while True:
        made = generated_problems(cfg, domain, drawn, seed, split=split)
        kept = [p for p in made if is_heldout_prompt(p) == heldout]
        if len(kept) >= n or drawn >= 64 * (n + 8):
            return kept[:n]
        drawn *= 2


def training_pool(cfg: DataConfig, domain: str, seed: int) -> list[Problem]:
    """The ``data.synthetic_size`` training items of a generated domain (no held-out prompt among them)."""
    return _drawn(cfg, domain, cfg.synthetic_size, seed, "train", heldout=False)


def heldout_problems(cfg: DataConfig, domain: str, seed: int, n: int | None = None) -> list[Problem]:
    """The held-out set of a generated domain: ``data.heldout_size`` items from the held-out part of the problem
    space, drawn with seeds disjoint from training. Raises DataError for file-backed domains (their held-out sets
    are benchmarks: ``eval --benchmarks``)."""
    if cfg.mix[domain].files:
        raise DataError(f"data.mix.{domain} reads files: it has no generated held-out set",
                        hint="evaluate file-backed domains with eval --benchmarks")
    n = cfg.heldout_size if n is None else n
    held = _drawn(cfg, domain, n, seed, "heldout", heldout=True)
    if len(held) < n:
        raise DataError(f"data.mix.{domain}: only {len(held)} of {n} held-out items could be drawn",
                        hint="the generator's problem space is too small; lower data.heldout_size")
    return with_prompt_prefix(cfg, held)


def with_prompt_prefix(cfg: DataConfig, problems: list[Problem]) -> list[Problem]:
    """``data.prompt_prefix`` (system prompt, worked examples) before each problem's own messages."""
    if not cfg.prompt_prefix:
        return problems
    prefix = [dict(m) for m in cfg.prompt_prefix]
    return [dataclasses.replace(p, prompt=prefix + list(p.prompt)) for p in problems]


def load_domain(cfg: DataConfig, domain: str, seed: int) -> list[Problem]:
    """Problems of one mix entry (its files in order, or generated items when it has none), prompt prefix added."""
    return with_prompt_prefix(cfg, _domain_rows(cfg, domain, seed))


def _domain_rows(cfg: DataConfig, domain: str, seed: int) -> list[Problem]:
    mix = cfg.mix[domain]
    if not mix.files:
        return training_pool(cfg, domain, seed)
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
