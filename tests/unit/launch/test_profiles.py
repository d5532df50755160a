"""Cluster profiles: the shipped ones load; bad keys, values and partitions fail with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from mathfirst_hpc.errors import ConfigError
from mathfirst_hpc.launch.profiles import available_profiles, check_partitions, load_profile


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_profiles_load() -> None:
    names = available_profiles()
    assert {"local-dev", "local", "example-pyxis", "example-apptainer", "example-modules"} <= set(names)
    for name in names:
        profile = load_profile(name)
        assert profile.name == name
    dev = load_profile("local-dev")
    assert (dev.executor, dev.partition, dev.account, dev.gpus_per_node) == ("slurm", "debug", "mathfirst", 0)


def test_unknown_profile_lists_available() -> None:
    with pytest.raises(ConfigError, match="unknown cluster profile 'nope'") as info:
        load_profile("nope")
    assert "local-dev" in (info.value.hint or "")


def test_unknown_key_suggests(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="partiton: unknown key") as info:
        load_profile(write(tmp_path, "partiton: gpu\n"))
    assert "did you mean partition" in info.value.one_line()


@pytest.mark.parametrize("text, key", [
    ("gpus_per_node: -1\n", "gpus_per_node"),
    ("gpus_per_node: two\n", "gpus_per_node"),
    ("time_limit_min: 1\nsignal_lead_s: 90\n", "signal_lead_s"),
    ("container: {kind: pyxis}\n", "container.image"),
    ("container: {kind: apptainer, image: /no/such.sif}\n", "container.image"),
    ("container: {kind: docker, image: x}\n", "container.kind"),
    ("executor: local\ncontainer: {kind: pyxis, image: x}\n", "container"),
])
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_profile(write(tmp_path, text))


def test_missing_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="profile file not found"):
        load_profile(tmp_path / "absent.yaml")


def test_partition_check_against_listing(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, "partition: gpu\ncpu_partition: cpu\n"))
    assert check_partitions(profile, partitions=["gpu", "cpu"]) is True
    with pytest.raises(ConfigError, match="partition 'gpu' does not exist") as info:
        check_partitions(profile, partitions=["debug"])
    assert "sinfo lists: debug" in info.value.one_line()
    profile.partition = "debug"
    with pytest.raises(ConfigError, match="cpu_partition"):
        check_partitions(profile, partitions=["debug"])


def test_partition_check_skipped_without_slurm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sinfo on PATH: cannot check, must not fail
    profile = load_profile(write(tmp_path, "partition: anything\n"))
    assert check_partitions(profile) is False
