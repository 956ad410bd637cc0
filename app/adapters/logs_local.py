"""`LogDestination` into this service's own log: one structlog line per forwarded event.

The embedded default (EDGE_LOG_GROUP unset). On ECS the awslogs driver ships stdout to CloudWatch,
so forwarded Edge Function logs still land there, in the service's own log group, each line marked
`"logger": "app.edge", "event": "edge_log"` and carrying the original `message` and its `edge_timestamp_ms`.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio.to_thread
import structlog

from app.domain.ports import LogLine

log = structlog.get_logger("app.edge")


class LocalLogDestination:
    """Write each line as one `edge_log` record of the `app.edge` logger; rejects nothing."""

    name = "local"

    async def put(self, lines: Sequence[LogLine]) -> int:
        """Log every line, in order, from a worker thread (a batch may hold 10,000 of them)."""
        if lines:
            await anyio.to_thread.run_sync(_emit, lines)
        return 0


def _emit(lines: Sequence[LogLine]) -> None:
    for line in lines:
        log.info("edge_log", message=line.message, edge_timestamp_ms=line.timestamp_ms)
