"""Run a command next to a throwaway Redis and PostgreSQL, then remove them.

    python scripts/testenv.py [--no-postgres] [--no-redis] -- COMMAND [ARGS...]

Everything lives under one temporary directory that is deleted at the end,
whatever happens (the command fails, Ctrl-C, SIGTERM). The command sees:

    REDIS_URL            redis://127.0.0.1:<free port>/0
    TEST_POSTGRES_URL    postgres://batchfetch:<random>@127.0.0.1:<free port>/batchfetch
    BATCHFETCH_VAR_DIR   <tmp>/var, unless already set (the SQLite test database lives there)

The exit status is the command's (a signal becomes 128 + its number).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from localservices import ManagedProcess, PostgresCluster, ServiceError, free_port, start_redis  # noqa: E402


class Stop(Exception):
    """Raised from a signal handler to unwind through the cleanup code."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signum)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-redis", action="store_true", help="do not start Redis")
    parser.add_argument("--no-postgres", action="store_true", help="do not start PostgreSQL")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="command to run (after --)")
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command given")
    return args


def run(args: argparse.Namespace) -> int:
    """Start the services, run the command with their URLs in the environment, stop everything."""
    top = Path(tempfile.mkdtemp(prefix="batchfetch-test-"))
    # The PostgreSQL server may run as another account: it must be able to pass through `top`.
    top.chmod(0o711)
    redis: ManagedProcess | None = None
    cluster: PostgresCluster | None = None
    child: subprocess.Popen[bytes] | None = None
    env = dict(os.environ)
    try:
        if not args.no_redis:
            port = free_port()
            redis = start_redis(port=port, workdir=top / "redis")
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            print(f"testenv: Redis on {env['REDIS_URL']} ({redis.argv[0]})", flush=True)
        if not args.no_postgres:
            cluster = PostgresCluster(root=top / "pg")
            cluster.start()
            env["TEST_POSTGRES_URL"] = cluster.url
            who = f"as user {cluster.run_as}" if cluster.run_as else "as the current user"
            print(f"testenv: PostgreSQL ({cluster.bindir}) on 127.0.0.1:{cluster.port}, {who}", flush=True)
        env.setdefault("BATCHFETCH_VAR_DIR", str(top / "var"))
        child = subprocess.Popen(args.command, env=env)
        return child.wait()
    except Stop as stop:
        print(f"testenv: {stop}, stopping", file=sys.stderr, flush=True)
        return 128 + stop.signum
    except ServiceError as exc:
        print(f"testenv: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        # A second signal must not interrupt the cleanup below.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if cluster is not None:
            cluster.stop()
        if redis is not None:
            redis.stop()
        shutil.rmtree(top, ignore_errors=True)


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_stop)
    sys.exit(run(parse_args(sys.argv[1:])))


if __name__ == "__main__":
    main()
