"""The load generator of ``offer-engine bench api`` counts the CPU time of the server it drives:
the supervisor's and its workers' (child processes)."""

from __future__ import annotations

import subprocess
import sys

from api.bench.load import ServerClock

# A stand-in for uvicorn's supervisor: it starts one worker and waits for it. The worker burns
# 0.3 s of CPU, says so, then waits for its input to close.
WORKER = """
import sys, time
while time.process_time() < 0.3:
    pass
print("burnt", flush=True)
sys.stdin.read()
"""
SUPERVISOR = f"""
import subprocess, sys
subprocess.run([sys.executable, "-c", {WORKER!r}], check=True)
"""


def test_the_cpu_of_a_servers_children_is_counted() -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        clock = ServerClock(server.pid)
        before = clock.seconds()
        assert server.stdout is not None and server.stdout.readline() == "burnt\n"
        after = clock.seconds()
    finally:
        server.communicate("")
    assert before is not None and after is not None
    assert after >= 0.3, "the worker's 0.3 s of CPU is part of the server's"
    assert after > before


def test_no_server_named_no_figure() -> None:
    assert ServerClock(None).seconds() is None
