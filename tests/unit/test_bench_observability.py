"""Smoke test of `bench.observability`: a handful of requests per line and a small edge load, end to end."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from bench import observability

LINES = {observability.OFF, observability.OFF_AGAIN, observability.EMF, observability.ON, observability.ON_EDGE_LOAD}
REQUESTS, WARMUP = 6, 2
CLIENTS, ROUNDS, BATCH = 3, 4, 20


def test_bench_runs_end_to_end_and_loses_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results" / "observability.json"
    handlers = logging.getLogger().handlers[:]

    returned = observability.main(
        [
            *("--requests", str(REQUESTS), "--warmup", str(WARMUP), "--round-size", "3"),
            *("--edge-batch", "20", "--edge-period-ms", "50", "--edge-flush-seconds", "0.1"),
            *("--ingest-clients", str(CLIENTS), "--ingest-rounds", str(ROUNDS), "--ingest-batch", str(BATCH)),
            *("--out", str(out), "--workdir", str(tmp_path / "work"), "--seed", "7"),
        ]
    )

    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(returned))
    assert list(written["analyze"]) == list(observability.LINES)
    assert written["seed"] == 7
    assert sorted(written["apps_built_in_order"]) == sorted(LINES)
    for name, row in written["analyze"].items():
        assert row["requests"] == REQUESTS, name
        assert 0 < row["p50_ms"] <= row["p95_ms"], name
        if name != observability.OFF:
            low, high = row["p50_delta_ci95_pct"]
            assert low <= high, name
    assert "p50_delta_ms" not in written["analyze"][observability.OFF]
    assert written["aim"]["on_p50_delta_pct"] == written["analyze"][observability.ON]["p50_delta_pct"]

    # Each line is configured as it says: only EMF on `emf`, everything on `on` and `on+edge-load`.
    config = written["configurations"]
    assert set(config) == {*LINES, observability.INGEST}
    assert config["off"]["metrics_namespace"] == config["off-again"]["metrics_namespace"] == ""
    assert config["emf"]["metrics_namespace"]
    for name in (observability.OFF, observability.OFF_AGAIN, observability.EMF):
        assert config[name]["posthog"] is False
        assert config[name]["edge_logs"] is None
    for name in (observability.ON, observability.ON_EDGE_LOAD, observability.INGEST):
        assert config[name]["metrics_namespace"]
        assert config[name]["posthog"] is True
        assert config[name]["edge_logs"]
    for row in config.values():
        assert (row["log_level"], row["log_format"]) == ("INFO", "json")
    assert "edge_load" in config[observability.ON_EDGE_LOAD]

    # Nothing lost: one PostHog event per POST /analyze, warm-up included, and every edge event in moto.
    assert written["posthog"] == {
        name: {"expected": REQUESTS + WARMUP, "received": REQUESTS + WARMUP, "other_events": 0}
        for name in (observability.ON, observability.ON_EDGE_LOAD)
    }
    load = written["edge_load"]
    assert load["accepted"] == load["batches_posted"] * 20 > 0
    assert load["in_moto"] == load["accepted"] == load["shipper"]["shipped"]
    assert load["dropped"] == load["unaccounted"] == 0
    assert load["put_log_events_calls"] >= 1
    assert written["edge_events_in_moto_from_on"] == 0

    ingest = written["edge_ingest"]
    assert ingest["requests"] == CLIENTS * ROUNDS
    assert ingest["events_accepted"] == CLIENTS * ROUNDS * BATCH
    assert 0 < ingest["p50_ms"] <= ingest["p95_ms"] <= ingest["p99_ms"] <= ingest["max_ms"]
    assert ingest["in_moto"] == ingest["accepted"] == ingest["events_accepted"] + ingest["warmup_events_accepted"]
    assert ingest["dropped"] == ingest["unaccounted"] == 0
    assert ingest["kept_up"] is True
    assert ingest["shipper"]["dropped_overflow"] == ingest["shipper"]["dropped_shutdown"] == 0

    assert {"python", "posthog", "boto3", "moto", "structlog"} <= set(written["versions"])
    assert written["machine"]["cpu_count"]
    assert written["machine"]["peak_rss_mb"] > 0
    assert len(written["machine"]["load_average_before"]) == 3

    # The apps' log lines went to the null sink, not to stdout, and the process is left as it was found.
    printed = capsys.readouterr().out
    assert "on+edge-load" in printed
    assert '"event": "request"' not in printed
    assert logging.getLogger().handlers == handlers
    assert "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS" not in os.environ
