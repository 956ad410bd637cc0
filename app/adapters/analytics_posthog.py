"""PostHog, through its official SDK: `capture` enqueues, the SDK's thread sends batches.

The client is built in the lifespan (never at import) and shut down there: `close` flushes
what is queued within a deadline, then stops the SDK's thread. Both block, so the lifespan
runs them in a worker thread. Feature flags, exception autocapture and GeoIP stay off: this
service sends server-side latency events and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from posthog import Posthog

    from app.config import Settings

# A request to PostHog's capture endpoint normally takes well under a second; these bound a
# dead one. Retries back off in the SDK's thread, never in a request.
POSTHOG_TIMEOUT_S: Final = 5.0
POSTHOG_MAX_RETRIES: Final = 2
POSTHOG_FLUSH_AT: Final = 50  # events per batch
POSTHOG_FLUSH_INTERVAL_S: Final = 1.0
POSTHOG_MAX_QUEUE: Final = 10_000  # beyond this the SDK drops new events rather than grow
SHUTDOWN_FLUSH_TIMEOUT_S: Final = 5.0


class PostHogAnalytics:
    """The `Analytics` port on a `posthog.Posthog` client."""

    def __init__(self, client: Posthog) -> None:
        self._client = client

    def capture(self, event: str, *, distinct_id: str, properties: Mapping[str, object]) -> None:
        self._client.capture(event, distinct_id=distinct_id, properties=dict(properties))

    def close(self, timeout_s: float = SHUTDOWN_FLUSH_TIMEOUT_S) -> None:
        """Send what is queued (up to `timeout_s`), then stop the SDK's threads. Blocking."""
        self._client.flush(timeout_seconds=timeout_s)
        self._client.shutdown()


def build_posthog(settings: Settings) -> PostHogAnalytics:
    """The client for POSTHOG_API_KEY at POSTHOG_HOST; the caller closes it."""
    from posthog import Posthog

    assert settings.posthog_api_key is not None  # the lifespan builds this only with a key
    client = Posthog(
        settings.posthog_api_key.get_secret_value(),
        host=settings.posthog_host.rstrip("/"),
        timeout=POSTHOG_TIMEOUT_S,
        max_retries=POSTHOG_MAX_RETRIES,
        flush_at=POSTHOG_FLUSH_AT,
        flush_interval=POSTHOG_FLUSH_INTERVAL_S,
        max_queue_size=POSTHOG_MAX_QUEUE,
        capture_mode="v0",  # POST {host}/batch/, the documented default, named so an env var cannot change it
        disable_geoip=True,
        enable_exception_autocapture=False,
    )
    return PostHogAnalytics(client)
