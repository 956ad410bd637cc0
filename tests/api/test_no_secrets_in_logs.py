"""Tokens, secrets and EXIF never reach the logs: every line the app writes during full requests, grepped.

The app runs at DEBUG with every secret it can hold set (Supabase auth, PostHog key and salt, the
Edge log token), analyzes a photo full of EXIF/GPS/XMP metadata, refuses a forged token, and takes
a batch of Edge logs. Whatever it printed to stdout (the rendered JSON lines, SDK and library
loggers included) must contain none of those values.
"""

from __future__ import annotations

import uuid

import pytest

from app.config import Settings
from app.domain.ports import Backends
from tests.api.accounts import Supabase, app_client, post_photo
from tests.imagegen import exif_rotated_jpeg_with_gps
from tests.posthog_fake import posthog_capture

POSTHOG_KEY = "phc_secret_project_key_0f9e8d7c"
SALT = "salt-that-must-not-leak-4b5a"
EDGE_TOKEN = "edge-token-that-must-not-leak-77aa"
# What exif_rotated_jpeg_with_gps writes into the photo besides pixels.
EXIF_VALUES = ("PhoneMaker", "PhoneModel X", "secret-comment", "45,30.2N")
PHOTO_WITH_EXIF = exif_rotated_jpeg_with_gps((800, 600))


async def test_a_full_request_logs_no_token_secret_or_exif(
    settings: Settings, backends: Backends, supabase: Supabase, capsys: pytest.CaptureFixture[str]
) -> None:
    user = str(uuid.uuid4())
    token = supabase.token(user)
    forged = supabase.token(user)[:-8] + "AAAAAAAA"
    with posthog_capture() as capture:
        everything = supabase.settings(
            settings,
            log_level="DEBUG",
            posthog_api_key=POSTHOG_KEY,
            posthog_host=capture.url,
            posthog_id_salt=SALT,
            edge_log_token=EDGE_TOKEN,
        )
        async with app_client(everything, backends) as client:
            ok = await post_photo(
                client,
                {"Authorization": f"Bearer {token}", "Idempotency-Key": "order-1"},
                photo=PHOTO_WITH_EXIF,
            )
            refused = await post_photo(client, {"Authorization": f"Bearer {forged}"})
            edge = await client.post(
                "/v1/logs/edge",
                json=[{"event_message": "hello from the edge"}],
                headers={"Authorization": f"Bearer {EDGE_TOKEN}"},
            )
        assert (ok.status_code, refused.status_code, edge.status_code) == (200, 401, 202)
        assert len(capture.events) == 2  # the SDK ran (and logged at DEBUG) while we watched
    printed = capsys.readouterr().out
    assert '"event": "request"' in printed  # the capture saw the app's lines
    assert "token_rejected" in printed
    assert "hello from the edge" in printed  # the edge event went to the service's own log
    for secret in (token, forged, token.split(".")[2], POSTHOG_KEY, SALT, EDGE_TOKEN, *EXIF_VALUES):
        assert secret not in printed, f"{secret!r} was logged"
