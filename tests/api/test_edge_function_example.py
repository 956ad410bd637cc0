"""The example Supabase Edge Function (docs/supabase/functions/) type-checks, and its logger really
delivers to this service: the TypeScript logger, compiled with tsc, runs in Node 20 against the real
app served on loopback, and its events come out of the app as `edge_log` lines.

Node and node_modules/.bin/tsc come from `npm ci` (`make test` runs it); without them these tests skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from app.domain.ports import Backends
from tests.api.accounts import app_for, logged
from tests.loopback import free_port, serving

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "docs" / "supabase" / "functions"
LOGGER_TS = FUNCTIONS / "_shared" / "edge_logger.ts"
WEBHOOK_TS = FUNCTIONS / "analysis-webhook" / "index.ts"
DRIVER = Path(__file__).with_name("edge_logger_driver.mjs")
TSC = ROOT / "node_modules" / ".bin" / "tsc"
TOKEN = "edge-token-for-the-example-0123456789"


@dataclass(frozen=True)
class Node:
    node: str
    tsc: Path


@pytest.fixture(scope="module")
def toolchain() -> Node:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (CI installs Node 20; `make test` runs `npm ci`)")
    if not TSC.exists():
        pytest.skip("node_modules/.bin/tsc is missing: run `npm ci` (`make test` does)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True, timeout=30).stdout
    if int(version.strip().lstrip("v").split(".")[0]) < 18:
        pytest.skip(f"node {version.strip()} has no global fetch / AbortSignal.timeout; Node 20 is the one CI uses")
    return Node(node, TSC)


def run(args: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False, env=env)


@pytest.fixture(scope="module")
def compiled(toolchain: Node, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The logger and the function compiled by tsc to ES2022 modules (`.ts` imports become `.js`), for Node."""
    out = tmp_path_factory.mktemp("edge-functions-js")
    done = run([
        str(toolchain.tsc), "--target", "ES2022", "--module", "ES2022", "--moduleResolution", "bundler",
        "--lib", "ES2022,DOM", "--strict", "--rewriteRelativeImportExtensions",
        "--rootDir", str(FUNCTIONS), "--outDir", str(out),
        str(FUNCTIONS / "deno.d.ts"), str(LOGGER_TS), str(WEBHOOK_TS),
    ])  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (out / "package.json").write_text('{"type": "module"}\n')
    return out


def test_the_example_type_checks_with_strict_tsc(toolchain: Node) -> None:
    done = run([str(toolchain.tsc), "--noEmit", "-p", str(FUNCTIONS)])
    assert done.returncode == 0, done.stdout + done.stderr
    config = (FUNCTIONS / "tsconfig.json").read_text()
    assert '"strict": true' in config
    for name in ("deno.d.ts", "_shared/edge_logger.ts", "analysis-webhook/index.ts"):
        assert f'"{name}"' in config, f"tsconfig.json does not check {name}"


@dataclass(frozen=True)
class Outcome:
    result: dict[str, Any]
    output: str
    events: list[dict[str, Any]]


@pytest.fixture
def drive(
    toolchain: Node, compiled: Path, settings: Settings, backends: Backends, caplog: pytest.LogCaptureFixture
) -> Callable[[str], Outcome]:
    """Run a driver scenario against the app served on loopback; the app's `edge_log` events after it stopped."""
    edge = Settings.model_validate(settings.model_dump() | {"edge_log_token": TOKEN, "edge_log_flush_seconds": 0.05})

    def go(scenario: str) -> Outcome:
        module = compiled / ("analysis-webhook/index.js" if scenario == "webhook" else "_shared/edge_logger.js")
        app = app_for(edge, backends, caplog)
        with serving(app) as base_url:
            unreachable = f"http://127.0.0.1:{free_port()}/v1/logs/edge"
            args = [toolchain.node, str(DRIVER), scenario, str(module), f"{base_url}/v1/logs/edge", TOKEN]
            done = run([*args, unreachable], timeout=60)
        # The server has stopped: its lifespan shipped whatever was still queued.
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert TOKEN not in output, "the logger printed the token"
        result_lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        assert len(result_lines) == 1, output
        edge_events = [json.loads(e["message"]) | {"_ms": e["edge_timestamp_ms"]} for e in edge_lines(caplog)]
        return Outcome(json.loads(result_lines[0].removeprefix("RESULT ")), output, edge_events)

    return go


def edge_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [e for e in logged(caplog) if e.get("event") == "edge_log" and e.get("logger") == "app.edge"]


