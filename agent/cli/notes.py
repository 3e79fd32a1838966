"""The notes commands: `bitrag ingest` builds and updates the index, `bitrag search` shows what
it finds. With `--store URL` (or BITRAG_STORE) the index is a PostgreSQL store: `ingest`
still builds the file index (incremental: unchanged files are not embedded again) and then
publishes it to the store in one transaction; `search`, `ask` and `chat` read the store."""

import sys
from collections.abc import Callable
from pathlib import Path

import click

from agent.cli.common import INDEX_HELP, index_dir, open_default, print_json
from retrieval.errors import UserError

STORE_HELP = "PostgreSQL store, e.g. postgresql://USER@HOST/DB (or $BITRAG_STORE)."
STORE_SCHEMA_HELP = "Schema of the store (default: $BITRAG_STORE_SCHEMA or bitrag)."


def store_options(command: Callable) -> Callable:
    """The --store and --store-schema options of the commands that can use PostgreSQL."""
    command = click.option("--store-schema", help=STORE_SCHEMA_HELP)(command)
    return click.option("--store", help=STORE_HELP)(command)


def open_notes(index: str | None, store: str | None, store_schema: str | None):
    """The index to read: --index, else --store or BITRAG_STORE, else the default index."""
    from retrieval.store.postgres_open import open_store, store_from

    if index and store:
        raise UserError("--index and --store name two different indexes: give one of them")
    target = None if index else store_from(store, store_schema)
    return open_store(target) if target else open_default(index)


def _show_progress(stage: str, done: int, total: int) -> None:
    """A one-line progress display on stderr, shown only on a terminal."""
    if sys.stderr.isatty():
        end = "\n" if done == total else ""
        click.echo(f"\r{stage} {done}/{total}", err=True, nl=False)
        click.echo(end, err=True, nl=False)


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--index", help=INDEX_HELP)
@click.option(
    "--max-mb", default=50, show_default=True, type=click.IntRange(1), help="Skip larger files."
)
@store_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ingest(
    paths: tuple[str, ...],
    index: str | None,
    max_mb: int,
    store: str | None,
    store_schema: str | None,
    as_json: bool,
) -> None:
    """Add files and folders to the index (unchanged files are skipped, deleted ones removed)."""
    from retrieval.store import ingest as run_ingest
    from retrieval.store.postgres_open import check_writable, publish_directory, store_from

    target = store_from(store, store_schema)
    if target:
        check_writable(target)  # a wrong --store is one line before any embedding
    roots = [Path(p).expanduser() for p in paths]
    report = run_ingest(roots, index_dir(index), max_mb * 1024 * 1024, _show_progress).as_dict()
    nothing = _indexed_nothing(report)
    if target and not nothing:
        generation = publish_directory(target, index_dir(index))
        report["store"] = {"where": target.where, "schema": target.schema, "generation": generation}
    _print_report(report, as_json)
    if nothing:
        where = ", ".join(paths)
        if report["skipped"]:
            raise UserError(f"nothing under {where} could be indexed: every file was skipped")
        raise UserError(f"no supported files (.txt .md .pdf .html) under {where}")


def _print_report(report: dict, as_json: bool) -> None:
    if as_json:
        print_json(report)
        return
    counts = ("added", "updated", "unchanged", "removed", "chunks")
    click.echo(", ".join(f"{key} {report[key]}" for key in counts))
    if store := report.get("store"):
        click.echo(
            f"published generation {store['generation']} to PostgreSQL schema "
            f"{store['schema']} of {store['where']}"
        )
    for skipped in report["skipped"]:
        click.echo(f"skipped {skipped['path']}: {skipped['reason']}", err=True)


def _indexed_nothing(report: dict) -> bool:
    """No document of these paths is in the index now and none was removed from it."""
    kept = any(s["reason"].startswith("kept") for s in report["skipped"])
    touched = ("added", "updated", "unchanged", "removed")
    return not kept and not any(report[key] for key in touched)


@click.command()
@click.argument("query")
@click.option(
    "--retriever",
    type=click.Choice(["bm25", "dense", "faiss", "hybrid"]),
    default="hybrid",
    show_default=True,
)
@click.option("-k", "k", default=5, show_default=True, type=click.IntRange(1, 100))
@click.option("--index", help=INDEX_HELP)
@store_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def search(
    query: str,
    retriever: str,
    k: int,
    index: str | None,
    store: str | None,
    store_schema: str | None,
    as_json: bool,
) -> None:
    """Show the chunks that best match QUERY."""
    if not query.strip():
        raise UserError("the query is empty")
    hits = open_notes(index, store, store_schema).search(query, k, retriever)
    rows = [
        {
            "rank": h.rank,
            "score": h.score,
            "source": h.chunk.source,
            "chunk_id": h.chunk.chunk_id,
            "text": h.chunk.text,
        }
        for h in hits
    ]
    if as_json:
        print_json({"results": rows})
        return
    for row in rows:
        click.echo(f"{row['rank']}. {row['score']:.4f} {row['chunk_id']}")
    if not rows:
        click.echo("no matching chunks", err=True)
