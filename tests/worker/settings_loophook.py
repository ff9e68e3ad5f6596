"""The project's settings plus a startup hook that blocks the worker's loop (tests/worker/test_eventloop.py).

A subprocess started with DJANGO_SETTINGS_MODULE=tests.worker.settings_loophook gets it.
"""

from __future__ import annotations

from project.settings import *

WORKER_STARTUP_HOOKS = ["tests.worker.loophooks.block_the_loop"]
