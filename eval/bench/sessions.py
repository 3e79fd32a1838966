"""Two `bitrag ask --session S` at the same moment, round after round: are both turns kept?

    python -m eval.bench.sessions [--rounds 50]

Every round starts two `bitrag ask` processes at once in the session `round-<n>`, each with
its own question, waits for both, then reads that session's history from sessions.sqlite
(agent.assemble.session_history) and counts the asked questions it holds. Everything runs in
a private BITRAG_HOME (the sample corpus indexed once; the converted embedders of the user's
BITRAG_HOME linked in, so nothing is converted again). Printed: one line per round, then the
totals as JSON: turns kept against turns asked (equal when no turn is lost), the processes
that exited other than 0, and seconds per round.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUESTIONS = (
    "What is the default recursion limit of a LangGraph run?",
    "How many bits per weight does IQ2_XXS use?",
)
TIMEOUT_S = 900


def _home(user_home: Path) -> Path:
    """A private BITRAG_HOME with the sample corpus indexed and the user's embedders."""
    from retrieval.paths import SAMPLE_CORPUS
    from retrieval.store import open_index

    home = Path(tempfile.mkdtemp(prefix="bench-sessions-"))
    (user_home / "models").mkdir(parents=True, exist_ok=True)
    (home / "models").symlink_to(user_home / "models", target_is_directory=True)
    os.environ["BITRAG_HOME"] = str(home)
    open_index(home / "index", SAMPLE_CORPUS)
    return home


def _round(n: int, home: Path) -> dict:
    """Two asks at once in one session; what the session kept afterwards."""
    from agent.assemble import session_history

    session = f"round-{n}"
    env = os.environ | {"BITRAG_HOME": str(home), "HF_HUB_OFFLINE": "1", "BITRAG_THREADS": "1"}
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "agent", "ask", q, "--session", session, "--json"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for q in QUESTIONS
    ]
    errors = [p.communicate(timeout=TIMEOUT_S)[1].strip() for p in procs]
    failed = [(e or "no message").splitlines()[-1] for p, e in zip(procs, errors, strict=True)
              if p.returncode]  # fmt: skip
    asked = [turn["question"] for turn in session_history(session)]
    return {
        "round": n,
        "asked": len(QUESTIONS),
        "kept": sum(q in asked for q in QUESTIONS),
        "failed": failed,
        "seconds": round(time.perf_counter() - start, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    from retrieval.paths import bitrag_home

    home = _home(bitrag_home())
    try:
        print("| round | asked | kept | failed exits | s |")
        print("| --- " * 5 + "|", flush=True)
        rows = []
        for n in range(args.rounds):
            row = _round(n, home)
            print(f"| {n} | {row['asked']} | {row['kept']} | {len(row['failed'])} | "
                  f"{row['seconds']} |", flush=True)  # fmt: skip
            rows.append(row)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    summary = {
        "rounds": len(rows),
        "turns_asked": sum(r["asked"] for r in rows),
        "turns_kept": sum(r["kept"] for r in rows),
        "failed_exits": [f for r in rows for f in r["failed"]],
        "mean_round_s": round(statistics.mean(r["seconds"] for r in rows), 2) if rows else None,
    }
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
