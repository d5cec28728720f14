"""A throwaway PostgreSQL cluster on a free loopback port, for tests that need a real shared database.

    with postgres_cluster(["optuna", "mlflow"]) as pg:
        pg.url("optuna")   # postgresql://postgres@127.0.0.1:PORT/optuna

The cluster lives in its own temporary folder (trust authentication, TCP on 127.0.0.1 only, its Unix socket
in that folder, fsync off) and is stopped and deleted on exit. initdb refuses to run as root, so under root
every server binary runs as the unprivileged ``postgres`` user through ``runuser``. Clusters left behind by a
test process that was killed are found by their owner-pid file and stopped at the next start.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

PREFIX = "her2pcr-pg-"
OWNER_FILE = "owner.pid"
SERVICE_USER = "postgres"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (callers retry if someone takes it meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bin_dir() -> Path | None:
    """The newest PostgreSQL server bin directory (Debian layout first, then PATH), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                   if Path(p).parent.name.isdigit() else 0)
    for candidate in reversed(found):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


def unavailable_reason() -> str | None:
    """Why a cluster cannot be started here (for pytest.skip), or None when it can."""
    if bin_dir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found; install the Debian `postgresql` package"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            return f"running as root and there is no unprivileged {SERVICE_USER!r} user for initdb"
        if shutil.which("runuser") is None:
            return "running as root and `runuser` is missing (initdb must run unprivileged)"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed"
    return None


def _as_service_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", SERVICE_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def _pid_alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not reaped, e.g. under an init that never reaps) is dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _kill_postmaster(data_dir: Path, bins: Path | None, root: Path) -> None:
    """Stop a cluster: pg_ctl's immediate shutdown, then SIGKILL to the postmaster if it still runs."""
    pid = _postmaster_pid(data_dir)
    if pid is None or not _pid_alive(pid):
        return
    if bins is not None:
        subprocess.run(_as_service_user([str(bins / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "-w",
                                         "-t", "20", "stop"]),
                       cwd=root, capture_output=True, text=True, timeout=60, check=False)
    if _pid_alive(pid) and _postmaster_pid(data_dir) == pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)  # its backends exit once the postmaster is gone


def clean_leftovers(tmp_root: Path | None = None) -> list[Path]:
    """Stop and delete clusters of this helper whose owning test process is gone; returns what was removed."""
    removed = []
    bins = bin_dir()
    for root in Path(tmp_root or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            owner = int((root / OWNER_FILE).read_text())
        except (OSError, ValueError):
            # A folder this young may still be starting (its owner file is written first thing).
            if time.time() - root.stat().st_mtime < 600:
                continue
            owner = -1
        if owner > 0 and _pid_alive(owner):
            continue
        _kill_postmaster(root / "data", bins, root)
        shutil.rmtree(root, ignore_errors=True)
        removed.append(root)
    return removed


@dataclass(frozen=True)
class Cluster:
    root: Path
    port: int
    user: str = SERVICE_USER

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres", scheme: str = "postgresql") -> str:
        """libpq/SQLAlchemy URL; ``scheme`` may name a SQLAlchemy driver, e.g. postgresql+psycopg2."""
        return f"{scheme}://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg2
        from psycopg2 import sql

        connection = psycopg2.connect(self.url("postgres"), connect_timeout=10)
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            connection.close()
        return self.url(name)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(_as_service_user(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False, env={k: v for k, v in os.environ.items() if not k.startswith("PG")})


@contextlib.contextmanager
def postgres_cluster(databases: Sequence[str] = ("db",), attempts: int = 3) -> Iterator[Cluster]:
    """Start a fresh cluster, create ``databases``, yield it; always stop it and delete its folder."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    bins = bin_dir()
    assert bins is not None
    clean_leftovers()
    # Not under pytest's tmp_path: its 0700 parents are not traversable by the postgres user.
    root = Path(tempfile.mkdtemp(prefix=PREFIX))
    (root / OWNER_FILE).write_text(str(os.getpid()))
    data_dir = root / "data"
    try:
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam(SERVICE_USER)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        result = _run([str(bins / "initdb"), "-D", str(data_dir), "-U", SERVICE_USER, "--auth=trust",
                       "--encoding=UTF8", "--locale=C", "--no-sync"], root, 180)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
        cluster = None
        for _ in range(attempts):
            candidate = Cluster(root=root, port=free_port())
            settings = {"listen_addresses": "'127.0.0.1'", "port": str(candidate.port),
                        "unix_socket_directories": f"'{root}'", "fsync": "off", "synchronous_commit": "off",
                        "full_page_writes": "off", "shared_buffers": "'32MB'", "max_connections": "100",
                        "logging_collector": "off"}
            with open(data_dir / "postgresql.auto.conf", "w", encoding="utf-8") as handle:
                handle.writelines(f"{key} = {value}\n" for key, value in settings.items())
            result = _run([str(bins / "pg_ctl"), "-D", str(data_dir), "-l", str(candidate.log_file), "-w",
                           "-t", "60", "start"], root, 120)
            if result.returncode == 0:
                cluster = candidate
                break
            _kill_postmaster(data_dir, bins, root)  # e.g. the port was taken between choice and bind
        if cluster is None:
            raise RuntimeError(f"PostgreSQL did not start:\n{result.stdout}\n{result.stderr}\n"
                               f"{candidate.log_tail()}")
        for name in databases:
            cluster.create_database(name)
        yield cluster
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            if _postmaster_pid(data_dir) is not None:
                _run([str(bins / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "-t", "30", "stop"], root, 60)
        _kill_postmaster(data_dir, bins, root)
        shutil.rmtree(root, ignore_errors=True)
