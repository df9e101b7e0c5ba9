"""Where scores and events go: scores.csv (flushed at least once a second), events on standard
output and in events.jsonl (one JSON line each), and an optional webhook.

The webhook POSTs each event as JSON from a thread of its own with a bounded queue: scoring
never waits on it. A failed POST is retried with backoff; what still fails (or finds the queue
full) is counted in the summary, never fatal.
"""
from __future__ import annotations

import json
import queue
import sys
import threading
import time
import urllib.error
import urllib.request

from mama.errors import MamaError

WEBHOOK_TIMEOUT = 5.0  # seconds per POST
WEBHOOK_RETRIES = 3  # tries after the first, waiting 0.5 s, 1 s, 2 s
WEBHOOK_QUEUE = 1000  # events waiting to be sent; more are counted as failed


def check_webhook(url: str) -> str:
    if not url.lower().startswith(("http://", "https://")):
        raise MamaError(f"--webhook {url}: give an http:// or https:// URL")
    return url


class Webhook:
    """POST every event to `url` (module docstring)."""

    def __init__(self, url: str, retries: int = WEBHOOK_RETRIES, backoff: float = 0.5, timeout: float = WEBHOOK_TIMEOUT):
        self.url, self.retries, self.backoff, self.timeout = check_webhook(url), retries, backoff, timeout
        self.queue: queue.Queue = queue.Queue(maxsize=WEBHOOK_QUEUE)
        self.sent = self.failed = self.retried = 0
        self.last_error = ""
        self.thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self.thread.start()

    def post(self, event: dict) -> None:
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.failed += 1

    def _send(self, event: dict) -> bool:
        body = json.dumps(event).encode()
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    if 200 <= response.status < 300:
                        return True
                    self.last_error = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                self.last_error = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                self.last_error = str(getattr(exc, "reason", exc))
        return False

    def _run(self) -> None:
        failing = False
        while True:
            event = self.queue.get()
            if event is None:
                return
            if self._send(event):
                self.sent += 1
                failing = False
            else:
                self.failed += 1
                if not failing:  # said once per run of failures, not per event
                    print(f"warning: --webhook {self.url}: an event could not be delivered after {self.retries + 1} "
                          f"tries ({self.last_error}); scoring goes on and failures are counted in scores.json",
                          file=sys.stderr, flush=True)
                failing = True

    def close(self, wait: float = 10.0) -> None:
        """Send what is queued (up to `wait` seconds), then stop."""
        try:
            self.queue.put(None, timeout=wait)
        except queue.Full:
            pass
        self.thread.join(timeout=wait)
        self.failed += self.queue.qsize()  # what could not be sent in time

    def summary(self) -> dict:
        return {"url": self.url, "sent": self.sent, "failed": self.failed, "retries": self.retried}


class EventLog:
    """Each event line printed on standard output (flushed), appended to events.jsonl and
    handed to the webhook, if any; `listeners` (e.g. `mama serve`) get it too."""

    def __init__(self, file, webhook: Webhook | None = None, echo: bool = True):
        self.file, self.webhook, self.echo = file, webhook, echo
        self.listeners: list = []
        self.count: dict[str, int] = {}

    def write(self, event: dict, public: bool = True) -> None:
        line = json.dumps(event)
        self.file.write(line + "\n")
        self.file.flush()
        if not public:  # a run marker: in the file only
            return
        self.count[event["type"]] = self.count.get(event["type"], 0) + 1
        if self.echo:
            print(line, flush=True)
        if self.webhook is not None:
            self.webhook.post(event)
        for listener in self.listeners:
            listener(event)
