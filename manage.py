#!/usr/bin/env python
"""Django's command-line utility for administrative tasks.

Loads var/.env first (the development settings `make run` / `make migrate`
wrote; see project/envfile.py), so commands run by hand from a fresh clone use
the same settings. A missing or invalid setting is one line on stderr and exit
status 1, not a traceback.
"""
import os
import sys

SETUP_HINT = "(from a fresh clone, `make migrate` or `make run` writes var/.env with the development settings)"


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    from django.core.exceptions import ImproperlyConfigured

    from project import envfile

    try:
        envfile.load()
        from django.conf import settings

        settings.INSTALLED_APPS  # noqa: B018 - import the settings now, so their errors are caught here
        from django.core.management import execute_from_command_line

        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        print(f"manage.py: {' '.join(str(exc).split())} {SETUP_HINT}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
