"""Create the PostHog latency insight and its SLO alert, idempotently, through PostHog's REST API.

    python -m app.ops.posthog_setup [--dry-run] [--slo-ms N] [--project-id ID] [--api-host URL]
                                    [--subscribe-user-id ID ...] [--timeout SECONDS]

Environment: POSTHOG_PERSONAL_API_KEY (required; a personal API key with the scopes insight:read,
insight:write, alert:read, alert:write and user:read; never printed), POSTHOG_PROJECT_ID,
POSTHOG_API_HOST (default https://us.posthog.com: the REST API, not the ingestion host
us.i.posthog.com). `--slo-ms` defaults to LATENCY_SLO_MS, the service's own setting.

What it owns, found by fixed name:

    insight "product-analyzer: p95 analysis latency by stage"
        a Trends insight (InsightVizNode > TrendsQuery), hourly, on `analysis_completed` with
        `cached` = false, one series per stage: p95 of total_ms (series 0), upload_ms, store_ms,
        vision_ms, report_ms. Cached answers are left out so that a cache hit cannot hide a slow model.
    alert "product-analyzer: p95 analysis latency over SLO"
        on that insight, series 0 (total_ms), fires when the hourly p95 is above the SLO; checked
        hourly; sent to the key's own user (GET /api/users/@me/) or to --subscribe-user-id.

Each run lists both (following `next`), then POSTs what is missing and PATCHes only the fields we
own that differ. A second run sends GETs only. `--dry-run` sends the GETs and prints the writes.
Exit status: 0 done, 1 PostHog refused or did not answer, 2 usage error.

How the comparison reads PostHog's answers: a field is unchanged when PostHog's copy holds
everything we would send; keys PostHog adds on its own (a query's `version`, a threshold's `id`)
are ignored. Subscriptions are only ever added: PostHog replaces the whole set on PATCH, so a
PATCH sends the users already subscribed plus ours, and nobody a teammate subscribed is dropped.

Sources for the API shapes, and how sure they are:
- alerts: PostHog/posthog `posthog/api/alert.py` (AlertSerializer, AlertViewSet with
  scope_object "alert"), `posthog/models/alert.py`, `posthog/schema.py` (InsightThreshold,
  InsightThresholdType absolute|percentage, AlertConditionType absolute_value, TrendsAlertConfig
  {type, series_index, check_ongoing_interval}, AlertCalculationInterval hourly|daily|...).
  Sure: writes take `insight` as an id and `subscribed_users` as user ids, reads return both as
  objects; `threshold` is nested ({"configuration": ...}) and a PATCH with it edits the existing
  threshold in place. Less sure: older self-hosted versions marked alerts "INTERNAL" (not reachable
  with a personal API key) and lacked `config`/`calculation_interval`; plan limits may refuse a
  new alert with a 400, which this prints.
- insights: posthog.com/docs/product-analytics/surfaces/api and the insights API reference
  (`search`, limit/offset pagination with an absolute `next`); PropertyMathType has p95;
  EventsNode takes `math_property`. The `cached` filter is sent as the string "false" with
  operator exact, as PostHog's UI saves it: HogQL turns "false" into a boolean when the property
  is typed Boolean (the SDK sends a JSON bool, so it is), and still matches the raw JSON otherwise.
- /api/users/@me/ returns the user's integer `id` (posthog/api/user.py UserSerializer).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

INSIGHT_NAME = "product-analyzer: p95 analysis latency by stage"
ALERT_NAME = "product-analyzer: p95 analysis latency over SLO"
EVENT = "analysis_completed"
# Series order is part of the contract: the alert watches series 0.
STAGE_PROPERTIES: tuple[str, ...] = ("total_ms", "upload_ms", "store_ms", "vision_ms", "report_ms")
DEFAULT_API_HOST = "https://us.posthog.com"
DEFAULT_TIMEOUT_S = 10.0
# The id an alert would get in a dry run where the insight does not exist yet.
NEW_INSIGHT_PLACEHOLDER = "<id of the insight created above>"

Json = dict[str, Any]
Status = Literal["created", "updated", "unchanged"]


class UsageError(Exception):
    """The command line or environment is wrong; exit 2."""


class PostHogError(Exception):
    """PostHog refused a request or did not answer; the message is one line, without the key."""


# ── desired state (pure) ─────────────────────────────────────────────────────


def desired_insight() -> Json:
    """The insight as we write it: p95 of each stage's latency, hourly, cache hits left out."""
    series = [
        {
            "kind": "EventsNode",
            "event": EVENT,
            "name": EVENT,
            "custom_name": f"p95 {prop}",
            "math": "p95",
            "math_property": prop,
        }
        for prop in STAGE_PROPERTIES
    ]
    return {
        "name": INSIGHT_NAME,
        "description": (
            "p95 latency of each stage of POST /analyze, hourly, cached answers excluded. "
            "Managed by `python -m app.ops.posthog_setup`; edits to its query are reverted on the next run."
        ),
        "query": {
            "kind": "InsightVizNode",
            "source": {
                "kind": "TrendsQuery",
                "series": series,
                "interval": "hour",
                "dateRange": {"date_from": "-7d"},
                "properties": [{"key": "cached", "value": ["false"], "operator": "exact", "type": "event"}],
                "trendsFilter": {"display": "ActionsLineGraph", "aggregationAxisFormat": "duration_ms"},
            },
        },
    }


