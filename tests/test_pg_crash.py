"""kill -9 of a real `bitrag ingest --store` process at seeded random points, against a real
PostgreSQL server started here: readers see the previous generation or the new one, never a
mix, and the next ingest succeeds (eval.bench.store_crash; the 10-run version is
`python -m eval.bench.store --crash 10`)."""

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from eval.bench.store_crash import Rig, summary
from retrieval.paths import SAMPLE_CORPUS
from retrieval.store.postgres_server import LocalPostgres

NOTES = ["lora-qlora.md", "number-formats-floating-point.md", "bm25-한국어-형태소-분석.txt"]
ADDED = ["mixed-precision-training.md"]
KILLS = 3  # runs alternate: a kill anywhere in the ingest, one aimed at its publishing step
SEED = 28


@pytest.fixture(scope="module")
def pg() -> Iterator[LocalPostgres]:
    with LocalPostgres() as server:
        yield server


def test_kill_9_of_an_ingest_leaves_a_whole_generation(pg, tmp_path: Path) -> None:
    rig = Rig.build(
        pg.dsn, tmp_path, [SAMPLE_CORPUS / n for n in NOTES], [SAMPLE_CORPUS / n for n in ADDED]
    )
    rng = random.Random(SEED)
    runs = [rig.run(number, rng) for number in range(KILLS)]
    line = summary(runs)
    print(line)  # shown with -s
    for run in runs:
        assert run["whole_generation_only"], (line, run)
        assert run["following_ingest_ok"], (line, run)
        assert run["reads"] >= 1
    assert any(run["aimed_at_publish"] for run in runs)