def test_the_logger_delivers_by_time_by_size_and_on_flush_gzipped_or_not(drive: Callable[[str], Outcome]) -> None:
    outcome = drive("deliver")
    result = outcome.result
    assert result["timed"]["sent"] == 1  # flushMs after the first event, with no flush() call
    assert result["afterFullBatch"]["sent"] == 3  # a full batch went at once, a minute before its timer
    assert result["main"]["sent"] == 5
    for stats in (result["main"], result["gzip"]):
        assert stats["dropped"] == stats["failedBatches"] == stats["retries"] == stats["buffered"] == 0
    assert (result["gzip"]["sent"], result["gzip"]["encodings"]) == (2, ["gzip"])

    events = outcome.events
    assert [e["event_message"] for e in events] == [
        "instance started",
        "webhook received", "analysis over its latency SLO", "analysis failed",
        "payload", "done",
        "compressed 1", "compressed 2",
    ]  # fmt: skip
    for event in events:
        assert event["execution_id"] == "exec-1"
        assert event["region"] == "ca-central-1"
        stamp = datetime.fromisoformat(event["timestamp"])
        assert stamp.utcoffset() == timedelta(0)
        assert event["_ms"] == int(stamp.timestamp() * 1000)  # the service took the event's own time
    assert {e["fn"] for e in events} == {"analysis-webhook", "gzip-fn"}
    assert [e["level"] for e in events[1:6]] == ["info", "warn", "error", "info", "debug"]
    assert [e.get("request_id") for e in events[:6]] == [None] + ["req-1"] * 5

    failed, payload = events[3], events[4]
    assert (failed["error"]["name"], failed["error"]["message"]) == ("Error", "boom")
    assert failed["error_code"] == "vision_model_error"
    assert payload["payload"] == {"table": "analyses", "self": "[Circular]"}
    assert payload["big"] == "12"
    assert (payload["level"], payload["field_level"]) == ("info", "not-the-level")  # ours win, theirs kept
    assert events[7]["text"] == "x" * 5000
    # The echo to the console (what Supabase's own log view shows) has every event too.
    assert outcome.output.count('"fn":"analysis-webhook"') >= 6


def test_one_retry_gets_past_a_503_a_network_error_and_a_timeout(drive: Callable[[str], Outcome]) -> None:
    outcome = drive("retry")
    for how in ("503", "network", "hang"):
        stats = outcome.result[how]
        assert (stats["sent"], stats["retries"], stats["calls"], stats["dropped"]) == (2, 1, 2, 0), how
    # The failed first attempts never reached the service, so each event arrived exactly once.
    assert sorted(e["event_message"] for e in outcome.events) == sorted(
        f"{n} {how}" for how in ("503", "network", "hang") for n in ("first", "second")
    )


def test_a_wrong_token_or_no_service_never_breaks_the_function(drive: Callable[[str], Outcome]) -> None:
    outcome = drive("refused")
    wrong, down = outcome.result["wrongToken"], outcome.result["unreachable"]
    # 401 is final: no retry, the batch is dropped and counted, and flush() still resolved.
    assert (wrong["sent"], wrong["dropped"], wrong["failedBatches"], wrong["retries"]) == (0, 3, 1, 0)
    assert (down["sent"], down["dropped"], down["failedBatches"], down["retries"]) == (0, 1, 1, 1)
    assert "HTTP 401" in outcome.output  # told once on the console
    assert "not-the-token" not in outcome.output
    assert outcome.events == []


def test_the_example_function_logs_each_webhook_and_ships_after_responding(drive: Callable[[str], Outcome]) -> None:
    outcome = drive("webhook")
    assert outcome.result["statuses"] == [200, 200, 401, 400]
    assert outcome.result["pendingAfterResponses"] == 4  # each response left its flush to EdgeRuntime.waitUntil
    assert outcome.result["postedAtFirstResponse"] == 0  # and did not wait for it
    assert outcome.result["postedAtEnd"] >= 1  # flushes queued behind one in flight share its next POST
    events = outcome.events
    assert [(e["level"], e["event_message"]) for e in events] == [
        ("info", "analysis succeeded"),
        ("warn", "analysis over its latency SLO"),
        ("error", "analysis failed"),
        ("warn", "webhook refused: wrong or missing x-webhook-secret"),
        ("warn", "webhook refused: body is not JSON"),
    ]
    assert {(e["fn"], e["execution_id"], e["region"]) for e in events} == {
        ("analysis-webhook", "exec-webhook", "ca-central-1")
    }
    succeeded, slow, failed = events[:3]
    assert (succeeded["analysis_id"], succeeded["category"], succeeded["total_ms"]) == ("a-1", "shoes", 12000)
    assert (slow["slo_ms"], failed["analysis_id"], failed["error_code"]) == (10000, "a-2", "vision_model_error")
    # One request id per request: the two events of the first share one; the four requests have four.
    request_ids = [e["request_id"] for e in events]
    assert request_ids[0] == request_ids[1]
    assert len(set(request_ids)) == 4
    assert "whsec-7f3a91c2e5" not in outcome.output
