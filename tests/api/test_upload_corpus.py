"""The corpus of odd and hostile uploads, through the whole app over an ASGI client.

Every case asserts the status, the stable error code, the error body's shape, and (for the
accepted ones) what actually reached the store: oriented, metadata-free JPEG bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from io import BytesIO
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from PIL import Image

from app.bootstrap import create_app
from app.config import MAX_CLIENT_QUESTIONS, MAX_HINTS_CHARS, MAX_QUESTION_CHARS, Settings
from app.domain.ports import Backends
from tests import imagegen
from tests.fakes import FakeStore, FakeVision, FakeWriter
from tests.imagegen import BOUNDARY, Part, multipart

pytestmark = pytest.mark.api

SMALL_LIMIT = 100_000  # bytes, for the oversized-upload cases


@pytest.fixture
async def small_client(settings: Settings, backends: Backends) -> AsyncIterator[httpx.AsyncClient]:
    """Like `client`, with MAX_UPLOAD_BYTES lowered so "too large" is quick to send."""
    app = create_app(settings.model_copy(update={"max_upload_bytes": SMALL_LIMIT}), backends=backends)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


async def post_form(client: httpx.AsyncClient, parts: list[Part], **headers: str) -> httpx.Response:
    return await client.post(
        "/analyze",
        content=multipart(parts),
        headers={"Content-Type": imagegen.content_type(), **headers},
    )


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "request_id"}
    assert body["error"] == code
    assert body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return body


def stored_image(store: FakeStore) -> tuple[bytes, Image.Image]:
    assert len(store.objects) == 1
    (data, content_type), *_ = store.objects.values()
    assert content_type == "image/jpeg"
    im = Image.open(BytesIO(data))
    im.load()
    return data, im


def assert_metadata_free(data: bytes, im: Image.Image) -> None:
    assert len(im.getexif()) == 0
    assert not set(im.info) & {"exif", "icc_profile", "xmp", "comment"}
    assert b"Exif\x00\x00" not in data
    assert b"xmpmeta" not in data
    assert b"PhoneMaker" not in data


def near(actual: Any, expected: tuple[int, int, int], tolerance: int = 30) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


# Refused uploads ----------------------------------------------------------------------------

REFUSED: list[Any] = [
    pytest.param(
        [("image", imagegen.truncated_jpeg(), "photo.jpg", "image/jpeg")], 415, "unsupported_image", id="truncated"
    ),
    pytest.param([("image", b"", "photo.jpg", "image/jpeg")], 400, "missing_image", id="empty"),
    pytest.param(
        [("image", imagegen.text_renamed_jpg(), "photo.jpg", "image/jpeg")], 415, "unsupported_image", id="text-as-jpg"
    ),
    pytest.param([("image", imagegen.svg(), "logo.svg", "image/svg+xml")], 415, "unsupported_image", id="svg"),
    pytest.param([("image", imagegen.gif(), "anim.gif", "image/gif")], 415, "unsupported_image", id="gif"),
    pytest.param([("image", imagegen.bmp(), "photo.jpg", "image/jpeg")], 415, "unsupported_image", id="bmp-as-jpg"),
    pytest.param(
        [("image", imagegen.png_pixel_bomb(), "bomb.png", "image/png")], 413, "image_too_large", id="pixel-bomb"
    ),
    pytest.param(
        [("image", imagegen.jpeg_header_claiming(10_000, 5_000), "big.jpg", "image/jpeg")],
        413,
        "image_too_large",
        id="pixels-over-our-limit",
    ),
    pytest.param(
        [("file", imagegen.product_jpeg((320, 240)), "photo.jpg", "image/jpeg")],
        400,
        "missing_image",
        id="wrong-field-name",
    ),
    pytest.param([("questions", b"What brand?")], 400, "missing_image", id="no-image-at-all"),
    pytest.param(
        [
            ("image", imagegen.product_jpeg((64, 48)), "a.jpg", None),
            ("image", imagegen.product_jpeg((64, 48)), "b.jpg", None),
        ],
        422,
        "invalid_field",
        id="two-images",
    ),
    pytest.param(
        [("image", imagegen.product_jpeg((64, 48)), "a.jpg", None)]
        + [("questions", f"Question {i}?".encode()) for i in range(MAX_CLIENT_QUESTIONS + 1)],
        422,
        "invalid_field",
        id="too-many-questions",
    ),
    pytest.param(
        [("image", imagegen.product_jpeg((64, 48)), "a.jpg", None), ("questions", b"q" * (MAX_QUESTION_CHARS + 1))],
        422,
        "invalid_field",
        id="question-too-long",
    ),
    pytest.param(
        [("image", imagegen.product_jpeg((64, 48)), "a.jpg", None), ("questions", b"   ")],
        422,
        "invalid_field",
        id="blank-question",
    ),
    pytest.param(
        [("image", imagegen.product_jpeg((64, 48)), "a.jpg", None), ("hints", b"h" * (MAX_HINTS_CHARS + 1))],
        422,
        "invalid_field",
        id="hints-too-long",
    ),
    pytest.param(
        [("image", imagegen.product_jpeg((64, 48)), "a.jpg", None), ("locale", b"english please")],
        422,
        "invalid_field",
        id="bad-locale",
    ),
    pytest.param(
        [("image", imagegen.product_jpeg((64, 48)), "a.jpg", None), ("hints", b"caf\xe9 \xff")],
        422,
        "invalid_field",
        id="hints-not-utf8",
    ),
]


@pytest.mark.parametrize(("parts", "status", "code"), REFUSED)
async def test_refused_upload(
    client: httpx.AsyncClient, backends: Backends, parts: list[Part], status: int, code: str
) -> None:
    response = await post_form(client, parts)
    assert_error(response, status, code)
    assert isinstance(backends.store, FakeStore)
    assert backends.store.objects == {}  # nothing refused is ever stored
    assert isinstance(backends.vision, FakeVision)
    assert backends.vision.calls == []


def test_refused_cases_are_distinct() -> None:
    ids = [param.id for param in REFUSED]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b'{"image": "aGVsbG8="}', "application/json", id="json-body"),
        pytest.param(b"image=abc", "application/x-www-form-urlencoded", id="urlencoded"),
        pytest.param(imagegen.product_jpeg((64, 48)), "image/jpeg", id="raw-jpeg-body"),
        pytest.param(multipart([("image", b"x", "a.jpg", None)]), "multipart/form-data", id="no-boundary"),
        pytest.param(
            multipart([("image", b"x", "a.jpg", None)]), "multipart/form-data; boundary=", id="empty-boundary"
        ),
        pytest.param(
            multipart([("image", b"x", "a.jpg", None)]),
            f"multipart/form-data; boundary={'b' * 300}",
            id="boundary-too-long",
        ),
        pytest.param(b"this is not a multipart body", imagegen.content_type(), id="broken-multipart"),
        pytest.param(
            multipart([("image", imagegen.product_jpeg((64, 48)), "a.jpg", None)])[:-60],
            imagegen.content_type(),
            id="cut-before-closing-boundary",
        ),
        pytest.param(
            f"--{BOUNDARY}\r\nX-Nothing: here\r\n\r\nabc\r\n--{BOUNDARY}--\r\n".encode(),
            imagegen.content_type(),
            id="part-without-disposition",
        ),
        pytest.param(b"", imagegen.content_type(), id="empty-body"),
    ],
)
async def test_malformed_request(client: httpx.AsyncClient, content: bytes, content_type: str) -> None:
    response = await client.post("/analyze", content=content, headers={"Content-Type": content_type})
    assert_error(response, 400, "malformed_request")


async def test_no_content_type_is_malformed(client: httpx.AsyncClient) -> None:
    response = await client.post("/analyze", content=b"abc")
    assert_error(response, 400, "malformed_request")


# Size caps, enforced while streaming ---------------------------------------------------------


class CountingBody:
    """A streaming request body that counts how many chunks the server pulled."""

    def __init__(self, head: bytes, chunk: bytes, chunks: int, tail: bytes) -> None:
        self.head, self.chunk, self.chunks, self.tail = head, chunk, chunks, tail
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.pulled += 1
        yield self.head
        for _ in range(self.chunks):
            self.pulled += 1
            yield self.chunk
        self.pulled += 1
        yield self.tail

    @property
    def total(self) -> int:
        return len(self.head) + len(self.chunk) * self.chunks + len(self.tail)


def huge_image_body(chunks: int = 2_000, chunk_size: int = 16 * 1024) -> CountingBody:
    """A multipart body whose `image` part is a JPEG start followed by `chunks` x `chunk_size` bytes."""
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="image"; filename="huge.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + b"\xff\xd8\xff\xe0"
    return CountingBody(head, b"\x00" * chunk_size, chunks, f"\r\n--{BOUNDARY}--\r\n".encode())


async def test_oversized_image_is_413_before_the_body_is_read(
    small_client: httpx.AsyncClient, backends: Backends
) -> None:
    body = huge_image_body()  # ~32 MB offered, chunked (no Content-Length)
    response = await small_client.post("/analyze", content=body, headers={"Content-Type": imagegen.content_type()})
    assert_error(response, 413, "image_too_large")
    # The cap is 100 kB = about 7 chunks of 16 KiB; the server stopped pulling right there.
    assert body.pulled <= SMALL_LIMIT // len(body.chunk) + 3
    assert body.pulled < body.chunks // 100
    assert isinstance(backends.store, FakeStore)
    assert backends.store.objects == {}


async def test_content_length_over_the_cap_is_413_without_reading(small_client: httpx.AsyncClient) -> None:
    body = huge_image_body(chunks=100)
    response = await small_client.post(
        "/analyze",
        content=body,
        headers={"Content-Type": imagegen.content_type(), "Content-Length": str(body.total)},
    )
    assert_error(response, 413, "image_too_large")
    assert body.pulled == 0


async def test_bad_content_length_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/analyze",
        content=CountingBody(b"", b"", 0, b""),
        headers={"Content-Type": imagegen.content_type(), "Content-Length": "lots"},
    )
    assert_error(response, 400, "malformed_request")


async def test_padding_outside_the_image_counts_against_the_body_cap(small_client: httpx.AsyncClient) -> None:
    # Endless preamble newlines are skipped by the multipart parser; the body cap still stops them.
    body = CountingBody(b"\r\n", b"\r\n" * 8192, 1_000, b"")
    response = await small_client.post("/analyze", content=body, headers={"Content-Type": imagegen.content_type()})
    assert_error(response, 413, "image_too_large")
    assert body.pulled < 100


async def test_image_just_under_the_cap_is_read_in_full(small_client: httpx.AsyncClient) -> None:
    data = imagegen.product_jpeg((400, 300), quality=90)
    data += b"\x00" * (SMALL_LIMIT - len(data))  # trailing bytes after EOI are ignored by the decoder
    assert len(data) == SMALL_LIMIT
    response = await post_form(small_client, [("image", data, "a.jpg", "image/jpeg")])
    assert response.status_code == 200, response.text
    response = await post_form(small_client, [("image", data + b"\x00", "a.jpg", "image/jpeg")])
    assert_error(response, 413, "image_too_large")


# Accepted uploads ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "filename", "declared"),
    [
        pytest.param(imagegen.cmyk_jpeg(), "cmyk.jpg", "image/jpeg", id="cmyk"),
        pytest.param(imagegen.png_16bit_gray(), "depth.png", "image/png", id="16-bit-png"),
        pytest.param(imagegen.png_palette_transparent(), "logo.png", "image/png", id="palette-alpha"),
        pytest.param(imagegen.png_la(), "la.png", "image/png", id="LA-png"),
        pytest.param(imagegen.webp(), "photo.webp", "image/webp", id="webp"),
        pytest.param(imagegen.animated_webp(), "anim.webp", "image/webp", id="animated-webp"),
        pytest.param(imagegen.png_rgba(), "photo.gif", "image/gif", id="png-declared-as-gif"),
        pytest.param(imagegen.product_jpeg((2400, 1800)), "big.jpg", "application/octet-stream", id="big-jpeg"),
    ],
)
async def test_accepted_upload(
    client: httpx.AsyncClient, backends: Backends, data: bytes, filename: str, declared: str
) -> None:
    response = await post_form(client, [("image", data, filename, declared)])
    assert response.status_code == 200, response.text
    stored, im = stored_image(backends.store)  # type: ignore[arg-type]
    assert im.format == "JPEG"
    assert im.mode == "RGB"
    assert max(im.size) <= 1024
    assert_metadata_free(stored, im)
    image = response.json()["image"]
    assert image["content_type"] == "image/jpeg"
    assert (image["width"], image["height"]) == im.size
    assert image["bytes"] == len(stored)


async def test_exif_rotated_photo_with_gps_is_stored_upright_and_clean(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    data = imagegen.exif_rotated_jpeg_with_gps((400, 200), orientation=6)
    response = await post_form(client, [("image", data, "IMG_0001.JPG", "image/jpeg")])
    assert response.status_code == 200, response.text

    stored, im = stored_image(backends.store)  # type: ignore[arg-type]
    assert im.size == (200, 400)  # portrait after orientation 6
    assert near(im.getpixel((100, 50)), imagegen.RED)
    assert near(im.getpixel((100, 350)), imagegen.BLUE)
    assert_metadata_free(stored, im)
    assert b"secret-comment" not in stored
    # What the model saw was made from the same upright image.
    assert isinstance(backends.vision, FakeVision)
    model_im = Image.open(BytesIO(backends.vision.calls[0][0]))
    assert model_im.height > model_im.width
    assert len(model_im.getexif()) == 0


async def test_jpeg_with_zip_appended_is_stored_without_the_zip(client: httpx.AsyncClient, backends: Backends) -> None:
    data, tail = imagegen.jpeg_with_zip()
    response = await post_form(client, [("image", data, "innocent.jpg", "image/jpeg")])
    assert response.status_code == 200, response.text
    stored, _ = stored_image(backends.store)  # type: ignore[arg-type]
    assert tail not in stored
    assert b"PK\x03\x04" not in stored
    assert b"HIDDEN-PAYLOAD-MARKER" not in stored


async def test_fields_reach_the_model_and_the_writer(client: httpx.AsyncClient, backends: Backends) -> None:
    parts: list[Part] = [
        ("questions", b"  Is it waterproof?  "),
        ("image", imagegen.product_jpeg((800, 600)), "p.jpg", "image/jpeg"),
        ("questions", b"Quelle taille ?"),
        ("locale", b"fr-CA"),
        ("hints", "  Jamais utilisé, boîte d'origine  ".encode()),
        ("utm_source", b"ignored"),
    ]
    response = await post_form(client, parts)
    assert response.status_code == 200, response.text
    assert isinstance(backends.vision, FakeVision)
    assert isinstance(backends.writer, FakeWriter)
    _, questions = backends.vision.calls[0]
    assert "Is it waterproof?" in questions
    assert "Quelle taille ?" in questions
    _, locale, hints = backends.writer.calls[0]
    assert locale == "fr-CA"
    assert hints == "Jamais utilisé, boîte d'origine"
    assert response.json()["timings_ms"]["upload"] > 0


async def test_a_real_client_encoding_works(client: httpx.AsyncClient, backends: Backends) -> None:
    """httpx's own multipart encoder (as a mobile or web client would send it), not our builder."""
    response = await client.post(
        "/analyze",
        files={"image": ("photo.jpg", imagegen.product_jpeg((640, 480)), "image/jpeg")},
        data={"questions": ["What brand is it?", "Is it new?"], "locale": "en"},
    )
    assert response.status_code == 200, response.text
    assert isinstance(backends.writer, FakeWriter)
    assert backends.writer.calls[0][1] == "en"


async def test_docs_describe_the_form(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    body = spec["paths"]["/analyze"]["post"]["requestBody"]
    schema = body["content"]["multipart/form-data"]["schema"]
    assert schema["properties"]["image"]["format"] == "binary"
    assert schema["required"] == ["image"]
