"""`bitrag ingest|search|ask --store postgresql://...` against a real PostgreSQL server started
here (retrieval.store.postgres_server): the CLI publishes the file index it builds, search
ranks as the file store does, ask cites from the store, a wrong store is one line, and
readers in other processes never see a half-published generation."""

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from agent.cli import cli
from retrieval.paths import SAMPLE_CORPUS
from retrieval.store.postgres_server import LocalPostgres

ROOT = Path(__file__).resolve().parent.parent
NOTES = ["lora-qlora.md", "number-formats-floating-point.md", "bm25-한국어-형태소-분석.txt"]
ADDED = "mixed-precision-training.md"  # the new generation of the concurrency test
QUESTIONS = [
    "How many mantissa bits does bfloat16 have?",
    "What does LoRA train instead of the full weight matrix?",
    "BM25에서 형태소 분석이 왜 필요한가요?",
    "In my Korean notes, what is BM25?",
]
RACE_QUERY = "bfloat16 mantissa bits and loss scaling"


def _copy(names: list[str], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy(SAMPLE_CORPUS / name, folder / name)
    return folder


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def pg() -> Iterator[LocalPostgres]:
    with LocalPostgres() as server:
        yield server


@pytest.fixture(scope="module")
def course(pg, tmp_path_factory, converted_models) -> dict:
    """The notes ingested through the CLI into a file index and the `bitrag` schema."""
    folder = tmp_path_factory.mktemp("course")
    (folder / "home").mkdir()
    (folder / "home" / "models").symlink_to(converted_models, target_is_directory=True)
    notes, index = _copy(NOTES, folder / "notes"), folder / "index"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BITRAG_HOME", str(folder / "home"))
        result = _invoke("ingest", str(notes), "--index", str(index), "--store", pg.dsn, "--json")
    assert result.exit_code == 0, result.output
    return {"notes": notes, "index": index, "report": json.loads(result.stdout)}


def _search(run, query: str, *where: str, retriever: str = "hybrid") -> list[tuple[str, float]]:
    result = run("search", query, "--retriever", retriever, *where, "--json")
    assert result.exit_code == 0, result.output
    return [(r["chunk_id"], r["score"]) for r in json.loads(result.stdout)["results"]]


def _assert_same(file_hits, store_hits) -> None:
    assert file_hits, "the file store found nothing: the comparison would be empty"
    assert [c for c, _ in store_hits] == [c for c, _ in file_hits]
    assert [s for _, s in store_hits] == pytest.approx([s for _, s in file_hits], abs=1e-5)


def test_ingest_publishes_the_first_generation(course) -> None:
    report = course["report"]
    assert report["added"] == len(NOTES) and report["chunks"] > 0
    assert report["store"]["schema"] == "bitrag"
    assert report["store"]["generation"] == 1


@pytest.mark.parametrize("retriever", ["hybrid", "bm25"])
@pytest.mark.parametrize("question", QUESTIONS)
def test_search_ranks_as_the_file_store(run, pg, course, question, retriever) -> None:
    file_hits = _search(run, question, "--index", str(course["index"]), retriever=retriever)
    store_hits = _search(run, question, "--store", pg.dsn, retriever=retriever)
    _assert_same(file_hits[:5], store_hits[:5])


def test_bitrag_store_names_the_store(run, pg, course, monkeypatch, home) -> None:
    monkeypatch.setenv("BITRAG_STORE", pg.dsn)
    file_hits = _search(run, QUESTIONS[0], "--index", str(course["index"]))
    _assert_same(file_hits, _search(run, QUESTIONS[0]))
    assert not (home / "index").exists()  # the default file index was never built


def test_ask_answers_with_a_citation_from_postgresql(run_json, pg, course, home) -> None:
    result = run_json("ask", QUESTIONS[0], "--store", pg.dsn)
    assert result["abstained"] is False and result["citations"], result
    cited = {Path(c["source"]) for c in result["citations"]}
    assert cited == {course["notes"] / "number-formats-floating-point.md"}
    assert not (home / "index").exists()  # read from the store, not from a file index


def _one_line_error(result) -> str:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    ("store", "said"),
    [
        ("not a connection string", "not a PostgreSQL connection string"),
        ("host=/nonexistent/socket dbname=notes", "is the server running"),
        ("postgresql://nobody@127.0.0.1:1/notes", "check --store"),
    ],
)
def test_a_bad_store_is_one_line(run, store, said) -> None:
    line = _one_line_error(run("search", "bfloat16", "--store", store))
    assert said.lower() in line.lower()


