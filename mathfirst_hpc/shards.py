"""HDF5 rollout shards: one file per rollout task per generation batch, the hand-off between rollout, rewards and
the learner (which may be separate Slurm jobs).

Schema (version 1), N samples per file. Ragged token arrays are stored flat with offsets (``*_offsets`` has N+1
entries; sample i is ``flat[offsets[i]:offsets[i+1]]``): h5py's variable-length types cost a Python object per
row, flat arrays stream at disk speed. Categorical strings (domain, data_source, finish reason, verdict) are
stored as int codes with their category list in an attribute.

    sample_id          int64[N]    unique within the iteration
    group_id           int64[N]    samples of one prompt share it (the DAPO group)
    prompt_uid         str[N]      Problem.uid (the data item); strings are stored NUL-joined as uint8
    domain, data_source, finish_reason, verdict   int16 codes[N] + attrs "<name>_categories"
    prompt_tokens      int32[sum]  + prompt_offsets int64[N+1]
    response_tokens    int32[sum]  + response_offsets int64[N+1]
    logprobs           float32[sum] (shares response_offsets) sampling log-prob of each response token
    response_length    int32[N]
    score              float32[N]  verifier score (1 correct / 0 otherwise)
    reward             float32[N]  training reward: score + overlong penalty
    reason             str[N]      verifier reason
    attrs: schema_version, stage, iteration, gen_batch, shard_index, policy_checkpoint, seed, host, num_samples,
           created_unix, scored (bool: rewards filled in)

Files are written under a temp name, fsynced and renamed (``atomic.atomic_path``); the run manifest keeps their
sha256. Readers reject a truncated file, another schema version, or a checksum mismatch with ``ShardError``.
"""

from __future__ import annotations

import hashlib
import socket
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import h5py
import numpy as np

from .atomic import atomic_path
from .errors import ShardError

SCHEMA_VERSION = 1
CATEGORICAL = ("domain", "data_source", "finish_reason", "verdict")
RAGGED = ("prompt_tokens", "response_tokens", "logprobs")


@dataclass
class Ragged:
    """A list of 1-D arrays stored as one flat array and N+1 offsets."""

    flat: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_list(cls, rows: Sequence[Sequence[float] | np.ndarray], dtype: Any) -> "Ragged":
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate([np.asarray(r, dtype=dtype) for r in rows]) if len(rows) else np.zeros(0, dtype)
        return cls(flat.astype(dtype, copy=False), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i]:self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def tolist(self) -> list[list]:
        return [self[i].tolist() for i in range(len(self))]

    def take(self, index: np.ndarray) -> "Ragged":
        return Ragged.from_list([self[int(i)] for i in index], self.flat.dtype)

    @staticmethod
    def concat(parts: Sequence["Ragged"]) -> "Ragged":
        """Flat arrays joined, offsets shifted: no per-row split."""
        shifts = np.cumsum([0] + [len(p.flat) for p in parts[:-1]])
        offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + shift for p, shift in zip(parts, shifts)])
        return Ragged(np.concatenate([p.flat for p in parts]), offsets.astype(np.int64))


