"""The typed problem row every stage, reward and eval works on (Guru / verl parquet conventions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Problem:
    uid: str
    """Stable id: data_source + row index (or the row's extra_info.index); the data cursor counts these."""
    domain: str
    """math | stem | code | simulation | logic | tabular"""
    data_source: str
    """Guru data_source string, e.g. 'math__deepscaler', 'codegen__humaneval', 'synthetic__math'."""
    prompt: list[dict[str, str]]
    """Chat messages [{'role': 'user', 'content': ...}]."""
    ground_truth: Any
    """reward_model.ground_truth: a string, or for code a JSON string / dict of tests."""
    ability: str = ""
    style: str = "rule"
    """reward_model.style: rule | model | execution"""
    extra_info: dict[str, Any] = field(default_factory=dict)
    solution: str | None = None
    """A worked solution (assistant turn) when the row carries one: the stage 1 SFT traces."""
