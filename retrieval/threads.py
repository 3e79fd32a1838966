"""How many threads llama.cpp and torch may use: BITRAG_THREADS, else the cores idle now.

Measured on this 2-core machine (eval/bench/threads.py, SmolLM2-135M): idle, 2
threads gave 327 prompt / 109 generated tokens/s against 174 / 52 with 1; with
two CPU-bound processes beside it, 2 threads fell to 55 / 23 while 1 thread kept
110 / 42. llama.cpp's threads wait for each other, so a thread that gets no
core stalls all of them. The default therefore counts the cores nobody else is
running on (Linux /proc/loadavg's runnable tasks, less this process's own) and is re-checked
before every request, so a job that starts later slows bitrag down, not to a crawl.
Torch's pool behaves the same way: with another job on both cores, one e5 query took
976 ms on 2 threads and 44 ms on 1, so embeddings follow the same count.
A setting above the cores this process may run on (its CPU affinity) is clamped to them,
said once on stderr: 999 threads on 2 cores made one `ask` run for minutes.
"""

import os
import sys
from functools import cache
from pathlib import Path

from retrieval.errors import UserError

LOADAVG = Path("/proc/loadavg")


def configured() -> int | None:
    """BITRAG_THREADS (also set by `bitrag --threads N`), validated; None when unset."""
    value = os.environ.get("BITRAG_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"BITRAG_THREADS must be a whole number of threads >= 1, not {value!r}")
    return int(value)


def _own_running() -> int:
    """Threads of this process that are running now (torch's pool may still be spinning
    after an embedding; that is bitrag's own work, not another job's)."""
    running = 0
    for stat in Path("/proc/self/task").glob("*/stat"):
        try:
            running += stat.read_text().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):
            continue
    return max(1, running)  # at least the thread reading this


def cores() -> int:
    """The cores this process may run on: its CPU affinity, else the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity call on this platform
        return os.cpu_count() or 1


def idle_cores() -> int:
    """Cores not running another process's task now (at least 1, at most all of them)."""
    usable = cores()
    try:
        running = int(LOADAVG.read_text().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return usable
    others = max(0, running - _own_running())
    return max(1, min(usable, usable - others))


@cache
def _say_clamped(asked: int, available: int) -> None:
    """Once per process: the setting is more than the cores there are."""
    print(
        f"bitrag: {asked} threads asked for (--threads or BITRAG_THREADS), but only "
        f"{available} cores are available; using {available}",
        file=sys.stderr,
    )


def clamped(asked: int) -> int:
    """`asked`, at most the cores there are (said once on stderr when it is more)."""
    available = cores()
    if asked <= available:
        return asked
    _say_clamped(asked, available)
    return available


def threads() -> int:
    asked = configured()
    return idle_cores() if asked is None else clamped(asked)
