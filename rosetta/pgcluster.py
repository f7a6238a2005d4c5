"""A throwaway PostgreSQL cluster with wal_level=logical, for tests, the demo and benchmarks.

PostgreSQL refuses to run as root, so when we are root the cluster is created
and started as the `postgres` OS user, in a directory that user owns.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BIN_DIRS = ["/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin"]


def find_bin_dir() -> Path:
    explicit = os.environ.get("ROSETTA_PG_BIN")
    candidates = [explicit] if explicit else BIN_DIRS
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql or set ROSETTA_PG_BIN."
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """initdb + pg_ctl start on a free loopback port; stop() removes everything."""

    def __init__(
        self,
        data_dir: str | None = None,
        port: int | None = None,
        settings: dict | None = None,
        host_auth: str = "trust",
    ):
        self.host_auth = host_auth
        self.bin_dir = find_bin_dir()
        self.port = port or free_port()
        self.base_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="rosetta-pg-"))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.settings = {
            "wal_level": "logical",
            "max_replication_slots": "50",
            "max_wal_senders": "20",
            "max_connections": "200",
            "listen_addresses": "127.0.0.1",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "256MB",
            **(settings or {}),
        }
        self.run_as_postgres = os.geteuid() == 0

    def _run(self, *args: str, check=True) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self.run_as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        """Over TCP when host auth is trust, else over the Unix socket (always trust)."""
        host = "127.0.0.1" if self.host_auth == "trust" else self.socket_dir
        return f"host={host} port={self.port} dbname={dbname} user={user}"

    def url(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> "Cluster":
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self.run_as_postgres:
            shutil.chown(self.base_dir, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
            os.chmod(self.base_dir, 0o755)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth-local=trust",
                f"--auth-host={self.host_auth}",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            )
        options = " ".join(f"-c {key}={value}" for key, value in self.settings.items())
        options += f" -p {self.port} -k {self.socket_dir}"
        result = self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-o",
            options,
            "-l",
            str(self.base_dir / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
            check=False,
        )
        if result.returncode != 0:
            log = self.base_dir / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start on port {self.port}: {result.stderr}\n{tail}")
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL on port {self.port} does not accept connections")

    def stop(self, remove: bool = True) -> None:
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "stop", check=False
        )
        if remove:
            shutil.rmtree(self.base_dir, ignore_errors=True)
