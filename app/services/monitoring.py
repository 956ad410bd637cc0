"""What happens after each request, off the response path: PostHog events and the latency SLO.

`app.middleware` hands every finished request to `RequestMonitor.finished`, after the response
went out. For `POST /analyze` it
- captures `analysis_completed` (2xx) or `analysis_failed` with the stage timings, model,
  writer, cached, status, error code and image bytes. `capture` only enqueues: the SDK's own
  thread sends batches in the background, so a slow or dead PostHog never slows a request;
- feeds the `LatencyMonitor` with each analysis that ran the model (and each 5xx, at its
  duration: a timeout is the slowest answer a user gets), and announces its transitions as
  one `latency_slo_breached` / `latency_slo_recovered` event and log line.

PostHog's `distinct_id` is an HMAC of the user id keyed by `POSTHOG_ID_SALT`: stable per user,
so PostHog counts users, and useless to anyone without the key. No raw id, token or image
leaves. No analytics client (POSTHOG_API_KEY unset) means the SLO is still watched and logged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from app.domain.ports import Analytics
from app.services.latency import LatencyMonitor, SloChange

log = structlog.get_logger("app.monitoring")

ANALYZE: Final = ("POST", "/analyze")
# Events about the service itself, not a person: one distinct id, and no person profile.
SERVICE_DISTINCT_ID: Final = "service:product-analyzer"
ANONYMOUS_DISTINCT_ID: Final = "anonymous"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """A finished request as the middleware saw it; `fields` are its canonical log line's extra fields."""

    method: str | None
    route: str | None
    status: int
    duration_ms: float
    request_id: str
    user_id: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)

    def model_timings(self) -> Mapping[str, float] | None:
        """The stage timings of an analysis that ran the model; None for cached answers, replays and errors."""
        timings: Mapping[str, float] | None = self.fields.get("timings_ms")
        if self.status >= 300 or not timings or self.fields.get("cached") or self.fields.get("replayed"):
            return None
        return timings


def distinct_id(user_id: str, salt: bytes) -> str:
    """PostHog's id for a user: HMAC-SHA256 of the id under the salt, so it cannot be reversed or guessed."""
    return hmac.new(salt, user_id.encode(), hashlib.sha256).hexdigest()


class RequestMonitor:
    """Turns finished requests into analytics events and SLO announcements."""

    def __init__(self, *, latency: LatencyMonitor, analytics: Analytics | None, id_salt: bytes, instance: str) -> None:
        self.latency = latency
        self.analytics = analytics
        self._salt = id_salt
        self._instance = instance

    def finished(self, record: RequestRecord) -> None:
        """Called once per request after its response; never raises into the caller's path."""
        if (record.method, record.route) != ANALYZE:
            return
        try:
            self._capture_analysis(record)
            timings = record.model_timings()
            if timings is None and record.status >= 500:
                timings = {"total": record.duration_ms}
            if timings is not None and (change := self.latency.observe(timings)) is not None:
                self._announce(change)
        except Exception:  # monitoring must never turn a served request into an error
            log.exception("monitoring_failed")

    def _capture_analysis(self, record: RequestRecord) -> None:
        if self.analytics is None:
            return
        fields = record.fields
        ok = record.status < 300
        properties: dict[str, Any] = {
            "status": record.status,
            "error": fields.get("error"),
            "cached": bool(fields.get("cached")),
            "replayed": bool(fields.get("replayed")),
            "model": fields.get("model"),
            "writer": fields.get("writer"),
            "image_bytes": fields.get("image_bytes"),
            "request_id": record.request_id,
            "total_ms": round(record.duration_ms, 1),
        }
        timings = fields.get("timings_ms") or {}
        ran = record.model_timings() is not None
        for stage in ("upload", "store", "vision", "report", "total"):
            if stage in timings and (ran or stage in ("upload", "total")):
                properties[f"{stage}_ms"] = timings[stage]
        if record.user_id is None:
            who, properties["$process_person_profile"] = ANONYMOUS_DISTINCT_ID, False
        else:
            who = distinct_id(record.user_id, self._salt)
        self.analytics.capture(
            "analysis_completed" if ok else "analysis_failed", distinct_id=who, properties=properties
        )

    def _announce(self, change: SloChange) -> None:
        properties: dict[str, Any] = {**change.summary.properties(), "instance": self._instance}
        event = f"latency_slo_{change.kind}"
        if change.kind == "breached":
            log.warning(event, **properties)
        else:
            log.info(event, **properties)
        if self.analytics is not None:
            properties["$process_person_profile"] = False
            self.analytics.capture(event, distinct_id=SERVICE_DISTINCT_ID, properties=properties)