@dataclass
class ShardData:
    """Columnar samples of one shard (all columns have N rows)."""

    sample_id: np.ndarray
    group_id: np.ndarray
    prompt_uid: list[str]
    domain: list[str]
    data_source: list[str]
    prompt_tokens: Ragged
    response_tokens: Ragged
    logprobs: Ragged
    finish_reason: list[str]
    score: np.ndarray
    reward: np.ndarray
    verdict: list[str]
    reason: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sample_id)

    @property
    def response_length(self) -> np.ndarray:
        return self.response_tokens.lengths().astype(np.int32)

    def select(self, index: np.ndarray) -> "ShardData":
        """Rows ``index`` (e.g. the kept groups after dynamic sampling)."""
        index = np.asarray(index, dtype=np.int64)
        pick = lambda xs: [xs[int(i)] for i in index]  # noqa: E731
        return ShardData(
            sample_id=self.sample_id[index], group_id=self.group_id[index], prompt_uid=pick(self.prompt_uid),
            domain=pick(self.domain), data_source=pick(self.data_source),
            prompt_tokens=self.prompt_tokens.take(index), response_tokens=self.response_tokens.take(index),
            logprobs=self.logprobs.take(index), finish_reason=pick(self.finish_reason),
            score=self.score[index], reward=self.reward[index], verdict=pick(self.verdict),
            reason=pick(self.reason), attrs=dict(self.attrs))

    @staticmethod
    def concat(parts: Sequence["ShardData"]) -> "ShardData":
        if not parts:
            raise ValueError("nothing to concatenate")
        cat_list = lambda name: [x for p in parts for x in getattr(p, name)]  # noqa: E731
        cat_ragged = lambda name: Ragged.concat([getattr(p, name) for p in parts])  # noqa: E731
        return ShardData(
            sample_id=np.concatenate([p.sample_id for p in parts]),
            group_id=np.concatenate([p.group_id for p in parts]),
            prompt_uid=cat_list("prompt_uid"), domain=cat_list("domain"), data_source=cat_list("data_source"),
            prompt_tokens=cat_ragged("prompt_tokens"), response_tokens=cat_ragged("response_tokens"),
            logprobs=cat_ragged("logprobs"), finish_reason=cat_list("finish_reason"),
            score=np.concatenate([p.score for p in parts]), reward=np.concatenate([p.reward for p in parts]),
            verdict=cat_list("verdict"), reason=cat_list("reason"), attrs=dict(parts[0].attrs))


def empty_rewards(n: int) -> dict[str, Any]:
    """Reward columns for freshly generated, not yet scored samples."""
    return {"score": np.full(n, np.nan, np.float32), "reward": np.full(n, np.nan, np.float32),
            "verdict": ["unscored"] * n, "reason": [""] * n}


def _encode_categorical(values: list[str]) -> tuple[np.ndarray, list[str]]:
    categories = sorted(set(values))
    lookup = {c: i for i, c in enumerate(categories)}
    return np.fromiter((lookup[v] for v in values), dtype=np.int16, count=len(values)), categories


def _pack_strings(values: list[str]) -> np.ndarray:
    """NUL-joined UTF-8 bytes: one decode and one split on read instead of a Python object per row."""
    return np.frombuffer("\0".join(v.replace("\0", "") for v in values).encode("utf-8"), dtype=np.uint8)


def _unpack_strings(raw: np.ndarray, n: int) -> list[str]:
    if n == 0:
        return []
    values = raw.tobytes().decode("utf-8").split("\0")
    if len(values) != n:
        raise ShardError(f"string column has {len(values)} rows, expected {n}")
    return values


def sha256_file(path: Path | str, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def write_shard(path: Path | str, data: ShardData, **attrs: Any) -> str:
    """Write ``data`` atomically to ``path``; return the file's sha256 (for the manifest)."""
    path = Path(path)
    n = len(data)
    for f in fields(ShardData):
        if f.name != "attrs" and len(getattr(data, f.name)) != n:
            raise ValueError(f"shard column {f.name} has {len(getattr(data, f.name))} rows, expected {n}")
    meta = {**data.attrs, **attrs}
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver="latest") as h5:
            h5.create_dataset("sample_id", data=data.sample_id.astype(np.int64))
            h5.create_dataset("group_id", data=data.group_id.astype(np.int64))
            h5.create_dataset("response_length", data=data.response_length)
            h5.create_dataset("score", data=np.asarray(data.score, np.float32))
            h5.create_dataset("reward", data=np.asarray(data.reward, np.float32))
            h5.create_dataset("prompt_uid", data=_pack_strings(data.prompt_uid))
            h5.create_dataset("reason", data=_pack_strings(data.reason))
            for name in CATEGORICAL:
                codes, categories = _encode_categorical(getattr(data, name))
                h5.create_dataset(name, data=codes)
                h5.attrs[f"{name}_categories"] = categories
            h5.create_dataset("prompt_tokens", data=data.prompt_tokens.flat.astype(np.int32))
            h5.create_dataset("prompt_offsets", data=data.prompt_tokens.offsets)
            h5.create_dataset("response_tokens", data=data.response_tokens.flat.astype(np.int32))
            h5.create_dataset("response_offsets", data=data.response_tokens.offsets)
            if not np.array_equal(data.logprobs.offsets, data.response_tokens.offsets):
                raise ValueError("logprobs must have one entry per response token")
            h5.create_dataset("logprobs", data=data.logprobs.flat.astype(np.float32))
            h5.attrs["schema_version"] = SCHEMA_VERSION
            h5.attrs["num_samples"] = n
            h5.attrs.setdefault("host", socket.gethostname())
            h5.attrs["created_unix"] = time.time()
            for key, value in meta.items():
                if key in ("schema_version", "num_samples") or key.endswith("_categories"):
                    continue
                h5.attrs[key] = "" if value is None else value
        checksum = sha256_file(tmp)
    return checksum


