"""deploy.yml's smoke test (.github/scripts/smoke_test.py) against the real app over loopback HTTP,
with AUTH_MODE=supabase: it passes on a good deploy, fails on a bad one, and never prints a token."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.bootstrap import create_app
from app.config import Settings
from app.domain.ports import Backends
from tests.api.accounts import Supabase
from tests.loopback import serving

SCRIPT = Path(__file__).resolve().parents[2] / ".github" / "scripts" / "smoke_test.py"
FAST = ["--attempts", "3", "--delay", "0", "--timeout", "10"]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smoke_test", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


smoke_test = _load()


@pytest.fixture
def api(settings: Settings, backends: Backends, supabase: Supabase) -> Iterator[str]:
    """The service on fake backends, requiring Supabase access tokens, on a loopback port."""
    with serving(create_app(supabase.settings(settings), backends=backends)) as base_url:
        yield base_url


def run(url: str, environ: dict[str, str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = smoke_test.main(["--url", url + "/", *FAST], environ)
    out, err = capsys.readouterr()
    return code, out, err


def test_a_good_deploy_passes(
    api: str, supabase: Supabase, backends: Backends, capsys: pytest.CaptureFixture[str]
) -> None:
    token = supabase.token(str(uuid.uuid4()))
    code, out, err = run(api, {"SMOKE_TEST_TOKEN": token}, capsys)
    assert code == 0, err
    assert "GET /healthz: 200" in out
    assert "POST /analyze: 200" in out
    assert out.rstrip().endswith(f"smoke test passed against {api}")
    assert len(backends.vision.calls) == 1  # type: ignore[attr-defined]
    image, questions = backends.vision.calls[0]  # type: ignore[attr-defined]
    assert image[:3] == b"\xff\xd8\xff"  # the JPEG the script drew
    assert "What color is it?" in questions
    assert token not in out + err


def test_a_rejected_token_fails_without_printing_it(
    api: str, supabase: Supabase, capsys: pytest.CaptureFixture[str]
) -> None:
    token = supabase.token(str(uuid.uuid4()), aud="anon")  # signed, but for the wrong audience
    code, out, err = run(api, {"SMOKE_TEST_TOKEN": token, "GITHUB_ACTIONS": "true"}, capsys)
    assert code == 1
    assert err.startswith("::error title=smoke test::POST /analyze answered 401")
    assert '"error":"unauthorized"' in err.replace(" ", "")
    assert token not in out + err


def test_no_token_and_no_way_to_get_one_is_a_configuration_error(api: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(api, {"SMOKE_TEST_EMAIL": "smoke@example.com"}, capsys)
    assert code == 2
    assert "SUPABASE_URL, SUPABASE_ANON_KEY, SMOKE_TEST_PASSWORD" in err


def test_without_a_token_it_signs_the_test_user_in_for_a_fresh_one(
    api: str, supabase: Supabase, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[dict[str, Any]] = []

    async def sign_in(request: Request) -> Response:
        body = await request.json()
        seen.append({"grant": request.query_params.get("grant_type"), "apikey": request.headers.get("apikey"), **body})
        if body != {"email": "smoke@example.com", "password": "correct horse"}:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        return JSONResponse({"access_token": supabase.token(str(uuid.uuid4())), "token_type": "bearer"})

    with serving(Starlette(routes=[Route("/auth/v1/token", sign_in, methods=["POST"])])) as auth_url:
        environ = {
            "SMOKE_TEST_TOKEN": "",
            "SUPABASE_URL": auth_url + "/",
            "SUPABASE_ANON_KEY": "anon-key",
            "SMOKE_TEST_EMAIL": "smoke@example.com",
            "SMOKE_TEST_PASSWORD": "correct horse",
        }
        code, _, err = run(api, environ, capsys)
        assert code == 0, err
        assert seen == [
            {"grant": "password", "apikey": "anon-key", "email": "smoke@example.com", "password": "correct horse"}
        ]
        code, _, err = run(api, environ | {"SMOKE_TEST_PASSWORD": "wrong"}, capsys)
        assert code == 1
        assert "Supabase sign-in of the test user answered 400" in err
        assert "wrong" not in err


class FlakyDeploy:
    """A stand-in deployment: /healthz answers 503 `warmup` times first; /analyze answers `body`."""

    def __init__(self, *, warmup: int, body: Any, status: int = 200) -> None:
        self.warmup, self.body, self.status = warmup, body, status
        self.health_calls = 0

    async def healthz(self, request: Request) -> Response:
        self.health_calls += 1
        if self.health_calls <= self.warmup:
            return Response("Service Unavailable", status_code=503)
        return JSONResponse({"status": "ok"})

    async def analyze(self, request: Request) -> Response:
        return JSONResponse(self.body, status_code=self.status)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/healthz", self.healthz), Route("/analyze", self.analyze, methods=["POST"])])


def test_it_waits_for_a_deployment_that_is_still_warming_up(capsys: pytest.CaptureFixture[str]) -> None:
    deploy = FlakyDeploy(warmup=2, body={"id": "r1", "status": "succeeded", "report": {"title": "Red box"}})
    with serving(deploy.app()) as url:
        code, out, err = run(url, {"SMOKE_TEST_TOKEN": "t"}, capsys)
    assert code == 0, err
    assert deploy.health_calls == 3
    assert "HTTP 503; trying again" in out


def test_it_gives_up_on_a_deployment_that_never_comes_up(capsys: pytest.CaptureFixture[str]) -> None:
    with serving(FlakyDeploy(warmup=99, body={}).app()) as url:
        code, _, err = run(url, {"SMOKE_TEST_TOKEN": "t"}, capsys)
    assert code == 1
    assert "GET " + url + "/healthz failed 3 times; last: HTTP 503" in err


@pytest.mark.parametrize(
    "body",
    [{"report": {}}, {"report": {"title": "  "}}, {"report": "a title"}, ["not", "an", "object"]],
    ids=["no-title", "blank-title", "report-not-object", "body-not-object"],
)
def test_a_200_without_a_report_title_fails(body: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with serving(FlakyDeploy(warmup=0, body=body).app()) as url:
        code, _, err = run(url, {"SMOKE_TEST_TOKEN": "t"}, capsys)
    assert code == 1
    assert "POST /analyze answered 200 without a report.title" in err
