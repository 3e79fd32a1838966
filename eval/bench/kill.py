"""Kill -9 at random points during `bitrag ingest`: no generation may be lost, and the resumed
ingest may re-embed only the files the killed one had not finished.

    python -m eval.bench.kill [--runs 20] [--files 80] [--per-file 2] [--seed 0]

Each run writes a synthetic notes folder (eval.synthetic) into a temporary directory. Odd runs
first index a quarter of its files completely (the previous generation), then add the rest and
change one indexed file; even runs are first ingests. `bitrag ingest` runs as a subprocess and
gets SIGKILL at a seeded random time between 0.5 s and the length of one full ingest (measured
first, and again whenever an ingest ends before its kill time). Then the index is loaded and
searched in this process: the previous generation (or a newer one the killed ingest committed)
must load and answer; a killed first ingest may leave no index. Last, the ingest runs again to
completion, and its --json `embedded_files` and `reused_files` say what it redid.

Reported per run and overall: generations lost (must be 0); files finished at the kill
(cache entries the killed ingest wrote); files the resume re-embedded although the killed
ingest had finished them ("redone", must be 0) as a share of the run's work; and the share
of the work the resume still had to do, against 1.0 for every killed first ingest without
the cache. Work a kill loses beyond that is the embedding batch in progress (at most 64
chunks, or the file in progress when it is larger), which no file count shows.
"""

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from eval import synthetic
from retrieval.errors import UserError
from retrieval.store import Index


@dataclass
class Run:
    run: int
    previous: str | None  # generation CURRENT named before the killed ingest
    kill_at_s: float
    killed: bool  # False: the ingest finished before its kill time came
    after_kill: str  # "kept" | "committed" | "none" (first ingest) | "lost: ..."
    work: int  # files the killed ingest had to embed
    finished: int  # files whose embeddings it left in cache/
    embedded: int  # files the resume embedded
    reused: int  # files the resume read back from cache/

    @property
    def redone(self) -> int:
        """Finished files embedded again; a committed kill leaves nothing to redo."""
        if self.after_kill == "committed":
            return self.embedded
        return self.embedded - (self.work - self.finished)


def _command(notes: Path, index: Path) -> list[str]:
    return [sys.executable, "-m", "agent", "ingest", str(notes), "--index", str(index), "--json"]


def _ingest(notes: Path, index: Path) -> dict:
    done = subprocess.run(_command(notes, index), capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"ingest failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def _entries(index: Path) -> set[str]:
    return {p.name for p in (index / "cache").glob("*.npz")}


def _kill_at(notes: Path, index: Path, at_s: float) -> tuple[bool, float]:
    """Start an ingest and SIGKILL it `at_s` seconds later: (killed, seconds it ran)."""
    proc = subprocess.Popen(
        _command(notes, index), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    start = time.monotonic()
    try:
        while time.monotonic() < start + at_s and proc.poll() is None:
            time.sleep(0.02)
        killed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    return killed, time.monotonic() - start


def _after_kill(index: Path, previous: str | None, query: str) -> str:
    """Load and search whatever generation CURRENT names now."""
    try:
        loaded = Index.load(index)
        loaded.verify()
        if not loaded.search(query, 3, "hybrid"):
            return "lost: search found nothing"
    except UserError as exc:
        no_index = previous is None and not (index / "CURRENT").exists()
        return "none" if no_index else f"lost: {exc}"
    return "kept" if loaded.generation.name == previous else "committed"


def _corpus(folder: Path, run: int, files: int, per_file: int) -> list[str]:
    texts = synthetic.sections(files * per_file, seed=run)
    synthetic.write_corpus(folder, texts, per_file)
    return texts


def _prepare(work: Path, run: int, files: int, per_file: int) -> tuple[Path, Path, int]:
    """Notes and index for one run, and the files left to embed; odd runs start from a
    committed generation of a quarter of the files, then gain the rest and one changed file."""
    notes, index = work / "notes", work / "index"
    if run % 2 == 0:
        _corpus(notes, run, files, per_file)
        return notes, index, files
    staged = work / "staged"
    texts = _corpus(staged, run, files, per_file)
    paths = sorted(staged.iterdir())
    notes.mkdir()
    for path in paths[: files // 4]:
        path.rename(notes / path.name)
    _ingest(notes, index)
    for path in paths[files // 4 :]:
        path.rename(notes / path.name)
    (notes / paths[0].name).write_text(f"# Changed\n\n{texts[-1]}\n")
    return notes, index, files - files // 4 + 1


def _one(run: int, rng: random.Random, args, full_s: list[float]) -> Run:
    """One killed and resumed ingest; an ingest that ended before its kill updates full_s."""
    with tempfile.TemporaryDirectory(prefix="bench-kill-") as tmp:
        notes, index, todo = _prepare(Path(tmp), run, args.files, args.per_file)
        previous = (index / "CURRENT").read_text() if (index / "CURRENT").exists() else None
        before = _entries(index)
        at_s = round(rng.uniform(0.5, full_s[0]), 2)
        killed, ran_s = _kill_at(notes, index, at_s)
        if not killed:
            full_s[0] = ran_s  # the machine is faster now than when measured
        finished = len(_entries(index) - before)
        query = synthetic.queries(synthetic.sections(args.files * args.per_file, seed=run), 1)[0]
        after = _after_kill(index, previous, query)
        report = _ingest(notes, index)
        Index.load(index).verify()
        return Run(
            run, previous, at_s, killed, after, todo, finished,
            report["embedded_files"], report["reused_files"],
        )  # fmt: skip


def _calibrate(args) -> float:
    """Seconds one uninterrupted first ingest of a run's folder takes here."""
    with tempfile.TemporaryDirectory(prefix="bench-kill-") as tmp:
        notes = Path(tmp) / "notes"
        _corpus(notes, 0, args.files, args.per_file)
        start = time.perf_counter()
        _ingest(notes, Path(tmp) / "index")
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--files", type=int, default=80)
    parser.add_argument("--per-file", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="bench-kill-home-")
    os.environ["BITRAG_HOME"] = home
    try:
        full_s = [_calibrate(args)]
        print(f"full ingest: {full_s[0]:.1f} s for {args.files} files x {args.per_file} chunks")
        print("| run | previous | kill at s | killed | after kill | work | finished | "
              "embedded | reused | redone |")  # fmt: skip
        print("| --- " * 10 + "|", flush=True)
        rng = random.Random(args.seed)
        rows = [_row(_one(run, rng, args, full_s)) for run in range(args.runs)]
    finally:
        shutil.rmtree(home, ignore_errors=True)
    _summary(rows, full_s[0])


def _row(r: Run) -> Run:
    """Print one run's line as soon as it is done."""
    cells = (r.run, r.previous or "-", r.kill_at_s, r.killed, r.after_kill, r.work,
             r.finished, r.embedded, r.reused, r.redone)  # fmt: skip
    print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)
    return r


def _summary(rows: list[Run], full_s: float) -> None:
    summary = {
        "runs": len(rows),
        "killed_mid_ingest": sum(r.killed and r.after_kill != "committed" for r in rows),
        "generations_lost": sum(r.after_kill.startswith("lost") for r in rows),
        "finished_files_redone": sum(r.redone for r in rows),
        "mean_fraction_redone": round(statistics.mean(r.redone / r.work for r in rows), 4),
        "mean_fraction_resumed": round(statistics.mean(r.embedded / r.work for r in rows), 4),
        "full_ingest_s": round(full_s, 1),
        "threads": os.cpu_count(),
    }
    print(json.dumps({"summary": summary, "runs": [asdict(r) for r in rows]}))


if __name__ == "__main__":
    main()