def desired_alert(*, insight_id: int | str, slo_ms: int, user_ids: Sequence[int]) -> Json:
    """The alert as we write it: series 0 (p95 total_ms) above `slo_ms`, checked hourly."""
    return {
        "name": ALERT_NAME,
        "insight": insight_id,
        "subscribed_users": sorted(set(user_ids)),
        "threshold": {"configuration": {"type": "absolute", "bounds": {"upper": slo_ms}}},
        "condition": {"type": "absolute_value"},
        "config": {"type": "TrendsAlertConfig", "series_index": 0},
        "calculation_interval": "hourly",
        "enabled": True,
    }


# ── diff (pure) ──────────────────────────────────────────────────────────────


def contains(actual: object, wanted: object) -> bool:
    """Whether `actual` holds everything `wanted` does (dicts by key, lists item by item)."""
    if isinstance(wanted, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and contains(actual[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(contains(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return type(actual) is type(wanted) and actual == wanted
    return actual == wanted


def changed_fields(desired: Mapping[str, Any], current: Mapping[str, Any]) -> Json:
    """The fields of `desired` that `current` does not already hold: the body of a PATCH."""
    return {name: value for name, value in desired.items() if not contains(current.get(name), value)}


def _ids(items: object) -> list[int]:
    """User or insight ids from PostHog's read shape (objects) or its write shape (ids)."""
    if not isinstance(items, list):
        return []
    return [item["id"] if isinstance(item, Mapping) else item for item in items]


def alert_as_written(alert: Mapping[str, Any]) -> Json:
    """PostHog's alert in the shape we write it, so that `changed_fields` compares like with like."""
    insight = alert.get("insight")
    threshold = alert.get("threshold")
    return {
        "name": alert.get("name"),
        "insight": insight.get("id") if isinstance(insight, Mapping) else insight,
        "subscribed_users": sorted(_ids(alert.get("subscribed_users"))),
        "threshold": {"configuration": threshold.get("configuration")} if isinstance(threshold, Mapping) else None,
        "condition": alert.get("condition"),
        "config": alert.get("config"),
        "calculation_interval": alert.get("calculation_interval"),
        "enabled": alert.get("enabled"),
    }


# ── HTTP ─────────────────────────────────────────────────────────────────────


class PostHogApi:
    """PostHog's REST API with a personal API key: JSON in and out, one-line errors."""

    def __init__(self, api_host: str, key: str, *, timeout_s: float) -> None:
        self._origin = _origin(api_host)
        self._client = httpx.Client(
            base_url=api_host,
            headers={
                "Authorization": f"Bearer {key}",
                "Accept": "application/json",
                "User-Agent": "product-analyzer-posthog-setup",
            },
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,  # a redirect elsewhere must not carry the key
        )
        self._timeout_s = timeout_s

    def close(self) -> None:
        self._client.close()

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return self._send("GET", path, params=params)

    def post(self, path: str, body: Json) -> Json:
        result: Json = self._send("POST", path, body=body)
        return result

    def patch(self, path: str, body: Json) -> Json:
        result: Json = self._send("PATCH", path, body=body)
        return result

    def list_all(self, path: str, params: Mapping[str, str] | None = None) -> Iterator[Json]:
        """Every item of a list endpoint, following `next` (limit/offset pagination)."""
        page = self.get(path, params)
        while True:
            if isinstance(page, list):  # an unpaginated list
                yield from page
                return
            if not isinstance(page, Mapping) or not isinstance(page.get("results"), list):
                raise PostHogError(f"GET {path}: expected a list of results, got something else")
            yield from page["results"]
            next_url = page.get("next")
            if not next_url:
                return
            if _origin(str(next_url)) != self._origin:
                raise PostHogError(f"GET {path}: refusing to follow a pagination link to another host")
            page = self.get(str(next_url))

    def _send(self, method: str, url: str, *, params: Mapping[str, str] | None = None, body: Json | None = None) -> Any:
        shown = urlsplit(url).path or url
        try:
            response = self._client.request(method, url, params=params, json=body)
        except httpx.TimeoutException:
            raise PostHogError(f"{method} {shown}: PostHog did not answer within {self._timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise PostHogError(f"{method} {shown}: cannot reach PostHog ({type(exc).__name__})") from None
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise PostHogError(f"{method} {shown}: PostHog answered {response.status_code} without JSON") from None
        raise PostHogError(f"{method} {shown}: {_explain(response)}")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _explain(response: httpx.Response) -> str:
    status = response.status_code
    detail = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        attr = f" ({body['attr']})" if body.get("attr") else ""
        detail = f"{body.get('detail') or ''}{attr}".strip()
    elif body is not None:
        detail = json.dumps(body)
    detail = " ".join(detail.split())[:300]
    hints = {
        401: "PostHog refused the personal API key; check POSTHOG_PERSONAL_API_KEY",
        403: "the key may not do this; it needs insight:read/write, alert:read/write and user:read on this project",
        404: "not found; check --project-id / POSTHOG_PROJECT_ID and --api-host",
        429: f"rate limited; retry after {response.headers.get('Retry-After', 'a while')} s",
    }
    hint = hints.get(status) or ("PostHog failed; try again later" if status >= 500 else "PostHog refused the request")
    return f"{status} {hint}" + (f": {detail}" if detail else "")


# ── plan and apply ───────────────────────────────────────────────────────────


@dataclass
class Outcome:
    kind: str
    name: str
    status: Status
    id: int | str | None = None
    url: str = ""
    fields: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Options:
    api_host: str
    project_id: str
    slo_ms: int
    subscribe_user_ids: tuple[int, ...]
    dry_run: bool


def _find_by_name(api: PostHogApi, path: str, name: str, params: Mapping[str, str] | None = None) -> Json | None:
    matches = [item for item in api.list_all(path, params) if item.get("name") == name]
    if len(matches) > 1:
        ids = ", ".join(str(item.get("id")) for item in matches)
        print(f"warning: {len(matches)} objects named {name!r} ({ids}); managing the first", file=sys.stderr)
    return matches[0] if matches else None


def _write(api: PostHogApi, method: Literal["POST", "PATCH"], path: str, body: Json, *, dry_run: bool) -> Json | None:
    if dry_run:
        print(f"would {method} {path}")
        print(json.dumps(body, indent=2))
        return None
    print(f"{method} {path} ({', '.join(body)})")
    return api.post(path, body) if method == "POST" else api.patch(path, body)


def ensure_insight(api: PostHogApi, options: Options) -> Outcome:
    """Create the insight, or bring the fields we own back to the desired state."""
    base = f"/api/projects/{options.project_id}/insights/"
    desired = desired_insight()
    current = _find_by_name(api, base, INSIGHT_NAME, {"search": INSIGHT_NAME})
    if current is None:
        created = _write(api, "POST", base, {**desired, "saved": True}, dry_run=options.dry_run)
        return _insight_outcome(options, "created", created or {}, list(desired))
    if "query" not in current:  # a list that left the query out: read the insight itself
        current = api.get(f"{base}{current['id']}/")
    changes = changed_fields(desired, current)
    if not changes:
        return _insight_outcome(options, "unchanged", current, [])
    updated = _write(api, "PATCH", f"{base}{current['id']}/", changes, dry_run=options.dry_run)
    return _insight_outcome(options, "updated", updated or current, list(changes))


def _insight_outcome(options: Options, status: Status, insight: Mapping[str, Any], fields: list[str]) -> Outcome:
    short_id = insight.get("short_id")
    url = f"{options.api_host}/project/{options.project_id}/insights/{short_id}" if short_id else ""
    return Outcome("insight", INSIGHT_NAME, status, insight.get("id"), url, fields)


def ensure_alert(api: PostHogApi, options: Options, insight: Outcome) -> Outcome:
    """Create the alert on `insight`, or bring the fields we own back to the desired state."""
    base = f"/api/projects/{options.project_id}/alerts/"
    wanted_users = list(options.subscribe_user_ids) or [_own_user_id(api)]
    insight_id = insight.id if insight.id is not None else NEW_INSIGHT_PLACEHOLDER
    current = _find_by_name(api, base, ALERT_NAME)
    if current is None:
        desired = desired_alert(insight_id=insight_id, slo_ms=options.slo_ms, user_ids=wanted_users)
        created = _write(api, "POST", base, desired, dry_run=options.dry_run)
        return _alert_outcome(insight, "created", created or {}, list(desired))
    written = alert_as_written(current)
    # PostHog replaces the subscriber set on PATCH: keep whoever is subscribed already.
    users = [*written["subscribed_users"], *wanted_users]
    changes = changed_fields(desired_alert(insight_id=insight_id, slo_ms=options.slo_ms, user_ids=users), written)
    if not changes:
        return _alert_outcome(insight, "unchanged", current, [])
    updated = _write(api, "PATCH", f"{base}{current['id']}/", changes, dry_run=options.dry_run)
    return _alert_outcome(insight, "updated", updated or current, list(changes))


def _own_user_id(api: PostHogApi) -> int:
    me = api.get("/api/users/@me/")
    if not isinstance(me, Mapping) or not isinstance(me.get("id"), int):
        raise PostHogError("GET /api/users/@me/: the answer has no user id; pass --subscribe-user-id")
    user_id: int = me["id"]
    return user_id


def _alert_outcome(insight: Outcome, status: Status, alert: Mapping[str, Any], fields: list[str]) -> Outcome:
    alert_id = alert.get("id")
    url = f"{insight.url}?alert_id={alert_id}" if insight.url and alert_id else ""
    return Outcome("alert", ALERT_NAME, status, alert_id, url, fields)


def run(api: PostHogApi, options: Options) -> list[Outcome]:
    """Bring the insight, then its alert, to the desired state; return what happened to each."""
    insight = ensure_insight(api, options)
    return [insight, ensure_alert(api, options, insight)]


def summary_line(outcome: Outcome, *, dry_run: bool) -> str:
    status: str = outcome.status
    if dry_run and status != "unchanged":
        status = f"would be {status}"
    if outcome.status == "updated":
        status += f" ({', '.join(outcome.fields)})"
    where = " ".join(part for part in (f"id={outcome.id}" if outcome.id is not None else "", outcome.url) if part)
    return f"{outcome.kind} {outcome.name!r}: {status}" + (f" {where}" if where else "")


# ── command line ─────────────────────────────────────────────────────────────


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.ops.posthog_setup",
        description="Create or update the PostHog p95 latency insight and its SLO alert (idempotent).",
    )
    parser.add_argument("--dry-run", action="store_true", help="send only GETs; print the writes instead")
    parser.add_argument("--slo-ms", type=int, help="alert threshold in ms (default: LATENCY_SLO_MS, 10000)")
    parser.add_argument("--project-id", help="PostHog project id (default: POSTHOG_PROJECT_ID)")
    parser.add_argument("--api-host", help=f"PostHog REST API host (default: POSTHOG_API_HOST or {DEFAULT_API_HOST})")
    parser.add_argument(
        "--subscribe-user-id",
        type=int,
        action="append",
        default=[],
        metavar="ID",
        help="PostHog user id to notify (repeatable; default: the key's own user)",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS", help="per request")
    return parser


def _options(args: argparse.Namespace) -> Options:
    api_host = (args.api_host or os.environ.get("POSTHOG_API_HOST") or DEFAULT_API_HOST).rstrip("/")
    scheme, host = _origin(api_host)
    if scheme not in ("http", "https") or not host:
        raise UsageError(f"--api-host must be a URL such as {DEFAULT_API_HOST}, got {api_host!r}")
    if ".i.posthog.com" in host:
        raise UsageError(f"{host} is PostHog's ingestion host; the REST API is at {host.replace('.i.', '.', 1)}")
    project_id = (args.project_id or os.environ.get("POSTHOG_PROJECT_ID") or "").strip()
    if not project_id.isdigit():
        raise UsageError("set --project-id or POSTHOG_PROJECT_ID to the numeric PostHog project id")
    slo_ms = args.slo_ms if args.slo_ms is not None else _settings_slo_ms()
    if slo_ms <= 0:
        raise UsageError(f"--slo-ms must be positive, got {slo_ms}")
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {args.timeout:g}")
    if any(user_id <= 0 for user_id in args.subscribe_user_id):
        raise UsageError("--subscribe-user-id takes PostHog's numeric user ids")
    return Options(api_host, project_id, slo_ms, tuple(args.subscribe_user_id), args.dry_run)


def _settings_slo_ms() -> int:
    from pydantic import ValidationError

    from app.config import Settings

    try:
        return Settings().latency_slo_ms
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]).upper()
        raise UsageError(f"the service settings do not load ({where}: {first['msg']}); pass --slo-ms") from None


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return its exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2
    key = os.environ.get("POSTHOG_PERSONAL_API_KEY", "").strip()
    try:
        if not key:
            raise UsageError("set POSTHOG_PERSONAL_API_KEY to a PostHog personal API key")
        options = _options(args)
    except UsageError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    api = PostHogApi(options.api_host, key, timeout_s=args.timeout)
    try:
        outcomes = run(api, options)
    except PostHogError as exc:
        # The key never goes into a message; redact anyway, in case PostHog ever echoes it.
        print(f"error: {str(exc).replace(key, '***')}", file=sys.stderr)
        return 1
    finally:
        api.close()
    for outcome in outcomes:
        print(summary_line(outcome, dry_run=options.dry_run))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
