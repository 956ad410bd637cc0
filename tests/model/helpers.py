"""Helpers of the model tests: images, vision-contract JSON bodies, a vision-tower pass counter."""

from __future__ import annotations

import base64
import io
import json

from PIL import Image


def product_photo(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (384, 288)) -> Image.Image:
    """A patterned image: flat colours make every prompt look alike to a random model."""
    image = Image.new("RGB", size, color)
    for y in range(0, size[1], 6):
        for x in range(0, size[0], 5):
            image.putpixel((x, y), (x % 256, y % 256, (x * y) % 256))
    return image


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def json_body(image: bytes, questions: list[str], **extra: object) -> str:
    return json.dumps({"image": base64.b64encode(image).decode(), "questions": questions, **extra})


class PassCounter:
    """Counts forward passes of the vision tower with a hook, for the length of a test."""

    def __init__(self) -> None:
        self.passes = 0

    def __call__(self, *_: object) -> None:
        self.passes += 1
