"""`manage.py apitoken create|list|revoke --user U`: API tokens from the shell.

`create` prints the token once (only its digest is stored); `list` shows
prefixes, never tokens; `revoke` needs --name or --prefix to say which.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.management.base import BaseCommand, CommandError
from django.db.models import QuerySet

from jobs.models import ApiToken
from jobs.web import tokens


class Command(BaseCommand):
    help = "Create, list or revoke a user's API tokens."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("action", choices=["create", "list", "revoke"])
        parser.add_argument("--user", required=True, help="username")
        parser.add_argument("--name", default="", help="create: what the token is for; revoke: which token(s)")
        parser.add_argument("--prefix", default="", help="revoke: the token starting with this prefix")

    def handle(self, *args: Any, action: str, user: str, name: str, prefix: str, **options: Any) -> None:
        owner = _user(user)
        if action == "create":
            new = tokens.create_token(user=owner, name=name)
            self.stderr.write(f"Created token {new.token.prefix}… for {user}; it is shown only now:")
            self.stdout.write(new.secret)
        elif action == "list":
            for token in ApiToken.objects.filter(user=owner).order_by("created_at"):
                state = f"revoked {token.revoked_at:%Y-%m-%d %H:%M}" if token.revoked_at else "active"
                used = f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "never"
                self.stdout.write(f"{token.prefix}…\t{state}\tlast used {used}\t{token.name}")
        else:
            revoked = 0
            for token in _selected(owner, name=name, prefix=prefix):
                tokens.revoke(token)
                revoked += 1
            self.stdout.write(f"Revoked {revoked} token(s).")


def _user(username: str) -> AbstractBaseUser:
    try:
        return get_user_model().objects.get_by_natural_key(username)
    except get_user_model().DoesNotExist:
        raise CommandError(f"--user: no user {username!r}") from None


def _selected(owner: AbstractBaseUser, *, name: str, prefix: str) -> QuerySet[ApiToken]:
    if not name and not prefix:
        raise CommandError("revoke: say which token with --name or --prefix (see 'apitoken list')")
    selected = ApiToken.objects.filter(user=owner, revoked_at__isnull=True)
    if name:
        selected = selected.filter(name=name)
    if prefix:
        selected = selected.filter(prefix__startswith=prefix.rstrip("…")[: tokens.PREFIX_LENGTH])
    if not selected.exists():
        raise CommandError(f"revoke: {owner} has no active token matching {'--name ' + name if name else ''}"
                           f"{' --prefix ' + prefix if prefix else ''}".rstrip())
    return selected
