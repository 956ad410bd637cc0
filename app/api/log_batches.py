"""Reading a batch of Supabase Edge Function log events: bounded, optionally gzipped JSON.

The body is either a JSON array of event objects (the shape of Supabase's HTTP log drains)
or `{"events": [...]}`. Each event is kept whole, as compact JSON, for the log store; its
`timestamp` (ISO 8601, or a number of seconds, milliseconds or microseconds since the epoch,
told apart by magnitude) sets the event's time, and an event without one takes the time it
was received.

Limits: EDGE_LOG_MAX_BODY_BYTES after decompression (413), at most `MAX_EVENTS` events (422),
JSON only (415). A bad event fails the whole batch with a 4xx naming its index, so a sender
that retries loses nothing and a sender that does not learns why.
"""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime
from typing import Any, Final

import anyio
from fastapi import Request

from app.domain.ports import LogLine
from app.errors import InvalidField, MalformedRequest, PayloadTooLarge, UnsupportedMediaType

MAX_EVENTS: Final = 10_000
# Parsing and re-encoding a big batch takes milliseconds: past this size it runs off the event loop.
OFFLOAD_BYTES: Final = 64 * 1024
_EPOCH_MS_ABOVE: Final = 1e11  # 1973 in ms, 5138 in s: a bigger number is not seconds
_EPOCH_US_ABOVE: Final = 1e14


async def read_body(request: Request, *, limit: int) -> bytes:
    """The request body, decompressed when `Content-Encoding: gzip`; 413 past `limit` bytes either way."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType()
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise UnsupportedMediaType("Content-Encoding must be gzip or absent.")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body is over {limit} bytes.")
    inflate = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            data = inflate.decompress(chunk, limit + 1 - size) if inflate is not None else chunk
            size += len(data)
            if size > limit:
                raise PayloadTooLarge(f"The body is over {limit} bytes.")
            parts.append(data)
    except zlib.error:
        raise MalformedRequest("The body is not valid gzip.") from None
    if inflate is not None and not inflate.eof:
        raise MalformedRequest("The gzip body is truncated.")
    return b"".join(parts)


async def parse_batch(body: bytes, *, received_ms: int) -> list[LogLine]:
    """The events of `body` as log lines; off the event loop when the body is big."""
    if len(body) > OFFLOAD_BYTES:
        return await anyio.to_thread.run_sync(to_log_lines, body, received_ms)
    return to_log_lines(body, received_ms)


def to_log_lines(body: bytes, received_ms: int) -> list[LogLine]:
    """Validate the batch and turn each event into a `LogLine` (its time, and itself as compact JSON)."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedRequest("The body is not valid JSON.") from None
    events = document.get("events") if isinstance(document, dict) else document
    if not isinstance(events, list):
        raise MalformedRequest('Send a JSON array of events, or {"events": [...]}.')
    if len(events) > MAX_EVENTS:
        raise InvalidField(f"At most {MAX_EVENTS} events per request; this one has {len(events)}.")
    lines = []
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise InvalidField(f"Event {index} is not a JSON object.")
        timestamp_ms = _timestamp_ms(event.get("timestamp"), received_ms)
        if timestamp_ms is None:
            raise InvalidField(f"Event {index} has a timestamp that is neither ISO 8601 nor a number.")
        lines.append(LogLine(timestamp_ms, json.dumps(event, separators=(",", ":"), ensure_ascii=False)))
    return lines


def _timestamp_ms(value: Any, default: int) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if value > _EPOCH_US_ABOVE:
            return int(value // 1000)
        return int(value if value > _EPOCH_MS_ABOVE else value * 1000)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is None:  # Edge runtimes log UTC; a naive time is taken as UTC
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp() * 1000)
    return None
