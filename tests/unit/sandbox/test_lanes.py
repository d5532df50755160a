"""A bwrap worker holds two jobs at once (``isolation.LANES``): the second one's execution already waits in the
zygote while the first runs. Checked here against the real zygotes (C and Python): a program never sees the other
lane's job folder, executions still run one at a time, a waiting execution's wall clock starts only when it
starts, and a waiting execution can be cancelled without touching the running one."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest

from mathfirst_hpc.sandbox.config import SandboxConfig
from mathfirst_hpc.sandbox.isolation import (LANES, Limits, SandboxUnavailableError, acquire_slots, make_isolation,
                                             release_slots)

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap missing")
PY = "/usr/bin/python3"


async def _with_worker(zygote: str, body) -> None:
    cfg = SandboxConfig(workers=1, zygote=zygote)
    try:
        isolation = make_isolation(cfg)
        slots = acquire_slots(cfg, 1)
    except SandboxUnavailableError as exc:
        pytest.skip(f"sandbox unavailable here: {exc.one_line()}")
    try:
        await body(isolation, slots[0])
    finally:
        await isolation.close()
        release_slots(slots)


def _limits(wall_s: float) -> Limits:
    return Limits(cpu_s=5, wall_s=wall_s, memory_mb=512, file_size_mb=1, max_processes=16, max_output_bytes=4096)


def _write(job_dir, name: str, text: str) -> None:
    (job_dir.host / name).write_text(text)
    (job_dir.host / name).chmod(0o644)


@pytest.mark.parametrize("zygote", ["c", "python"])
def test_lanes_see_only_their_own_folder_and_run_one_at_a_time(zygote: str) -> None:
    async def body(isolation, slot) -> None:
        assert isolation.lanes == LANES == 2
        dirs = [isolation.new_job_dir(slot, lane) for lane in range(2)]
        _write(dirs[0], "main.py", "import os, time\nt = time.time()\ntime.sleep(0.3)\n"
               "print(sorted(os.listdir('/sandbox')), os.listdir('/.jobs'), t, time.time())\n")
        _write(dirs[1], "main.py", "import os, time\nprint(sorted(os.listdir('/sandbox')), os.listdir('/.jobs'), "
               "time.time())\n")
        _write(dirs[1], "secret.txt", "lane 1 only")
        argv = [PY, "-I", "/sandbox/main.py"]
        first, second = await asyncio.gather(isolation.run(slot, dirs[0], argv, b"", _limits(10)),
                                             isolation.run(slot, dirs[1], argv, b"", _limits(10)))
        assert first.exit_code == 0 and second.exit_code == 0, (first, second)
        a, b = first.stdout.decode().rsplit(" ", 2), second.stdout.decode().rsplit(" ", 1)
        assert a[0] == "['build', 'main.py'] []"  # not lane 1's secret, nothing under /.jobs
        assert b[0] == "['build', 'main.py', 'secret.txt'] []"
        assert float(b[1]) >= float(a[2])  # the second started after the first ended

    asyncio.run(_with_worker(zygote, body))


@pytest.mark.parametrize("zygote", ["c", "python"])
def test_a_waiting_execution_gets_its_whole_wall_clock_and_can_be_cancelled(zygote: str) -> None:
    async def body(isolation, slot) -> None:
        dirs = [isolation.new_job_dir(slot, lane) for lane in range(2)]
        slow = [PY, "-I", "-c", "import time; time.sleep(1.2)"]
        quick = [PY, "-I", "-c", "print('ran')"]
        started = time.perf_counter()
        # waits ~1.2 s behind the slow one, far past its own 1 s wall clock, and still runs to the end
        first, second = await asyncio.gather(isolation.run(slot, dirs[0], slow, b"", _limits(10)),
                                             isolation.run(slot, dirs[1], quick, b"", _limits(1.0)))
        assert first.exit_code == 0 and time.perf_counter() - started >= 1.2
        assert second.exit_code == 0 and not second.wall_killed and second.stdout == b"ran\n", second
        assert second.wall_s < 1.0
        # cancelled while it waits: reported as cancelled, and the running one is not disturbed
        running = asyncio.ensure_future(isolation.run(slot, dirs[0], slow, b"", _limits(10)))
        waiting = asyncio.ensure_future(isolation.run(slot, dirs[1], quick, b"", _limits(10)))
        await asyncio.sleep(0.3)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert not running.done()
        raw = await running
        assert raw.exit_code == 0 and raw.sandbox_failure is None, raw

    asyncio.run(_with_worker(zygote, body))
