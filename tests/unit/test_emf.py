"""The embedded metric format block of the canonical log line, checked against the specification."""

from __future__ import annotations

import copy
import json
import time

import pytest

from app.metrics import emf_fields
from tests.emf_spec import violations

STAGES = {"upload": 12.5, "store": 30.0, "vision": 2100.0, "report": 800.0, "total": 2950.0}


def block(**overrides: object) -> dict[str, object]:
    args: dict[str, object] = {
        "namespace": "ProductAnalyzer",
        "route": "/analyze",
        "status": 200,
        "duration_ms": 2951.234,
        "timings": STAGES,
        "error": None,
        "timestamp_ms": 1_763_700_000_000,
    } | overrides
    return emf_fields(**args)  # type: ignore[arg-type]


def directive_of(document: dict[str, object], metric: str) -> dict[str, object]:
    for directive in document["_aws"]["CloudWatchMetrics"]:  # type: ignore[index]
        if any(m["Name"] == metric for m in directive["Metrics"]):
            return directive  # type: ignore[no-any-return]
    raise AssertionError(f"no directive names {metric}")


def test_an_analysis_that_ran_gives_request_and_stage_metrics() -> None:
    document = block()
    assert violations(document) == []
    assert document["_aws"]["Timestamp"] == 1_763_700_000_000  # type: ignore[index]
    assert (document["Requests"], document["Faults"], document["Latency"]) == (1, 0, 2951.23)
    assert (document["VisionLatency"], document["TotalLatency"], document["UploadLatency"]) == (2100.0, 2950.0, 12.5)
    directive = directive_of(document, "TotalLatency")
    assert directive["Namespace"] == "ProductAnalyzer"
    assert directive["Dimensions"] == [["Service"], ["Service", "Route"]]
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}  # type: ignore[attr-defined]
    assert units["Requests"] == "Count"
    assert units["ReportLatency"] == "Milliseconds"
    assert (document["Service"], document["Route"]) == ("product-analyzer", "/analyze")
    assert "Errors" not in document


def test_an_error_counts_by_code_and_a_5xx_is_a_fault() -> None:
    document = block(status=504, timings=None, error="upstream_timeout")
    assert violations(document) == []
    assert document["Faults"] == 1
    assert (document["Errors"], document["ErrorCode"]) == (1, "upstream_timeout")
    by_code = [["Service", "ErrorCode"], ["Service", "Route", "ErrorCode"]]
    assert directive_of(document, "Errors")["Dimensions"] == by_code
    assert "TotalLatency" not in document  # no stage metrics for an analysis that did not finish


def test_a_client_error_is_an_error_but_not_a_fault() -> None:
    document = block(status=415, timings=None, error="unsupported_image")
    assert violations(document) == []
    assert (document["Faults"], document["Errors"]) == (0, 1)


def test_an_unmatched_route_is_one_dimension_value_not_the_raw_path() -> None:
    document = block(route=None, status=404, timings=None, error="not_found")
    assert violations(document) == []
    assert document["Route"] == "unmatched"


def test_the_block_survives_json_rendering_as_a_log_line() -> None:
    line = json.dumps({"event": "request", "status": 200, **block(timestamp_ms=time.time_ns() // 1_000_000)})
    assert violations(json.loads(line)) == []


@pytest.mark.parametrize(
    ("break_it", "complaint"),
    [
        (lambda d: d.pop("TotalLatency"), "TotalLatency"),
        (lambda d: d.update(Route=7), "Route"),
        (lambda d: d["_aws"].pop("Timestamp"), "Timestamp"),
        (lambda d: d["_aws"]["CloudWatchMetrics"][0]["Metrics"].append({"Name": "X", "Unit": "Furlongs"}), "Furlongs"),
        (lambda d: d["_aws"]["CloudWatchMetrics"][0].update(Extra=1), "Extra"),
        (lambda d: d.update(Requests="1"), "Requests"),
    ],
)
def test_the_spec_check_catches_what_cloudwatch_would_reject(break_it: object, complaint: str) -> None:
    document = copy.deepcopy(block())
    break_it(document)  # type: ignore[operator]
    problems = violations(document)
    assert problems
    assert any(complaint in problem for problem in problems)
