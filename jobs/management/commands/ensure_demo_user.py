"""`manage.py ensure_demo_user`: the development admin that `make run` prints.

On first use it creates a superuser (default `admin`) with a random password,
stores that password in `<BATCHFETCH_VAR_DIR>/demo-admin-password` (mode 0600)
so it stays the same across runs and database resets, and prints the login.
No fixed, guessable password ships with the project, and the command refuses
to run with DJANGO_DEBUG off: production admins come from `createsuperuser`.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser


def password_file() -> Path:
    """Where the generated demo password is kept."""
    return Path(settings.VAR_DIR) / "demo-admin-password"


def stored_or_new_password(path: Path) -> str:
    """The password saved in `path`, else a new random one saved there (readable by us only)."""
    if path.exists():
        saved = path.read_text().strip()
        if saved:
            return saved
    password = secrets.token_urlsafe(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    return password


class Command(BaseCommand):
    help = "Create the demo admin user if it does not exist, and print its login (development only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin", help="name of the demo admin (default: admin)")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("refusing to create a demo admin with DJANGO_DEBUG off; use createsuperuser")
        username: str = options["username"]
        path = password_file()
        user_model = get_user_model()
        user = user_model._default_manager.filter(username=username).first()
        if user is None:
            password = stored_or_new_password(path)
            user_model._default_manager.create_superuser(username=username, email="", password=password)
            self.stdout.write(f"Created the demo admin. Log in as {username} / {password}  (saved in {path})")
        elif path.exists() and user.check_password(path.read_text().strip()):
            self.stdout.write(f"Log in as {username} / {path.read_text().strip()}  (saved in {path})")
        else:
            self.stdout.write(
                f"Log in as {username} with the password you set"
                f" (reset it with: .venv/bin/python manage.py changepassword {username})"
            )
