"""The benches' CPU accounting: a process's own time, and its children's."""

from __future__ import annotations

import subprocess
import sys

import psutil

from hitl_sip.testing.procstat import children_cpu, cpu_seconds


def test_cpu_seconds_counts_the_work_done() -> None:
    me = psutil.Process()
    before = cpu_seconds(me)
    total = 0
    while cpu_seconds(me) - before < 0.05:
        total += sum(range(10_000))
    assert cpu_seconds(me) - before >= 0.05 and total > 0


def test_children_cpu_sums_the_live_children() -> None:
    me = psutil.Process()
    before = children_cpu(me)
    busy = subprocess.Popen([sys.executable, "-c",
                             "import time\nt=time.process_time()\n"
                             "while time.process_time()-t<0.3: pass\nprint('burnt', flush=True)\n"
                             "input()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert busy.stdout is not None and busy.stdout.readline() == b"burnt\n"
        assert children_cpu(me) - before >= 0.3
    finally:
        busy.communicate(b"\n", timeout=10)
    assert children_cpu(me) - before < 0.3  # an ended child no longer counts
