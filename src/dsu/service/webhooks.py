"""Webhook delivery: Standard Webhooks signatures, retries with exponential backoff.

A webhook is frozen when its job ends: the payload and its event id are stored on the
job (:class:`~dsu.service.jobs.WebhookState`), so every retry, and every retry after a
restart, sends the same bytes under the same ``webhook-id``. Each attempt is signed
afresh (``webhook-timestamp`` is the attempt's time), as the scheme requires.
Receivers verify with ``standardwebhooks.Webhook(secret).verify(body, headers)``.
"""

from __future__ import annotations

import base64
import logging
import os
import queue
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from standardwebhooks import Webhook

from dsu.service.fetch import Fetcher, FetchFailed, UrlNotAllowed
from dsu.service.jobs import (
    WEBHOOK_DELIVERED,
    WEBHOOK_FAILED,
    WEBHOOK_PENDING,
    JobStore,
    WebhookState,
)

log = logging.getLogger("dsu.service.webhooks")

MAX_BACKOFF = 3600.0
# Seconds past a try's timeout before a webhook handed to a delivery thread is due again.
# Short, because it is also how long a server that died mid-delivery delays the retry
# after its restart; the try itself is bounded by the timeout.
IN_FLIGHT_MARGIN = 5.0


def load_or_create_secret(configured: str | None, data_dir: Path) -> str:
    """The signing secret: the configured one, else one generated once in the data dir.

    A generated secret is written with mode 0600 to ``<data_dir>/webhook-secret`` so it
    survives restarts; the operator gives it to the receivers.
    """
    if configured:
        return configured
    path = data_dir / "webhook-secret"
    if path.is_file():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    log.warning("no DSU_WEBHOOK_SECRET set: generated one in %s", path)
    return secret


def new_webhook(payload: str) -> WebhookState:
    """The delivery state of a new event: a stable id, due now."""
    return WebhookState(event_id=f"msg_{uuid.uuid4().hex}", payload=payload, next_at=time.time())


class Signer:
    """Standard Webhooks headers for a payload."""

    def __init__(self, secret: str) -> None:
        self._webhook = Webhook(secret)

    def headers(self, event_id: str, payload: str, when: datetime | None = None) -> dict[str, str]:
        when = when or datetime.now(timezone.utc)
        return {
            "content-type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": self._webhook.sign(event_id, when, payload),
        }


def backoff(attempts: int, base: float) -> float:
    """Seconds to wait after the ``attempts``-th failed try: base, 2*base, 4*base, ..."""
    return float(min(base * 2 ** max(attempts - 1, 0), MAX_BACKOFF))


class WebhookDispatcher:
    """Delivers due webhooks from the job store, several at once.

    A scheduler thread sleeps until the earliest delivery is due or :meth:`wake` is called
    (a job just ended), then hands each due webhook to one of ``concurrency`` delivery
    threads, so a receiver that is slow to answer holds up its own webhook only. A 2xx
    answer delivers; any other answer or a network error is retried with exponential
    backoff, counted from the end of the failed try, until ``max_attempts``; a refused
    address or HTTP 410 ends at once.

    The store claims a webhook for a delivery thread in one step that also moves its next
    try past the end of this one (timeout + ``IN_FLIGHT_MARGIN``), so no dispatcher hands
    it out twice and a server that dies at any point of a delivery tries it again that
    soon after its restart.
    """

    def __init__(
        self,
        store: JobStore,
        fetcher: Fetcher,
        signer: Signer,
        max_attempts: int,
        backoff_base: float,
        timeout: float,
        on_result: Callable[[str], None] = lambda outcome: None,
        concurrency: int = 4,
    ) -> None:
        self.store = store
        self.fetcher = fetcher
        self.signer = signer
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.timeout = timeout
        self.on_result = on_result
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._work: queue.Queue[tuple[str, str, WebhookState] | None] = queue.Queue()
        self._idle = threading.Semaphore(concurrency)
        self._thread = threading.Thread(target=self._loop, name="dsu-webhooks", daemon=True)
        # Daemon threads: a delivery still waiting on a receiver never holds up the exit.
        self._senders = [
            threading.Thread(target=self._send, name=f"dsu-webhook-{i}", daemon=True)
            for i in range(concurrency)
        ]

    def start(self) -> None:
        for sender in self._senders:
            sender.start()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        for _ in self._senders:
            self._work.put(None)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                # With every thread busy, wait for one to finish: it wakes this loop.
                next_at = None if self._hand_out() else self.store.next_webhook_at()
            except Exception:
                log.exception("webhook loop error")
                next_at = time.time() + 5.0
            delay = 60.0 if next_at is None else max(0.0, min(60.0, next_at - time.time()))
            if delay > 0:
                self._wake.wait(delay)
            self._wake.clear()

    def _hand_out(self) -> bool:
        """Give due webhooks to idle delivery threads; True when none is left idle."""
        while not self._stop.is_set():
            if not self._idle.acquire(blocking=False):
                return True
            item = None
            try:
                item = self._claim()
            finally:
                if item is None:
                    self._idle.release()
            if item is None:
                return False
            self._work.put(item)
        return False

    def _claim(self) -> tuple[str, str, WebhookState] | None:
        """The next due webhook with somewhere to go, held in the store for its try."""
        hold = self.timeout + IN_FLIGHT_MARGIN
        while (job := self.store.claim_webhook(time.time(), hold)) is not None:
            state = job.webhook
            if job.spec.webhook_url:
                state.next_at = time.time() + hold  # as the store holds it: the view stays true
                self.store.update_webhook(job.id, state)
                return job.id, job.spec.webhook_url, state
            state.status, state.last_error = WEBHOOK_FAILED, "the job has no webhook_url"
            self.store.update_webhook(job.id, state)
        return None

    def _send(self) -> None:
        while (item := self._work.get()) is not None:
            try:
                self.deliver(*item)
            except Exception:
                log.exception("webhook delivery for job %s failed", item[0])
            finally:
                self._idle.release()
                # A thread is free and this webhook may be due again: look at the store.
                self._wake.set()

    def deliver(self, job_id: str, url: str, state: WebhookState) -> WebhookState:
        """Try one delivery and record the outcome on the job."""
        state.attempts += 1
        final = False
        try:
            headers = self.signer.headers(state.event_id, state.payload)
            response = self.fetcher.post(url, state.payload.encode(), headers, self.timeout)
            state.last_status, state.last_error = response.status, None
            if 200 <= response.status < 300:
                state.status, state.delivered_at = WEBHOOK_DELIVERED, time.time()
            elif response.status == 410:
                state.last_error, final = "receiver answered 410 Gone", True
            else:
                state.last_error = f"receiver answered HTTP {response.status}"
        except UrlNotAllowed as exc:
            state.last_status, state.last_error, final = None, exc.message, True
        except FetchFailed as exc:
            state.last_status, state.last_error = None, exc.message
        if state.status != WEBHOOK_DELIVERED:
            if final or state.attempts >= self.max_attempts:
                state.status = WEBHOOK_FAILED
            else:
                state.status = WEBHOOK_PENDING
                state.next_at = time.time() + backoff(state.attempts, self.backoff_base)
        self.store.update_webhook(job_id, state)
        self.on_result(state.status if state.status != WEBHOOK_PENDING else "retry")
        log.info(
            "webhook %s for job %s: %s (attempt %d%s)",
            state.event_id,
            job_id,
            state.status,
            state.attempts,
            f", {state.last_error}" if state.last_error else "",
        )
        return state
