"""Sending notifications: signed webhook POSTs (retried with backoff) and emails.

A webhook body is signed with HMAC-SHA256 under the owner's secret
(`WebhookSecret`), in the header `X-Batchfetch-Signature: sha256=<64 hex>`;
the receiver recomputes it over the raw body. A 5xx, a 429, a timeout or a
connection error is retried with exponential backoff (MONITOR_WEBHOOK_BACKOFF
doubling up to MONITOR_WEBHOOK_BACKOFF_CAP) until MONITOR_WEBHOOK_GIVE_UP
seconds after the delivery was queued; another 4xx is final. The URL passes
the same SSRF guard as fetched URLs (an IP literal is judged before
connecting, a name by the guarded resolver): a refused address is recorded
as `refused` and never contacted.

Workers take due deliveries with a conditional UPDATE to `sending` plus a
lease (next_attempt_at), so each attempt is made by one worker; one killed
mid-attempt leaves the lease to expire and the delivery is tried again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

import httpx
from django.contrib.auth.models import AbstractBaseUser
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from jobs import conf
from jobs.engine.netguard import Blocked, Guard
from jobs.monitoring_models import Delivery, DeliveryAttempt, WebhookSecret
from jobs.ops import metrics

SIGNATURE_HEADER = "X-Batchfetch-Signature"
DELIVERY_HEADER = "X-Batchfetch-Delivery"
DELIVER_BATCH = 20
LEASE = timedelta(seconds=120)
"""How long a worker holds a delivery it is sending (longer than any timeout)."""
ERROR_MAX_CHARS = 1000


# --- secrets and signatures ---------------------------------------------------------------


def rotate_secret(user: AbstractBaseUser) -> str:
    """A new signing secret for `user`, replacing the old one; the caller shows it once."""
    secret = "whsec_" + secrets.token_hex(24)
    WebhookSecret.objects.update_or_create(user=user, defaults={"secret": secret, "created_at": timezone.now()})
    return secret


def secret_for(user_id: int) -> str:
    """The user's secret, created on first use (the account page can rotate it to see one)."""
    found = WebhookSecret.objects.filter(user_id=user_id).values_list("secret", flat=True).first()
    if found:
        return found
    secret = "whsec_" + secrets.token_hex(24)
    WebhookSecret.objects.get_or_create(user_id=user_id, defaults={"secret": secret})
    return WebhookSecret.objects.get(user_id=user_id).secret


def signature(secret: str, body: bytes) -> str:
    """The header value: `sha256=` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return hmac.compare_digest(signature(secret, body), header)


# --- taking and recording attempts -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one try ended with."""

    status_code: int | None = None
    error: str = ""
    elapsed_ms: int | None = None
    refused: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        if self.refused or self.delivered:
            return False
        return self.status_code is None or self.status_code >= 500 or self.status_code == 429


def take_due(*, limit: int = DELIVER_BATCH) -> list[Delivery]:
    """Due deliveries this worker now holds (status `sending`, leased), at most `limit`."""
    now = timezone.now()
    due = Delivery.objects.filter(
        status__in=[Delivery.Status.PENDING, Delivery.Status.SENDING], next_attempt_at__lte=now
    ).order_by("next_attempt_at")[:limit]
    taken = []
    for delivery in due:
        held = Delivery.objects.filter(
            pk=delivery.pk, status=delivery.status, next_attempt_at=delivery.next_attempt_at
        ).update(status=Delivery.Status.SENDING, next_attempt_at=now + LEASE)
        if held:
            taken.append(delivery)
    return taken


def record(delivery: Delivery, attempt: Attempt) -> Delivery:
    """Store the attempt and what follows: delivered, retried later, or given up."""
    now = timezone.now()
    attempts = delivery.attempts + 1
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            delivery=delivery, at=now, status_code=attempt.status_code, error=attempt.error[:ERROR_MAX_CHARS],
            elapsed_ms=attempt.elapsed_ms,
        )  # fmt: skip
        update: dict[str, object] = {"attempts": attempts, "last_error": attempt.error[:ERROR_MAX_CHARS]}
        if attempt.delivered:
            result = "delivered"
            update.update(status=Delivery.Status.DELIVERED, delivered_at=now)
        elif attempt.refused:
            result = "refused"
            update["status"] = Delivery.Status.REFUSED
        else:
            retry_at = now + backoff(attempts)
            give_up_at = delivery.created_at + timedelta(seconds=float(conf.get("MONITOR_WEBHOOK_GIVE_UP")))
            if attempt.retryable and retry_at <= give_up_at:
                result = "retry"
                update.update(status=Delivery.Status.PENDING, next_attempt_at=retry_at)
            else:
                result = "failed"
                update["status"] = Delivery.Status.FAILED
        Delivery.objects.filter(pk=delivery.pk).update(**update)
    metrics.NOTIFICATION_ATTEMPTS.labels(delivery.channel, result).inc()
    delivery.refresh_from_db()
    return delivery


def backoff(attempts: int) -> timedelta:
    """Wait after the `attempts`-th failed try: base, 2·base, 4·base, … up to the cap."""
    base = float(conf.get("MONITOR_WEBHOOK_BACKOFF"))
    cap = float(conf.get("MONITOR_WEBHOOK_BACKOFF_CAP"))
    return timedelta(seconds=min(cap, base * 2 ** max(attempts - 1, 0)))


# --- sending ----------------------------------------------------------------------------------


async def post(client: httpx.AsyncClient, guard: Guard, *, url: str, body: bytes, secret: str, delivery_id: int) -> Attempt:
    """POST one signed webhook; never raises for what the receiver or the network does."""
    try:
        guard.check_url(url)
    except Blocked as exc:
        return Attempt(error=f"refused by the SSRF guard: {exc}", refused=True)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(secret, body),
        DELIVERY_HEADER: str(delivery_id),
    }
    started = time.monotonic()
    timeout = float(conf.get("MONITOR_WEBHOOK_TIMEOUT"))
    try:
        response = await client.post(url, content=body, headers=headers, timeout=timeout)
        await response.aclose()
    except Blocked as exc:  # the guarded resolver: the name resolves to a refused address
        return Attempt(error=f"refused by the SSRF guard: {exc}", refused=True)
    except httpx.HTTPError as exc:
        blocked = _blocked_cause(exc)
        if blocked is not None:
            return Attempt(error=f"refused by the SSRF guard: {blocked}", refused=True)
        return Attempt(error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                       elapsed_ms=_ms(started))  # fmt: skip
    return Attempt(status_code=response.status_code, elapsed_ms=_ms(started),
                   error="" if response.is_success else f"HTTP {response.status_code}")  # fmt: skip


def send_email(delivery: Delivery, *, subject: str, text: str) -> Attempt:
    """Send a notification email through Django's email backend."""
    started = time.monotonic()
    try:
        send_mail(subject, text, None, [delivery.target])
    except Exception as exc:  # any backend error (SMTP, socket): recorded, retried like a 5xx
        return Attempt(error=f"{type(exc).__name__}: {exc}", elapsed_ms=_ms(started))
    return Attempt(status_code=250, elapsed_ms=_ms(started))  # SMTP's "OK", to read as delivered


def _blocked_cause(exc: BaseException) -> Blocked | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, Blocked):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