def read_shard(path: Path | str, expected_sha256: str | None = None) -> ShardData:
    """Read and validate one shard. Raises ShardError on truncation, schema mismatch or checksum mismatch."""
    path = Path(path)
    if not path.exists():
        raise ShardError(f"shard not found: {path}")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise ShardError(f"shard {path} does not match its manifest checksum (modified or truncated)")
    try:
        with h5py.File(path, "r") as h5:
            return _read_open(h5, path)
    except ShardError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise ShardError(f"shard {path} is unreadable (truncated or corrupt): {' '.join(str(exc).split())}") from None


def _dataset(h5: h5py.File, name: str, path: Path) -> np.ndarray:
    """Read a dataset. Our datasets are contiguous and unfiltered, so the bytes are read straight from their
    file offset (numpy.fromfile speed); anything else goes through h5py."""
    ds = h5[name]
    offset = ds.id.get_offset()
    if ds.chunks is None and offset is not None and ds.size > 4096 and ds.dtype.kind in "iuf":
        return np.fromfile(path, dtype=ds.dtype, count=ds.size, offset=offset).reshape(ds.shape)
    return ds[()]


def _read_open(h5: h5py.File, path: Path) -> ShardData:
    version = int(h5.attrs.get("schema_version", -1))
    if version != SCHEMA_VERSION:
        raise ShardError(f"shard {path} has schema version {version}, this reader needs {SCHEMA_VERSION}")
    n = int(h5.attrs["num_samples"])
    decode = lambda name: _unpack_strings(h5[name][()], n)  # noqa: E731
    cats = {}
    for name in CATEGORICAL:
        categories = np.array([str(c) for c in h5.attrs[f"{name}_categories"]] or [""], dtype=object)
        cats[name] = categories[h5[name][()]].tolist()
    resp_offsets = _dataset(h5, "response_offsets", path)
    data = ShardData(
        sample_id=h5["sample_id"][()], group_id=h5["group_id"][()], prompt_uid=decode("prompt_uid"),
        domain=cats["domain"], data_source=cats["data_source"],
        prompt_tokens=Ragged(_dataset(h5, "prompt_tokens", path), _dataset(h5, "prompt_offsets", path)),
        response_tokens=Ragged(_dataset(h5, "response_tokens", path), resp_offsets),
        logprobs=Ragged(_dataset(h5, "logprobs", path), resp_offsets), finish_reason=cats["finish_reason"],
        score=h5["score"][()], reward=h5["reward"][()], verdict=cats["verdict"], reason=decode("reason"),
        attrs={k: (v.item() if hasattr(v, "item") else v) for k, v in h5.attrs.items()
               if not k.endswith("_categories")})
    if len(data.sample_id) != n or len(data.prompt_tokens) != n or data.response_tokens.offsets[-1] != len(
            data.response_tokens.flat):
        raise ShardError(f"shard {path} is inconsistent: expected {n} samples")
    return data


