"""CloudWatch's embedded metric format, as its specification states it, for checking our log lines.

Transcribed from AWS's "Specification: Embedded metric format" (Amazon CloudWatch User Guide):
- the root has `_aws`, an object with `Timestamp` (ms since the epoch, a number) and
  `CloudWatchMetrics`, an array of MetricDirective objects;
- a MetricDirective has `Namespace` (string), `Dimensions` (array of DimensionSets, each an
  array of at most 30 dimension keys) and `Metrics` (at most 100 MetricDefinitions), and no
  other members; a MetricDefinition has `Name` (required), `Unit` (one of CloudWatch's units)
  and `StorageResolution` (1 or 60), and no other members;
- every dimension key and metric name a directive references MUST be a member of the root
  ("target members"); a dimension's value is a string, a metric's value a number or an array
  of at most 100 numbers.
The JSON Schema covers the structure; `violations` adds the rules that span members.
"""

from __future__ import annotations

from typing import Any

import jsonschema

UNITS = [
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
    "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second",
    "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second",
    "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
]  # fmt: skip

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer", "minimum": 0},
                "CloudWatchMetrics": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "additionalProperties": False,
                        "properties": {
                            "Namespace": {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": r".*\S.*"},
                            "Dimensions": {
                                "type": "array",
                                "items": {
                                    "type": "array",
                                    "maxItems": 30,
                                    "items": {"type": "string", "minLength": 1, "maxLength": 250},
                                },
                            },
                            "Metrics": {
                                "type": "array",
                                "maxItems": 100,
                                "items": {
                                    "type": "object",
                                    "required": ["Name"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "Name": {"type": "string", "minLength": 1, "maxLength": 1024},
                                        "Unit": {"enum": UNITS},
                                        "StorageResolution": {"enum": [1, 60]},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}


def violations(document: dict[str, Any]) -> list[str]:
    """Every way `document` breaks the specification; empty when it is a valid EMF document."""
    problems = [error.message for error in jsonschema.Draft202012Validator(SCHEMA).iter_errors(document)]
    if problems:
        return problems
    for directive in document["_aws"]["CloudWatchMetrics"]:
        for dimension in {key for dimension_set in directive["Dimensions"] for key in dimension_set}:
            value = document.get(dimension)
            if not isinstance(value, str) or not value or len(value) > 1024:
                problems.append(f"dimension {dimension!r} has no string member at the root (got {value!r})")
        for metric in directive["Metrics"]:
            value = document.get(metric["Name"])
            numbers = value if isinstance(value, list) else [value]
            if (
                not numbers
                or len(numbers) > 100
                or not all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers)
            ):
                problems.append(f"metric {metric['Name']!r} has no numeric member at the root (got {value!r})")
    return problems
