"""Smoke-test a deployed product-analyzer: `GET /healthz`, then one real `POST /analyze`.

    python .github/scripts/smoke_test.py --url https://abc123.execute-api.ca-central-1.amazonaws.com

Passes when `/healthz` answers 200 and `/analyze`, given a small JPEG made here, answers 200 with
a JSON report that has a non-empty `report.title`. The bearer token is `$SMOKE_TEST_TOKEN`, a
Supabase test user's access token. Supabase access tokens expire (an hour by default), so when
`$SMOKE_TEST_TOKEN` is empty a fresh one is fetched by signing the test user in with the password
grant: `$SUPABASE_URL`, `$SUPABASE_ANON_KEY`, `$SMOKE_TEST_EMAIL` and `$SMOKE_TEST_PASSWORD`.
No token is ever printed.

Needs httpx and Pillow (both dependencies of the service). Exit status: 0 passed, 1 a check
failed, 2 the configuration is incomplete.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import httpx
from PIL import Image, ImageDraw

# A fresh deployment may answer 503 for a moment while the load balancer registers its targets.
RETRY_STATUSES = frozenset({502, 503, 504})


class SmokeError(Exception):
    """A check failed; the message says which and what came back."""


class ConfigurationError(Exception):
    """Neither a token nor the means to fetch one."""


def product_jpeg(width: int = 640, height: int = 480) -> bytes:
    """Draw a small product-like picture (a box on a plain background) and return it as JPEG bytes."""
    image = Image.new("RGB", (width, height), (236, 232, 224))
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(200, 40, 40), outline=(0, 0, 0))
    draw.ellipse((width // 2 - 40, height // 2 - 40, width // 2 + 40, height // 2 + 40), fill=(250, 250, 250))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def access_token(environ: Mapping[str, str], client: httpx.Client) -> str:
    """Return `$SMOKE_TEST_TOKEN`, or sign the test user in to Supabase Auth for a fresh access token."""
    if token := environ.get("SMOKE_TEST_TOKEN", "").strip():
        return token
    names = ("SUPABASE_URL", "SUPABASE_ANON_KEY", "SMOKE_TEST_EMAIL", "SMOKE_TEST_PASSWORD")
    missing = [name for name in names if not environ.get(name, "").strip()]
    if missing:
        raise ConfigurationError("SMOKE_TEST_TOKEN is empty, and signing the test user in needs " + ", ".join(missing))
    response = client.post(
        environ["SUPABASE_URL"].rstrip("/") + "/auth/v1/token",
        params={"grant_type": "password"},
        headers={"apikey": environ["SUPABASE_ANON_KEY"]},
        json={"email": environ["SMOKE_TEST_EMAIL"], "password": environ["SMOKE_TEST_PASSWORD"]},
    )
    if response.status_code != 200:
        raise SmokeError(f"Supabase sign-in of the test user answered {response.status_code}")
    token = response.json().get("access_token")
    if not isinstance(token, str) or not token:
        raise SmokeError("Supabase sign-in answered 200 without an access_token")
    return token


def _request(
    client: httpx.Client, method: str, url: str, *, attempts: int, delay_s: float, **kwargs: Any
) -> httpx.Response:
    """Send a request, again after `delay_s` on a connection error or a 502/503/504, `attempts` times at most."""
    for attempt in range(1, attempts + 1):
        try:
            response = client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code not in RETRY_STATUSES:
                return response
            problem = f"HTTP {response.status_code}"
        if attempt == attempts:
            raise SmokeError(f"{method} {url} failed {attempts} times; last: {problem}")
        print(f"{method} {url}: {problem}; trying again in {delay_s:g} s ({attempt}/{attempts})")
        time.sleep(delay_s)
    raise AssertionError("unreachable")


def _excerpt(response: httpx.Response) -> str:
    return response.text[:500].replace("\n", " ")


def check_health(client: httpx.Client, base_url: str, *, attempts: int, delay_s: float) -> None:
    response = _request(client, "GET", f"{base_url}/healthz", attempts=attempts, delay_s=delay_s)
    if response.status_code != 200:
        raise SmokeError(f"GET /healthz answered {response.status_code}: {_excerpt(response)}")
    print(f"GET /healthz: 200 ({response.elapsed.total_seconds() * 1000:.0f} ms)")


def check_analyze(client: httpx.Client, base_url: str, token: str, *, attempts: int, delay_s: float) -> dict[str, Any]:
    """POST one photo to /analyze and return the report body; raise `SmokeError` unless it is a good one."""
    response = _request(
        client,
        "POST",
        f"{base_url}/analyze",
        attempts=attempts,
        delay_s=delay_s,
        files={"image": ("smoke-test.jpg", product_jpeg(), "image/jpeg")},
        data={"questions": ["What color is it?"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    request_id = response.headers.get("x-request-id", "none")
    if response.status_code != 200:
        raise SmokeError(f"POST /analyze answered {response.status_code} (request {request_id}): {_excerpt(response)}")
    try:
        body = response.json()
    except ValueError as exc:
        raise SmokeError(f"POST /analyze answered 200 with a body that is not JSON: {_excerpt(response)}") from exc
    report = body.get("report") if isinstance(body, dict) else None
    title = report.get("title") if isinstance(report, dict) else None
    if not isinstance(title, str) or not title.strip():
        raise SmokeError(
            f"POST /analyze answered 200 without a report.title (request {request_id}): {_excerpt(response)}"
        )
    print(
        f"POST /analyze: 200 in {response.elapsed.total_seconds():.1f} s, request {request_id}, "
        f"report {body.get('id')!r} titled {title!r}, timings_ms {body.get('timings_ms')}"
    )
    return body


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the API's base URL (the stack's ApiUrl output)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default: 120)")
    parser.add_argument("--attempts", type=int, default=10, help="tries per check on 5xx or no answer (default: 10)")
    parser.add_argument("--delay", type=float, default=6.0, help="seconds between tries (default: 6)")
    return parser


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    args = _parser().parse_args(argv)
    base_url = args.url.rstrip("/")
    timeout = httpx.Timeout(args.timeout, connect=10.0)
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            check_health(client, base_url, attempts=args.attempts, delay_s=args.delay)
            token = access_token(environ, client)
            # Fewer tries here: a 502/503 may be the service's own verdict on the model, not a warm-up.
            check_analyze(client, base_url, token, attempts=min(args.attempts, 3), delay_s=args.delay)
    except ConfigurationError as exc:
        print(f"smoke test: {exc}", file=sys.stderr)
        return 2
    except (SmokeError, httpx.HTTPError) as exc:
        prefix = "::error title=smoke test::" if environ.get("GITHUB_ACTIONS") == "true" else "smoke test failed: "
        print(f"{prefix}{exc}", file=sys.stderr)
        return 1
    print(f"smoke test passed against {base_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