def update_rewards(path: Path | str, data: ShardData, score: np.ndarray, reward: np.ndarray, verdict: list[str],
                   reason: list[str]) -> str:
    """Fill the reward columns of ``data`` (read from ``path``) and rewrite the shard atomically; return the new
    sha256."""
    data.score, data.reward = np.asarray(score, np.float32), np.asarray(reward, np.float32)
    data.verdict, data.reason = list(verdict), list(reason)
    return write_shard(path, data, scored=True)


def iter_shards(paths: Iterable[Path | str], checksums: dict[str, str] | None = None) -> Iterator[ShardData]:
    """Stream shards one at a time (memory holds one shard, not all)."""
    for path in paths:
        expected = (checksums or {}).get(str(Path(path).name)) if checksums else None
        yield read_shard(path, expected)


def inspect_shards(paths: Sequence[Path | str]) -> dict[str, Any]:
    """Counts, mean reward by domain and length percentiles, streaming over the shards."""
    n_samples, n_groups, lengths, prompt_lengths = 0, 0, [], []
    by_domain: dict[str, list[float]] = {}
    verdicts: dict[str, int] = {}
    finish: dict[str, int] = {}
    for data in iter_shards(paths):
        n_samples += len(data)
        n_groups += len(np.unique(data.group_id))
        lengths.append(data.response_length)
        prompt_lengths.append(data.prompt_tokens.lengths())
        for dom, rew in zip(data.domain, data.reward):
            by_domain.setdefault(dom, []).append(float(rew))
        for v in data.verdict:
            verdicts[v] = verdicts.get(v, 0) + 1
        for f in data.finish_reason:
            finish[f] = finish.get(f, 0) + 1
    all_len = np.concatenate(lengths) if lengths else np.zeros(0)
    all_prompt = np.concatenate(prompt_lengths) if prompt_lengths else np.zeros(0)
    pct = lambda a: {f"p{q}": float(np.percentile(a, q)) if len(a) else None for q in (50, 90, 99)}  # noqa: E731
    return {
        "shards": len(paths), "samples": n_samples, "groups": n_groups,
        "mean_reward_by_domain": {d: (float(np.nanmean(r)) if np.isfinite(r).any() else None)
                                  for d, r in sorted(by_domain.items()) for r in [np.array(r)]},
        "samples_by_domain": {d: len(r) for d, r in sorted(by_domain.items())},
        "verdicts": verdicts, "finish_reasons": finish,
        "response_length": {"mean": float(all_len.mean()) if len(all_len) else None, **pct(all_len)},
        "prompt_length": {"mean": float(all_prompt.mean()) if len(all_prompt) else None, **pct(all_prompt)},
    }


def expand_shard_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; folders searched recursively for ``*.h5`` (temp files skipped)."""
    out: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*.h5") if not p.name.startswith(".tmp-"))
        elif path.exists():
            out.append(path)
        else:
            raise ShardError(f"no such shard or folder: {path}")
    if not out:
        raise ShardError(f"no .h5 shards under {', '.join(map(str, paths))}")
    return out


def format_inspection(info: dict[str, Any]) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [f"shards: {info['shards']}   samples: {info['samples']}   groups: {info['groups']}", "",
             f"{'domain':<12} {'samples':>8} {'mean reward':>12}"]
    for domain, mean in info["mean_reward_by_domain"].items():
        lines.append(f"{domain:<12} {info['samples_by_domain'][domain]:>8} {fmt(mean):>12}")
    for name in ("response_length", "prompt_length"):
        stats = info[name]
        lines.append(f"{name} (tokens): mean {fmt(stats['mean'])}  p50 {fmt(stats['p50'])}  "
                     f"p90 {fmt(stats['p90'])}  p99 {fmt(stats['p99'])}")
    lines.append("verdicts: " + ", ".join(f"{k}={v}" for k, v in sorted(info["verdicts"].items())))
    lines.append("finish reasons: " + ", ".join(f"{k}={v}" for k, v in sorted(info["finish_reasons"].items())))
    return "\n".join(lines)
