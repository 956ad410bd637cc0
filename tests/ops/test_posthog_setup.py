"""`python -m app.ops.posthog_setup` against a loopback fake of PostHog's REST API.

The fake keeps insights and alerts in memory, answers in PostHog's read shapes (an alert's
`insight` and `subscribed_users` come back as objects, a saved query gains a `version`), checks
the bearer key, pages every list one item at a time with an absolute `next`, and records every
request, so that the tests assert on exactly what the script sent.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.ops.posthog_setup import ALERT_NAME, INSIGHT_NAME, STAGE_PROPERTIES, main
from tests.loopback import serving

KEY = "phx_test_personal_key_0123456789abcdef"
PROJECT = "42"
ME = 7
TEAMMATE = 8

Handler = Callable[[Request, Any], Awaitable[Response]]


@dataclass
class Sent:
    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class FakePostHog:
    """PostHog's insights, alerts and users/@me endpoints, in memory."""

    page_size: int = 1
    requests: list[Sent] = field(default_factory=list)
    users: dict[int, dict[str, Any]] = field(
        default_factory=lambda: {
            ME: {"id": ME, "uuid": str(uuid.uuid4()), "email": "ops@example.com", "first_name": "Ops"},
            TEAMMATE: {"id": TEAMMATE, "uuid": str(uuid.uuid4()), "email": "mate@example.com", "first_name": "Mate"},
        }
    )
    insights: dict[int, dict[str, Any]] = field(default_factory=dict)
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_status: int | None = None  # answer every request with this status
    delay_s: float = 0.0
    next_origin: str | None = None  # write `next` links on another origin

    def __post_init__(self) -> None:
        # Decoys: someone else's insight, two whose names merely contain ours, and two alerts.
        # With one item a page, reading either list to the end means following `next`.
        other = self._add_insight({"name": "signups per day", "query": _trends("signed_up")})
        self._add_insight({"name": f"{INSIGHT_NAME} (copy)", "query": _trends(INSIGHT_NAME)})
        self._add_insight({"name": f"old {INSIGHT_NAME}", "query": _trends(INSIGHT_NAME)})
        for name in ("signups dropped", f"{ALERT_NAME} (copy)"):
            self.alerts[name] = {
                "id": name,
                "name": name,
                "insight": other["id"],
                "subscribed_users": [TEAMMATE],
                "threshold": {"id": str(uuid.uuid4()), "name": "", "configuration": {"type": "absolute", "bounds": {}}},
                "condition": {"type": "absolute_value"},
                "config": {"type": "TrendsAlertConfig", "series_index": 0},
                "calculation_interval": "daily",
                "enabled": True,
            }

    # ── what tests read ─────────────────────────────────────────────────
    def writes(self) -> list[Sent]:
        return [sent for sent in self.requests if sent.method != "GET"]

    def ours(self) -> tuple[dict[str, Any], dict[str, Any]]:
        insight = next(i for i in self.insights.values() if i["name"] == INSIGHT_NAME)
        alert = next(a for a in self.alerts.values() if a["name"] == ALERT_NAME)
        return insight, alert

    # ── the app ──────────────────────────────────────────────────────────
    def app(self) -> Starlette:
        base = "/api/projects/{project}"
        return Starlette(
            routes=[
                Route("/api/users/@me/", self._guard(self._me), methods=["GET"]),
                Route(f"{base}/insights/", self._guard(self._insights), methods=["GET", "POST"]),
                Route(f"{base}/insights/{{id:int}}/", self._guard(self._insight), methods=["GET", "PATCH"]),
                Route(f"{base}/alerts/", self._guard(self._alerts), methods=["GET", "POST"]),
                Route(f"{base}/alerts/{{id}}/", self._guard(self._alert), methods=["GET", "PATCH"]),
            ]
        )

    def _guard(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            body = json.loads(raw) if raw else None
            self.requests.append(Sent(request.method, request.url.path, dict(request.query_params), body))
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if request.headers.get("authorization") != f"Bearer {KEY}":
                return _error(401, "authentication_error", "Invalid personal API key.")
            if self.fail_status:
                return _error(self.fail_status, "server_error", "Something went wrong.")
            project = request.path_params.get("project")
            if project is not None and project != PROJECT:
                return _error(404, "invalid_request", "Not found.")
            return await handler(request, body)

        return endpoint

    def _page(self, request: Request, items: list[dict[str, Any]]) -> JSONResponse:
        offset = int(request.query_params.get("offset", 0))
        limit = min(int(request.query_params.get("limit", self.page_size)), self.page_size)
        next_url = None
        if offset + limit < len(items):
            url = request.url.include_query_params(offset=offset + limit, limit=limit)
            next_url = f"{self.next_origin}{url.path}?{url.query}" if self.next_origin else str(url)
        return JSONResponse(
            {"count": len(items), "next": next_url, "previous": None, "results": items[offset : offset + limit]}
        )

    async def _me(self, request: Request, body: Any) -> Response:
        return JSONResponse({**self.users[ME], "team": {"id": int(PROJECT)}})

    async def _insights(self, request: Request, body: Any) -> Response:
        if request.method == "POST":
            return JSONResponse(self._add_insight(body), status_code=201)
        search = request.query_params.get("search", "").lower()
        found = [i for i in self.insights.values() if not i["deleted"] and search in i["name"].lower()]
        return self._page(request, found)

    async def _insight(self, request: Request, body: Any) -> Response:
        insight = self.insights.get(request.path_params["id"])
        if insight is None or insight["deleted"]:
            return _error(404, "invalid_request", "Not found.")
        if request.method == "PATCH":
            insight.update({k: v for k, v in body.items() if k in ("name", "description", "query", "saved")})
            insight["query"] = _as_saved(insight["query"])
        return JSONResponse(insight)

    def _add_insight(self, body: dict[str, Any]) -> dict[str, Any]:
        insight_id = 100 + len(self.insights)
        insight = {
            "id": insight_id,
            "short_id": f"short{insight_id}",
            "name": body.get("name", ""),
            "description": body.get("description", ""),
            "query": _as_saved(body["query"]),
            "saved": body.get("saved", False),
            "deleted": False,
            "result": None,
        }
        self.insights[insight_id] = insight
        return insight

    async def _alerts(self, request: Request, body: Any) -> Response:
        if request.method == "GET":
            return self._page(request, [self._render(alert) for alert in self.alerts.values()])
        missing = {"insight", "subscribed_users", "threshold"} - set(body)
        problem = f"{sorted(missing)[0]}: This field is required." if missing else self._invalid(body)
        if problem:
            return _error(400, "validation_error", problem)
        alert_id = str(uuid.uuid4())
        self.alerts[alert_id] = {
            "id": alert_id,
            "name": body.get("name", ""),
            "insight": body["insight"],
            "subscribed_users": list(body["subscribed_users"]),
            "threshold": {"id": str(uuid.uuid4()), "name": "", "configuration": body["threshold"]["configuration"]},
            "condition": body.get("condition", {}),
            "config": body.get("config"),
            "calculation_interval": body.get("calculation_interval", "daily"),
            "enabled": body.get("enabled", True),
        }
        return JSONResponse(self._render(self.alerts[alert_id]), status_code=201)

    async def _alert(self, request: Request, body: Any) -> Response:
        alert = self.alerts.get(request.path_params["id"])
        if alert is None:
            return _error(404, "invalid_request", "Not found.")
        if request.method == "PATCH":
            problem = self._invalid(body)
            if problem:
                return _error(400, "validation_error", problem)
            for name, value in body.items():
                if name == "threshold":  # PostHog edits the existing threshold in place
                    alert["threshold"]["configuration"] = value["configuration"]
                elif name == "subscribed_users":  # and replaces the whole subscriber set
                    alert["subscribed_users"] = list(value)
                else:
                    alert[name] = value
        return JSONResponse(self._render(alert))

    def _invalid(self, body: dict[str, Any]) -> str | None:
        """What PostHog's AlertSerializer would refuse, as its detail; None when it would accept."""
        checks: dict[str, Callable[[Any], bool]] = {
            "insight": lambda v: v in self.insights,
            "subscribed_users": lambda v: isinstance(v, list) and all(u in self.users for u in v),
            "threshold": lambda v: (
                v["configuration"]["type"] in ("absolute", "percentage")
                and all(isinstance(b, int | float) for b in v["configuration"]["bounds"].values())
            ),
            "condition": lambda v: v["type"] in ("absolute_value", "relative_increase", "relative_decrease"),
            "config": lambda v: v["type"] == "TrendsAlertConfig" and isinstance(v["series_index"], int),
            "calculation_interval": lambda v: v in ("hourly", "daily", "weekly", "monthly"),
            "enabled": lambda v: isinstance(v, bool),
            "name": lambda v: isinstance(v, str),
        }
        for name, value in body.items():
            if name not in checks or not checks[name](value):
                return f"{name}: invalid value."
        return None

    def _render(self, alert: dict[str, Any]) -> dict[str, Any]:
        """An alert in PostHog's read shape: the insight and the users as objects."""
        insight = self.insights[alert["insight"]]
        return {
            **alert,
            "insight": {"id": insight["id"], "short_id": insight["short_id"], "name": insight["name"]},
            "subscribed_users": [self.users[u] for u in alert["subscribed_users"]],
            "threshold": {**alert["threshold"], "created_at": "2025-01-01T00:00:00Z"},
            "state": "Not firing",
            "checks": [],
            "last_value": None,
        }


def _trends(event: str) -> dict[str, Any]:
    source = {"kind": "TrendsQuery", "series": [{"kind": "EventsNode", "event": event}]}
    return {"kind": "InsightVizNode", "source": source}


def _as_saved(query: dict[str, Any]) -> dict[str, Any]:
    """PostHog stamps saved queries with a schema version; the script must not count that as drift."""
    saved: dict[str, Any] = json.loads(json.dumps(query))
    saved["source"]["version"] = 2
    return saved


def _error(status: int, kind: str, detail: str) -> JSONResponse:
    return JSONResponse({"type": kind, "code": "error", "detail": detail, "attr": None}, status_code=status)


# ── fixtures and helpers ─────────────────────────────────────────────────


@pytest.fixture(autouse=True)
def posthog_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", KEY)
    for name in ("POSTHOG_PROJECT_ID", "POSTHOG_API_HOST", "LATENCY_SLO_MS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> FakePostHog:
    return FakePostHog()


@pytest.fixture
def base_url(fake: FakePostHog) -> Iterator[str]:
    with serving(fake.app()) as url:
        yield url


@pytest.fixture
def cli(base_url: str, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run the command in-process against the fake; return (exit status, stdout, stderr)."""

    def run(*args: str, host: str | None = base_url) -> tuple[int, str, str]:
        argv = ["--project-id", PROJECT, *(["--api-host", host] if host else []), *args]
        status = main(argv)
        out, err = capsys.readouterr()
        assert KEY not in out, "the personal API key was printed"
        assert KEY not in err, "the personal API key was printed"
        assert "Traceback" not in err
        return status, out, err

    return run


def _paths(sent: list[Sent]) -> list[tuple[str, str]]:
    return [(s.method, s.path) for s in sent]


# ── tests ────────────────────────────────────────────────────────────────


def test_first_run_creates_the_insight_and_the_alert(fake: FakePostHog, cli: Any) -> None:
    status, out, err = cli("--slo-ms", "10000")

    assert status == 0, err
    insights, alerts = f"/api/projects/{PROJECT}/insights/", f"/api/projects/{PROJECT}/alerts/"
    assert _paths(fake.writes()) == [("POST", insights), ("POST", alerts)]
    # Both lists were read to the end, one item a page, before anything was created.
    pages = [(s.path, s.query.get("offset")) for s in fake.requests if s.method == "GET"]
    assert pages == [
        (insights, None),
        (insights, "1"),
        ("/api/users/@me/", None),
        (alerts, None),
        (alerts, "1"),
    ]
    assert fake.requests[0].query["search"] == INSIGHT_NAME

    insight_body, alert_body = (s.body for s in fake.writes())
    assert insight_body["name"] == INSIGHT_NAME
    assert insight_body["saved"] is True
    assert insight_body["query"]["kind"] == "InsightVizNode"
    source = insight_body["query"]["source"]
    assert source["kind"] == "TrendsQuery"
    assert source["interval"] == "hour"
    assert "date_from" in source["dateRange"]
    assert [(s["kind"], s["event"], s["math"], s["math_property"]) for s in source["series"]] == [
        ("EventsNode", "analysis_completed", "p95", prop) for prop in STAGE_PROPERTIES
    ]
    assert source["series"][0]["math_property"] == "total_ms"
    assert source["properties"] == [{"key": "cached", "value": ["false"], "operator": "exact", "type": "event"}]

    insight, alert = fake.ours()
    assert alert_body == {
        "name": ALERT_NAME,
        "insight": insight["id"],
        "subscribed_users": [ME],
        "threshold": {"configuration": {"type": "absolute", "bounds": {"upper": 10000}}},
        "condition": {"type": "absolute_value"},
        "config": {"type": "TrendsAlertConfig", "series_index": 0},
        "calculation_interval": "hourly",
        "enabled": True,
    }
    assert ("GET", "/api/users/@me/") in _paths(fake.requests)

    summary = out.strip().splitlines()[-2:]
    assert summary[0].startswith("insight ")
    assert f"created id={insight['id']}" in summary[0]
    assert f"/project/{PROJECT}/insights/{insight['short_id']}" in summary[0]
    assert summary[1].startswith("alert ")
    assert f"created id={alert['id']}" in summary[1]
    assert f"alert_id={alert['id']}" in summary[1]


def test_a_second_run_sends_only_gets(fake: FakePostHog, cli: Any) -> None:
    assert cli("--slo-ms", "10000")[0] == 0
    first = len(fake.requests)

    status, out, _ = cli("--slo-ms", "10000")

    assert status == 0
    second = fake.requests[first:]
    assert second
    assert {s.method for s in second} == {"GET"}
    assert [line.rsplit("': ", 1)[1].split(" ")[0] for line in out.strip().splitlines()] == ["unchanged"] * 2


def test_a_new_slo_patches_only_the_alert_threshold(fake: FakePostHog, cli: Any) -> None:
    assert cli("--slo-ms", "10000")[0] == 0
    _, alert = fake.ours()
    first = len(fake.requests)

    status, out, _ = cli("--slo-ms", "5000")

    assert status == 0
    writes = [s for s in fake.requests[first:] if s.method != "GET"]
    assert [(s.method, s.path, s.body) for s in writes] == [
        (
            "PATCH",
            f"/api/projects/{PROJECT}/alerts/{alert['id']}/",
            {"threshold": {"configuration": {"type": "absolute", "bounds": {"upper": 5000}}}},
        )
    ]
    assert fake.ours()[1]["threshold"]["configuration"]["bounds"] == {"upper": 5000}
    assert "insight" in out
    assert "unchanged" in out
    assert "updated (threshold)" in out


def test_the_slo_defaults_to_the_service_setting(fake: FakePostHog, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENCY_SLO_MS", "2500")

    assert cli()[0] == 0

    assert fake.ours()[1]["threshold"]["configuration"]["bounds"] == {"upper": 2500}


def test_dry_run_sends_no_writes_and_prints_the_bodies(fake: FakePostHog, cli: Any) -> None:
    status, out, err = cli("--dry-run", "--slo-ms", "9000")

    assert status == 0, err
    assert fake.writes() == []
    assert {s.method for s in fake.requests} == {"GET"}
    assert f"would POST /api/projects/{PROJECT}/insights/" in out
    assert f"would POST /api/projects/{PROJECT}/alerts/" in out
    assert '"math_property": "vision_ms"' in out
    assert '"upper": 9000' in out
    assert "would be created" in out
    # Nothing was made.
    assert all(i["name"] != INSIGHT_NAME for i in fake.insights.values())


def test_dry_run_after_a_change_prints_the_patch(fake: FakePostHog, cli: Any) -> None:
    assert cli("--slo-ms", "10000")[0] == 0
    _, alert = fake.ours()
    first = len(fake.requests)

    status, out, _ = cli("--dry-run", "--slo-ms", "7000")

    assert status == 0
    assert {s.method for s in fake.requests[first:]} == {"GET"}
    assert f"would PATCH /api/projects/{PROJECT}/alerts/{alert['id']}/" in out
    patch = out.split(f"would PATCH /api/projects/{PROJECT}/alerts/{alert['id']}/\n", 1)[1]
    body = json.loads(patch[: patch.index("\n}\n") + 2])
    assert body == {"threshold": {"configuration": {"type": "absolute", "bounds": {"upper": 7000}}}}
    assert fake.ours()[1]["threshold"]["configuration"]["bounds"] == {"upper": 10000}


def test_drift_in_the_query_patches_only_the_query(fake: FakePostHog, cli: Any) -> None:
    assert cli("--slo-ms", "10000")[0] == 0
    insight, _ = fake.ours()
    insight["query"]["source"]["series"][3]["math"] = "avg"  # someone edited it in the UI
    insight["query"]["source"]["properties"] = []
    first = len(fake.requests)

    assert cli("--slo-ms", "10000")[0] == 0

    writes = [s for s in fake.requests[first:] if s.method != "GET"]
    assert [(s.method, s.path, list(s.body)) for s in writes] == [
        ("PATCH", f"/api/projects/{PROJECT}/insights/{insight['id']}/", ["query"])
    ]
    source = fake.ours()[0]["query"]["source"]
    assert source["series"][3]["math"] == "p95"
    assert source["properties"][0]["key"] == "cached"


def test_subscribers_are_added_never_removed(fake: FakePostHog, cli: Any) -> None:
    assert cli("--slo-ms", "10000")[0] == 0
    _, alert = fake.ours()
    alert["subscribed_users"].append(TEAMMATE)  # a teammate subscribed in the UI
    first = len(fake.requests)

    assert cli("--slo-ms", "10000")[0] == 0
    assert [s for s in fake.requests[first:] if s.method != "GET"] == []

    alert["subscribed_users"] = [TEAMMATE]  # and then the key's user unsubscribed
    first = len(fake.requests)
    assert cli("--slo-ms", "10000")[0] == 0
    writes = [s for s in fake.requests[first:] if s.method != "GET"]
    assert [s.body for s in writes] == [{"subscribed_users": [ME, TEAMMATE]}]


def test_subscribe_user_id_replaces_the_keys_own_user(fake: FakePostHog, cli: Any) -> None:
    assert cli("--slo-ms", "10000", "--subscribe-user-id", str(TEAMMATE))[0] == 0

    assert ("GET", "/api/users/@me/") not in _paths(fake.requests)
    assert fake.ours()[1]["subscribed_users"] == [TEAMMATE]


def test_a_wrong_key_exits_1_with_one_line(fake: FakePostHog, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", "phx_wrong_key_fedcba9876543210")

    status, out, err = cli("--slo-ms", "10000")

    assert status == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "401" in err
    assert "POSTHOG_PERSONAL_API_KEY" in err
    assert "phx_wrong_key" not in err
    assert fake.writes() == []


@pytest.mark.parametrize(("failure", "expected"), [(500, "500"), (403, "403"), (429, "429")])
def test_refusals_exit_1_with_one_line(fake: FakePostHog, cli: Any, failure: int, expected: str) -> None:
    fake.fail_status = failure

    status, _out, err = cli("--slo-ms", "10000")

    assert status == 1
    assert len(err.strip().splitlines()) == 1
    assert expected in err


def test_an_unknown_project_exits_1(fake: FakePostHog, base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--project-id", "999", "--api-host", base_url, "--slo-ms", "10000"])

    err = capsys.readouterr().err
    assert status == 1
    assert len(err.strip().splitlines()) == 1
    assert "404" in err
    assert "project" in err


def test_a_slow_posthog_times_out_with_one_line(fake: FakePostHog, cli: Any) -> None:
    fake.delay_s = 1.0

    status, _, err = cli("--slo-ms", "10000", "--timeout", "0.2")

    assert status == 1
    assert len(err.strip().splitlines()) == 1
    assert "did not answer within 0.2 s" in err


def test_an_unreachable_host_exits_1(cli: Any) -> None:
    from tests.loopback import free_port

    status, _, err = cli("--slo-ms", "10000", host=f"http://127.0.0.1:{free_port()}")

    assert status == 1
    assert len(err.strip().splitlines()) == 1
    assert "cannot reach PostHog" in err


def test_a_next_link_to_another_host_is_not_followed(fake: FakePostHog, cli: Any) -> None:
    fake.next_origin = "http://127.0.0.2:9"

    status, _, err = cli("--slo-ms", "10000")

    assert status == 1
    assert "another host" in err
    assert all("offset" not in s.query for s in fake.requests)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--slo-ms", "10000"], {"POSTHOG_PERSONAL_API_KEY": ""}, "POSTHOG_PERSONAL_API_KEY"),
        (["--slo-ms", "0", "--project-id", "1"], {}, "--slo-ms"),
        (["--slo-ms", "ten", "--project-id", "1"], {}, "invalid int"),
        (["--slo-ms", "1"], {}, "POSTHOG_PROJECT_ID"),
        (["--project-id", "1", "--api-host", "https://us.i.posthog.com"], {}, "ingestion host"),
        (["--project-id", "1", "--subscribe-user-id", "me"], {}, "invalid int"),
        (["--bogus"], {}, "unrecognized"),
    ],
)
def test_usage_errors_exit_2(
    args: list[str],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    status = main(args)

    err = capsys.readouterr().err
    assert status == 2
    assert message in err
    assert KEY not in err


def test_environment_fallbacks(fake: FakePostHog, base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTHOG_PROJECT_ID", PROJECT)
    monkeypatch.setenv("POSTHOG_API_HOST", base_url + "/")

    assert main(["--slo-ms", "10000"]) == 0

    assert fake.ours()[1]["threshold"]["configuration"]["bounds"] == {"upper": 10000}
