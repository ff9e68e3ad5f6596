"""`var/.env`: the development settings `make run` / `make migrate` use, kept for `manage.py` run by hand.

`make migrate` (and so `make run`) writes the file once, with the values it
exported (DJANGO_DEBUG=1, FETCH_ALLOW_PRIVATE_ADDRESSES=1 unless you set
others), so `.venv/bin/python manage.py fetch urls.txt --wait` from a fresh
clone sees the same settings as the server `make run` started. manage.py loads
it before Django reads its settings; a variable already in the environment
wins. Production never has the file (nothing but `make migrate` writes it), so
there the environment alone decides, as before.

    python -m project.envfile write    # what `make migrate` runs

The format is the common subset of .env files: `KEY=VALUE` lines, `#` comments,
blank lines; no quoting, no expansion.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
# What `make run` / `make migrate` export (Makefile); written with the values they had there.
DEVELOPMENT_VARIABLES = ("DJANGO_DEBUG", "FETCH_ALLOW_PRIVATE_ADDRESSES")


def path(environ: MutableMapping[str, str] = os.environ) -> Path:
    """Where the file lives: `.env` in BATCHFETCH_VAR_DIR (default var/), beside the SQLite database."""
    return Path(environ.get("BATCHFETCH_VAR_DIR") or BASE_DIR / "var") / ".env"


def parse(text: str) -> dict[str, str]:
    """The KEY=VALUE pairs of `text`; ValueError naming the line for anything else."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"line {number}: expected KEY=VALUE, not {raw[:80]!r}")
        values[key] = value.strip()
    return values


def load(environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """Add the file's variables to `environ` (those already set win); the file read, or None if there is none.

    ImproperlyConfigured naming the file and line if it is malformed.
    """
    file = path(environ)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        values = parse(text)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{file}: {exc}") from None
    for key, value in values.items():
        environ.setdefault(key, value)
    return file


def write(environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """Write the file with the development variables set in `environ`, unless it exists; the file written or None."""
    file = path(environ)
    if file.exists():
        return None
    lines = [
        "# Written by `make migrate` / `make run`: the settings they use, so manage.py run by hand uses them too.",
        "# Variables set in the environment win. Delete this file to go back to the environment alone.",
        *(f"{name}={environ[name]}" for name in DEVELOPMENT_VARIABLES if environ.get(name, "").strip()),
    ]
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return file


def main(argv: list[str]) -> int:
    if argv != ["write"]:
        print("usage: python -m project.envfile write", file=sys.stderr)
        return 2
    written = write()
    if written is not None:
        print(f"wrote {written.relative_to(BASE_DIR) if written.is_relative_to(BASE_DIR) else written}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
