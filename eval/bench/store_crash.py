"""kill -9 of an ingest into PostgreSQL, checked from the readers' side (issue 28's target:
readers see the previous generation or the new one, never a mix).

One run: a schema holds generation A (a copy of a file index, published); a real
`python -m agent ingest NEW --index COPY --store DSN --store-schema S` process starts to add
NEW on top of it (generation B), a reader thread keeps opening the schema and reading it,
and the writer gets SIGKILL after a seeded random delay: either anywhere in the ingest or
shortly after its publishing transaction took the schema's advisory lock. Then what the
readers saw (every chunk's id and text by position, every term's document frequency, a
BM25 top 5) must each be exactly A's or B's, as clean publishes of A and B give them, and a
following ingest of the same command must succeed and leave B.

Shared by tests/test_pg_crash.py (a few kills) and `python -m eval.bench.store --crash N`.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from retrieval.store import Index, ingest
from retrieval.store.postgres import PgIndex, publish

ROOT = Path(__file__).resolve().parent.parent.parent
QUERY = "bfloat16 mantissa bits and loss scaling"
POLL_S = 0.005


def seen(dsn: str, schema: str, query: str = QUERY) -> tuple:
    """What a reader of the newest generation sees: chunks by position, term frequencies
    and a BM25 top 5 (the generation number left out: content is what is compared)."""
    with PgIndex.open(dsn, schema) as index:
        found = index.fetch(list(range(index.generation.chunks)))
        chunks = tuple((found[p].chunk_id, found[p].text) for p in sorted(found))
        terms, frequencies = index.document_frequencies()
        hits = tuple((h.chunk.chunk_id, round(h.score, 9)) for h in index.search(query, 5, "bm25"))
    return chunks, tuple(zip(terms, frequencies.tolist(), strict=True)), hits


def _advisory_locks(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
    return int(row[0]) if row else 0


@dataclass
class Rig:
    """Generation A (a file index of `notes`) and B (A plus `added`) in `folder`, their
    clean contents as readers see them, and how long a whole ingest of B takes."""

    dsn: str
    folder: Path
    added: Path
    index_a: Path
    content_a: tuple
    content_b: tuple
    ingest_s: float
    publish_s: float

    @classmethod
    def build(cls, dsn: str, folder: Path, notes: list[Path], added: list[Path]) -> "Rig":
        def copied(paths: list[Path], name: str) -> Path:
            (folder / name).mkdir(parents=True)
            for path in paths:
                shutil.copy(path, folder / name / path.name)
            return folder / name

        notes_dir, added_dir = copied(notes, "notes"), copied(added, "added")
        index_a = folder / "index-a"
        ingest([notes_dir], index_a)
        publish(dsn, Index.load(index_a), "crash_clean_a")
        timing = folder / "index-timing"
        shutil.copytree(index_a, timing)
        publish(dsn, Index.load(timing), "crash_timing")
        start = time.perf_counter()
        done = _ingest(dsn, added_dir, timing, "crash_timing", wait=True)
        ingest_s = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"a clean ingest failed: {done.stdout}")
        start = time.perf_counter()
        publish(dsn, Index.load(timing), "crash_clean_b")
        publish_s = time.perf_counter() - start
        content_a, content_b = seen(dsn, "crash_clean_a"), seen(dsn, "crash_clean_b")
        if content_a == content_b or seen(dsn, "crash_timing") != content_b:
            raise RuntimeError("generations A and B must differ, and B be what ingest publishes")
        return cls(dsn, folder, added_dir, index_a, content_a, content_b, ingest_s, publish_s)

    def run(self, number: int, rng: random.Random) -> dict:
        """One kill: returns the delay, the phase it hit, what the readers saw, whether the
        following ingest succeeded and left B."""
        schema, index = f"crash_run_{number:03d}", self.folder / f"index-run-{number:03d}"
        shutil.copytree(self.index_a, index)
        publish(self.dsn, Index.load(index), schema)
        reads: list = []
        stop = threading.Event()
        reader = threading.Thread(target=self._read, args=(schema, stop, reads), daemon=True)
        reader.start()
        aimed = number % 2 == 1  # every other kill aims at the publishing transaction
        writer = _ingest(self.dsn, self.added, index, schema, wait=False)
        delay = self._wait(writer, aimed, rng)
        exited = writer.poll() is not None
        publishing = _advisory_locks(self.dsn) > 0
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        stop.set()
        reader.join(60)
        after = seen(self.dsn, schema)
        reads.append(after)
        whole = all(r in (self.content_a, self.content_b) for r in reads)
        follow = _ingest(self.dsn, self.added, index, schema, wait=True)
        recovered = follow.returncode == 0 and seen(self.dsn, schema) == self.content_b
        if exited:
            phase = "finished before the kill"
        elif after == self.content_b:
            phase = "after the commit"
        else:
            phase = "inside the publishing transaction" if publishing else "before publishing"
        return {
            "run": number,
            "aimed_at_publish": aimed,
            "delay_s": round(delay, 3),
            "phase": phase,
            "reads": len(reads),
            "saw": sorted({_name(r, self) for r in reads}),
            "whole_generation_only": whole,
            "following_ingest_ok": recovered,
            "following_ingest_output": "" if recovered else follow.stdout[-500:],
        }

    def _wait(self, writer: subprocess.Popen, aimed: bool, rng: random.Random) -> float:
        """Sleep until the kill: a random time of a whole ingest, or, aimed, a random time
        of two publishes after the writer holds the advisory lock (or has exited)."""
        if not aimed:
            delay = rng.uniform(0, self.ingest_s)
            time.sleep(delay)
            return delay
        start = time.perf_counter()
        deadline = start + 3 * self.ingest_s + 30
        while writer.poll() is None and time.perf_counter() < deadline:
            if _advisory_locks(self.dsn):
                break
            time.sleep(POLL_S)
        time.sleep(rng.uniform(0, 2 * self.publish_s))  # about half land after the commit
        return time.perf_counter() - start

    def _read(self, schema: str, stop: threading.Event, reads: list) -> None:
        while not stop.is_set():
            try:
                reads.append(seen(self.dsn, schema))
            except Exception as exc:  # noqa: BLE001 - a failed read is a finding, kept
                reads.append(f"{type(exc).__name__}: {exc}")


def _name(read, rig: Rig) -> str:
    if read == rig.content_a:
        return "A"
    if read == rig.content_b:
        return "B"
    return "neither" if isinstance(read, tuple) else read[:200]


def _ingest(
    dsn: str, added: Path, index: Path, schema: str, wait: bool
) -> subprocess.Popen | subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "agent", "ingest", str(added), "--index", str(index),
        "--store", dsn, "--store-schema", schema,
    ]  # fmt: skip
    if wait:
        return subprocess.run(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=600,
        )  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summary(runs: list[dict]) -> str:
    """One line: how many runs saw only a whole generation, and where the kills landed."""
    whole = sum(r["whole_generation_only"] for r in runs)
    recovered = sum(r["following_ingest_ok"] for r in runs)
    phases: dict[str, int] = {}
    for r in runs:
        phases[r["phase"]] = phases.get(r["phase"], 0) + 1
    where = ", ".join(f"{n} {phase}" for phase, n in sorted(phases.items()))
    reads = sum(r["reads"] for r in runs)
    return (
        f"kill -9 during ingest: {whole}/{len(runs)} runs saw only a whole generation "
        f"(previous or new; {reads} reads); following ingest succeeded in "
        f"{recovered}/{len(runs)}; kills landed: {where}"
    )
