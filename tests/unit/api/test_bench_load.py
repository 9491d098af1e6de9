"""The load generator of ``offer-engine bench api`` counts the CPU time of the server it drives:
the supervisor's and its workers' (child processes)."""

from __future__ import annotations

import os
import subprocess
import sys

from api.bench.load import ServerClock

BURN = """
import sys, time
while time.process_time() < 0.3:
    pass
print("burnt", flush=True)
sys.stdin.read()
"""


def test_the_cpu_of_a_servers_children_is_counted() -> None:
    clock = ServerClock(os.getpid())
    before = clock.seconds()
    assert before is not None
    child = subprocess.Popen(
        [sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "burnt\n"
        after = clock.seconds()
    finally:
        child.communicate("")
    assert after is not None
    assert after - before >= 0.3, "the child's 0.3 s of CPU is part of the server's"


def test_no_server_named_no_figure() -> None:
    assert ServerClock(None).seconds() is None
