"""The embedded defaults end to end, over real HTTP on loopback: uvicorn, the tiny BLIP-2,
the local folder store and the template writer, exactly what `make run` starts."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from PIL import Image

from app.bootstrap import create_app
from app.config import Settings
from tests.imagegen import exif_rotated_jpeg_with_gps, product_jpeg
from tests.loopback import serving


@pytest.fixture
def server(settings: Settings, tiny_model_dir: Path) -> Iterator[tuple[str, Settings]]:
    settings = settings.model_copy(update={"model_dir": tiny_model_dir})
    with serving(create_app(settings)) as base_url:
        yield base_url, settings


def test_a_photo_in_a_report_out(server: tuple[str, Settings]) -> None:
    base_url, settings = server
    with httpx.Client(base_url=base_url, timeout=30) as http:
        assert http.get("/readyz").status_code == 200
        response = http.post(
            "/analyze",
            files={"image": ("photo.jpg", exif_rotated_jpeg_with_gps((600, 300)), "image/jpeg")},
            data={"questions": ["Is it waterproof?"]},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["vision"]["model"] == settings.model_dir.name  # type: ignore[union-attr]
    assert body["vision"]["caption"]
    assert body["vision"]["answers"][-1]["question"] == "Is it waterproof?"
    assert body["report"]["writer"] == "template"
    assert body["report"]["title"]
    # The stored file is the normalized image: upright (orientation 6 turns 600x300 into 300x600), no EXIF.
    stored = settings.storage_dir / body["image"]["storage_key"]
    with Image.open(BytesIO(stored.read_bytes())) as image:
        assert image.size == (300, 600) == (body["image"]["width"], body["image"]["height"])
        assert not image.getexif()


def test_bad_upload_over_real_http_is_a_4xx(server: tuple[str, Settings]) -> None:
    base_url, _ = server
    with httpx.Client(base_url=base_url, timeout=30) as http:
        response = http.post("/analyze", files={"image": ("x.jpg", b"not an image", "image/jpeg")})
        huge = http.post(
            "/analyze",
            files={"image": ("big.jpg", product_jpeg((64, 64)) + b"\0" * (16 * 1024 * 1024), "image/jpeg")},
        )
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_image"
    assert huge.status_code == 413
    assert huge.json()["error"] == "image_too_large"
