"""A bitrag MCP server in a child process over streamable HTTP, always stopped afterwards.

``served_over_http("tools", ["--root", folder], token=...)`` runs
``bitrag mcp serve tools --transport http --port P`` on 127.0.0.1, waits until the port takes
connections (or the process exits, or the time runs out), yields its URL, and terminates it on
the way out, killing it if it does not stop in time. For tests and benchmarks that talk to a
real server process.
"""

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from mcp_servers.serve import MCP_PATH

HOST = "127.0.0.1"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
LOG_TAIL_CHARS = 4000


class ServerDidNotStart(RuntimeError):
    """The server exited, or its port took no connection in time; the message ends with its log."""


def bitrag_command() -> list[str]:
    """The `bitrag` of this interpreter's environment, else `python -m agent`."""
    script = Path(sys.executable).parent / "bitrag"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    """Terminate the process; kill it when it has not exited within `timeout`."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def _tail(log: IO[str]) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-LOG_TAIL_CHARS:]


def _wait_for_port(process: subprocess.Popen, port: int, log: IO[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ServerDidNotStart(f"the server exited with {process.returncode}: {_tail(log)}")
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise ServerDidNotStart(
                    f"the server took no connection within {timeout:g} s: {_tail(log)}"
                ) from None
            time.sleep(0.2)


@contextmanager
def served_over_http(
    name: str,
    args: list[str],
    log: IO[str],
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    token: str | None = None,
    start_timeout: float = START_TIMEOUT_S,
) -> Iterator[str]:
    """Serve `bitrag mcp serve NAME ARGS` over HTTP on 127.0.0.1 and yield its URL.

    `log` (a text file open for reading and writing) gets the server's output; the process is
    stopped when the block ends, however it ends."""
    port = port or free_port()
    command = [*bitrag_command(), "mcp", "serve", name, *args]
    command += ["--transport", "http", "--host", HOST, "--port", str(port)]
    if token:
        command += ["--token", token]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(env) if env is not None else None,
    )
    try:
        _wait_for_port(process, port, log, start_timeout)
        yield f"http://{HOST}:{port}{MCP_PATH}"
    finally:
        stop(process)
