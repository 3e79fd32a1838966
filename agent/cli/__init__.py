"""The `bitrag` command line, assembled here from one module per command group: answering
(ask, chat), notes (ingest, search), models (models, quantize, bench, serve-llm), evaluation
(eval), tuning (tune), mcp and doctor. Errors become one line on stderr and a non-zero exit
(common). The commands import the graph, the runtime, `retrieval`, and lazily `eval` and
`mcp_servers`."""

import os
import signal

import click

from agent.cli import answering, doctor, evaluation, mcp, models, notes, tuning
from agent.cli.common import BitragGroup


@click.group(cls=BitragGroup)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.option(
    "--threads",
    type=click.IntRange(1),
    help="llama.cpp threads (or $BITRAG_THREADS; at most the cores; default: the cores idle now).",
)
def cli(debug: bool, threads: int | None) -> None:
    """Private, offline question answering over your own documents."""
    if threads:
        os.environ["BITRAG_THREADS"] = str(threads)


for command in (
    answering.ask,
    answering.chat,
    notes.ingest,
    notes.search,
    models.models,
    models.quantize,
    models.bench,
    models.serve_llm,
    evaluation.eval_cmd,
    tuning.tune,
    mcp.mcp,
    doctor.doctor,
):
    cli.add_command(command)


def main() -> None:
    # Ctrl-C ends a command at once, also inside a long native call (loading torch or a
    # model) where Python would notice it seconds later, or a library would swallow it.
    # Nothing is lost: index and session writes are atomic. `chat` catches it instead.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    cli(prog_name="bitrag")
