"""`manage.py reseal_headers`: re-encrypt every stored secret header under the current SECRET_KEY.

Key rotation (jobs/crypto.py): move the old key to SECRET_KEY_FALLBACKS, set
the new SECRET_KEY, run this, then drop the old key from the fallbacks.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from jobs import crypto
from jobs.models import Job, RequestLine

BATCH = 1000


class Command(BaseCommand):
    help = "Re-encrypt the stored secret request headers with the current SECRET_KEY (after a key rotation)."

    def handle(self, *args: Any, **options: Any) -> None:
        total = 0
        for model in (Job, RequestLine):
            rows = model.objects.exclude(sealed_headers="").only("pk", "sealed_headers")
            batch: list[Any] = []
            for row in rows.iterator(chunk_size=BATCH):
                try:
                    row.sealed_headers = crypto.reseal(row.sealed_headers)
                except crypto.SealBroken as exc:
                    raise CommandError(f"{model.__name__} {row.pk}: {exc}") from exc
                batch.append(row)
                if len(batch) >= BATCH:
                    total += self._save(model, batch)
            total += self._save(model, batch)
        self.stdout.write(f"Re-sealed {total} rows under the current SECRET_KEY.")

    @staticmethod
    def _save(model: Any, batch: list[Any]) -> int:
        with transaction.atomic():
            model.objects.bulk_update(batch, ["sealed_headers"])
        count = len(batch)
        batch.clear()
        return count
