"""What every command shares: one-line errors, JSON output, option help, the default index."""

import json
from pathlib import Path

import click

from retrieval.errors import UserError
from retrieval.paths import SAMPLE_CORPUS, default_index_dir

INDEX_HELP = "Index directory (default: $BITRAG_HOME/index)."
MODEL_HELP = "GGUF model file (default: $BITRAG_MODEL or the embedded model)."
LLM_URL_HELP = "OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1 (or $BITRAG_LLM_URL);"
LLM_URL_HELP += " several, comma-separated, share the requests."


class BitragGroup(click.Group):
    """Turns exceptions into a one-line message unless --debug was given."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except UserError as exc:
            raise click.ClickException(" ".join(str(exc).split())) from None
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            line = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise click.ClickException(f"{line} (rerun with --debug for details)") from None


def print_json(obj: object) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, indent=2))


def index_dir(index: str | None) -> Path:
    return Path(index).expanduser() if index else default_index_dir()


def open_default(index: str | None):
    """The given index, or the default one (built from the sample corpus on first use)."""
    from retrieval.store import open_index

    return open_index(index_dir(index), None if index else SAMPLE_CORPUS)


def check_port(host: str, port: int) -> None:
    """Bind the address once, as the server will, so a busy port is one line before loading."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise UserError(f"cannot listen on {host}: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(
                    f"port {port} on {host} is already in use: stop what listens there, "
                    "or pass --port with a free port"
                ) from None
            raise UserError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
