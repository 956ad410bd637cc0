"""CloudWatch metrics with no API call: an embedded metric format (EMF) block in the canonical log line.

On ECS the awslogs driver ships stdout to CloudWatch Logs, which reads the `_aws` member of a
JSON log event and publishes the metrics it names (AWS's "Specification: Embedded metric
format"). So the request's one log line is also its metrics: no client, no batching, no
network call on the request path, and nothing to lose when the process dies.

Every request counts under namespace `METRICS_NAMESPACE` (default `ProductAnalyzer`):
- `Requests` (1), `Faults` (1 for a 5xx, else 0: its average is the 5xx rate), `Latency` (ms),
  by `Service` and by `Service`+`Route`;
- on an analysis that ran, each stage: `UploadLatency`, `StoreLatency`, `VisionLatency`,
  `ReportLatency`, `TotalLatency` (ms), same dimensions;
- on an error, `Errors` (1) by `Service`+`ErrorCode` and `Service`+`Route`+`ErrorCode`.
Dimensions are low-cardinality on purpose: the route template, never the raw path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

SERVICE: Final = "product-analyzer"
UNMATCHED_ROUTE: Final = "unmatched"
# Timing keys of `Timings` (the response's `timings_ms`) and the metric each becomes.
STAGE_METRICS: Final = {
    "upload": "UploadLatency",
    "store": "StoreLatency",
    "vision": "VisionLatency",
    "report": "ReportLatency",
    "total": "TotalLatency",
}
_BY_ROUTE: Final = [["Service"], ["Service", "Route"]]
_BY_ERROR: Final = [["Service", "ErrorCode"], ["Service", "Route", "ErrorCode"]]


def emf_fields(
    *,
    namespace: str,
    route: str | None,
    status: int,
    duration_ms: float,
    timings: Mapping[str, float] | None,
    error: str | None,
    timestamp_ms: int,
) -> dict[str, Any]:
    """The members to merge into the request's log line: the `_aws` metadata, dimensions and values."""
    fields: dict[str, Any] = {
        "Service": SERVICE,
        "Route": route or UNMATCHED_ROUTE,
        "Requests": 1,
        "Faults": 1 if status >= 500 else 0,
        "Latency": round(duration_ms, 2),
    }
    metrics = [
        {"Name": "Requests", "Unit": "Count"},
        {"Name": "Faults", "Unit": "Count"},
        {"Name": "Latency", "Unit": "Milliseconds"},
    ]
    for stage, name in STAGE_METRICS.items():
        value = (timings or {}).get(stage)
        if value is not None:
            fields[name] = value
            metrics.append({"Name": name, "Unit": "Milliseconds"})
    directives: list[dict[str, Any]] = [{"Namespace": namespace, "Dimensions": _BY_ROUTE, "Metrics": metrics}]
    if error:
        fields["ErrorCode"] = error
        fields["Errors"] = 1
        directives.append(
            {"Namespace": namespace, "Dimensions": _BY_ERROR, "Metrics": [{"Name": "Errors", "Unit": "Count"}]}
        )
    return {"_aws": {"Timestamp": timestamp_ms, "CloudWatchMetrics": directives}, **fields}