def test_an_unknown_schema_is_one_line_saying_what_to_run(run, pg, course) -> None:
    line = _one_line_error(run("search", "bfloat16", "--store", pg.dsn, "--store-schema", "nope"))
    assert "no bitrag index in PostgreSQL schema 'nope'" in line
    assert "bitrag ingest PATH --store URL --store-schema nope" in line


def test_index_and_store_together_are_refused(run, pg, course) -> None:
    line = _one_line_error(run("search", "x", "--index", str(course["index"]), "--store", pg.dsn))
    assert "give one" in line


def test_an_unreachable_store_stops_ingest_before_any_work(run, tmp_path) -> None:
    notes = _copy(NOTES[:1], tmp_path / "notes")
    store = "host=/nonexistent/socket dbname=notes"
    _one_line_error(run("ingest", str(notes), "--index", str(tmp_path / "index"), "--store", store))
    assert not (tmp_path / "index").exists()


# Two readers in their own processes search while a third ingests a new generation. The test
# holds a SHARE lock on the generations table, so the writer stops at its last step (the
# generation row) with every new table written but uncommitted: the readers must see all of
# the first generation; once the lock goes, all of the second, and never anything else.

READER = """
import json, sys
from pathlib import Path
from click.testing import CliRunner
from agent.cli import cli
dsn, stop = sys.argv[1], Path(sys.argv[2])
while not stop.exists():
    args = ["search", "{query}", "--retriever", "bm25", "--store", dsn, "--store-schema", "race"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    rows = json.loads(result.stdout)["results"] if result.exit_code == 0 else result.output
    hits = rows if isinstance(rows, str) else [[r["chunk_id"], r["score"]] for r in rows]
    print(json.dumps(hits))
    sys.stdout.flush()
""".replace("{query}", RACE_QUERY)


class Reader:
    """A loop of `bitrag search` commands (each opens the store anew) in its own process; its
    results arrive in `lines`."""

    def __init__(self, dsn: str, stop: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", READER, dsn, str(stop)], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.lines: list = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(json.loads(line))

    def wait_for(self, count: int, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count:
            assert time.monotonic() < deadline and self.process.poll() is None, self.lines
            time.sleep(0.1)


def _wait_until(check, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _writer_blocked(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'INSERT INTO %generations%'"
        ).fetchone()
    return bool(row and row[0])


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen]]:
    """The processes a test starts; any still running at its end (a failure) are killed."""
    processes: list[subprocess.Popen] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def _start_writer(paths: list[str], started: list) -> subprocess.Popen:
    """`bitrag ingest ...` in its own process."""
    writer = subprocess.Popen(
        [sys.executable, "-m", "agent", "ingest", *paths], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    started.append(writer)
    return writer


def _bm25_hits(run, store: tuple[str, ...]) -> list[list]:
    return [list(hit) for hit in _search(run, RACE_QUERY, *store, retriever="bm25")]


def test_readers_never_see_a_partial_generation(run, pg, course, tmp_path, started) -> None:
    index, stop = tmp_path / "index", tmp_path / "stop"
    shutil.copytree(course["index"], index)
    store = ("--store", pg.dsn, "--store-schema", "race")
    assert run("ingest", str(course["notes"]), "--index", str(index), *store).exit_code == 0
    first = _bm25_hits(run, store)
    added = _copy([ADDED], tmp_path / "added")
    with psycopg.connect(pg.dsn) as holder:
        holder.execute("LOCK TABLE race.generations IN SHARE MODE")
        writer = _start_writer([str(added), "--index", str(index), *store], started)
        _wait_until(lambda: writer.poll() is not None or _writer_blocked(pg.dsn))
        assert writer.poll() is None, writer.stdout.read() if writer.stdout else ""
        readers = [Reader(pg.dsn, stop), Reader(pg.dsn, stop)]
        started.extend(reader.process for reader in readers)
        for reader in readers:
            reader.wait_for(2)
        during = [list(reader.lines) for reader in readers]
    # the holder's transaction ends here: the writer inserts its row and commits
    output, _ = writer.communicate(timeout=300)
    assert writer.returncode == 0, output
    second = _bm25_hits(run, store)
    for reader in readers:
        reader.wait_for(len(reader.lines) + 2)
    stop.touch()
    for reader in readers:
        reader.process.wait(60)
        reader.thread.join(10)
    assert first and second and first != second
    assert all(lines == [first] * len(lines) for lines in during)
    for reader in readers:
        assert all(line in (first, second) for line in reader.lines), reader.lines
        assert reader.lines[-1] == second
