"""LocalLogDestination: one `edge_log` record of the `app.edge` logger per forwarded line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from app.adapters.logs_local import LocalLogDestination
from app.domain.ports import LogLine
from app.logging import configure_logging
from app.services.edge_logs import EdgeLogShipper


@pytest.fixture
def app_logging(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The app's logging setup, with pytest's capture put back on the root logger it resets."""
    configure_logging(fmt="json", level="INFO")
    logging.getLogger().addHandler(caplog.handler)
    yield
    logging.getLogger().removeHandler(caplog.handler)


def edge_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "edge_log"]


async def test_each_line_becomes_one_edge_log_record_with_its_message(
    app_logging: None, caplog: pytest.LogCaptureFixture
) -> None:
    lines = [LogLine(1_750_000_000_000 + i, f'{{"level":"info","msg":"hello {i}"}}') for i in range(3)]

    rejected = await LocalLogDestination().put(lines)

    assert rejected == 0
    records = edge_records(caplog)
    assert [r.name for r in records] == ["app.edge"] * 3
    assert [r.msg["message"] for r in records] == [line.message for line in lines]  # type: ignore[index]
    assert [r.msg["edge_timestamp_ms"] for r in records] == [line.timestamp_ms for line in lines]  # type: ignore[index]


async def test_records_render_as_one_json_line_each(app_logging: None, caplog: pytest.LogCaptureFixture) -> None:
    await LocalLogDestination().put([LogLine(1_750_000_000_000, "multi\nline")])

    # The formatter of the stdout handler that `configure_logging` installed: what the awslogs driver reads.
    formatter = logging.getLogger().handlers[0].formatter
    assert formatter is not None
    (record,) = edge_records(caplog)
    text = formatter.format(record)
    assert "\n" not in text
    rendered = json.loads(text)
    assert (rendered["logger"], rendered["event"], rendered["message"]) == ("app.edge", "edge_log", "multi\nline")


async def test_an_empty_batch_logs_nothing(app_logging: None, caplog: pytest.LogCaptureFixture) -> None:
    assert await LocalLogDestination().put([]) == 0
    assert edge_records(caplog) == []


async def test_the_shipper_on_the_local_destination_logs_every_line(
    app_logging: None, caplog: pytest.LogCaptureFixture
) -> None:
    lines = [LogLine(1_750_000_000_000 + i, f"line {i}") for i in range(50)]

    async with EdgeLogShipper(
        LocalLogDestination(), flush_interval_s=60, wall_clock_ms=lambda: 1_750_000_000_000
    ) as shipper:
        shipper.offer(lines)

    assert [r.msg["message"] for r in edge_records(caplog)] == [line.message for line in lines]  # type: ignore[index]
    assert shipper.stats.shipped == 50
