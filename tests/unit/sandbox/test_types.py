"""ExecJob / ExecResult: validation names the bad field, and the wire format round-trips."""

from __future__ import annotations

import pytest

from mathfirst_hpc.sandbox.types import STATUSES, ExecJob, ExecResult


def test_job_round_trips_through_dict() -> None:
    job = ExecJob(language="cpp", code="int main(){}", stdin="1", tests=[{"input": "1", "output": "2"}],
                  time_limit_s=2, memory_mb=128)
    assert ExecJob.from_dict(job.to_dict()) == job


@pytest.mark.parametrize("fields, message", [
    ({"language": "rust"}, "language"),
    ({"tests": [{"input": "1", "out": "2"}]}, "I/O test"),
    ({"tests": ["assert True", {"input": "", "output": ""}]}, "not a mix"),
    ({"tests": [3]}, "a test is"),
    ({"time_limit_s": 0}, "time_limit_s"),
    ({"memory_mb": 1}, "memory_mb"),
    ({"tests": ["assert 1"], "expected_output": "x"}, "not both"),
    ({"bogus": 1}, "unknown job fields"),
])
def test_bad_jobs_are_refused_naming_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExecJob.from_dict({"code": "print(1)", **fields})


def test_sandbox_failure_is_not_scored_and_not_a_verdict() -> None:
    result = ExecResult.sandbox_failure("bwrap broke", tests_total=3)
    assert result.status == "sandbox_error" and result.passed is None and not result.scored
    assert ExecResult(status="runtime_error", passed=False).scored
    assert set(STATUSES) == {"ok", "runtime_error", "timeout", "memory", "output_limit", "killed", "sandbox_error"}


def test_result_from_dict_ignores_fields_of_newer_servers() -> None:
    data = ExecResult(status="ok", passed=True).to_dict() | {"new_field": 1}
    assert ExecResult.from_dict(data).passed is True
