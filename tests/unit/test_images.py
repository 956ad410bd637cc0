"""normalize_image on ordinary, odd and hostile files, all built in memory by tests.imagegen."""

from __future__ import annotations

import hashlib
import random
import sys
import types
from io import BytesIO
from typing import Any

import pytest
from PIL import Image, ImageFile, ImageOps

from app.domain.models import NormalizedImage
from app.errors import AppError, ImageTooLarge, UnsupportedImage
from app.services.images import allowed_formats, normalize_image
from tests import imagegen

pytestmark = pytest.mark.unit

LIMITS = {"max_pixels": 40_000_000, "store_max_side": 1024, "model_side": 384, "quality": 85}


def normalize(data: bytes, **overrides: int) -> NormalizedImage:
    return normalize_image(data, **{**LIMITS, **overrides})


def reopen(jpeg: bytes) -> Image.Image:
    im = Image.open(BytesIO(jpeg))
    assert im.format == "JPEG"
    im.load()
    return im


def near(actual: Any, expected: Any, tolerance: int = 24) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def assert_metadata_free(jpeg: bytes) -> None:
    im = reopen(jpeg)
    assert len(im.getexif()) == 0
    assert not set(im.info) & {"exif", "icc_profile", "xmp", "comment", "adobe", "photoshop", "mp"}
    assert b"Exif\x00\x00" not in jpeg
    assert b"xmpmeta" not in jpeg
    assert b"http://ns.adobe.com/xap" not in jpeg
    assert b"ICC_PROFILE" not in jpeg
    assert b"PhoneMaker" not in jpeg
    assert b"secret-comment" not in jpeg


# Ordinary photos ---------------------------------------------------------------------------


def test_big_jpeg_is_downscaled_hashed_and_stripped() -> None:
    data = imagegen.product_jpeg((1600, 1200))
    result = normalize(data)

    assert (result.width, result.height) == (1024, 768)
    assert (result.source_width, result.source_height) == (1600, 1200)
    assert result.source_format == "jpeg"
    assert result.content_type == "image/jpeg"
    assert result.sha256 == hashlib.sha256(result.stored).hexdigest()
    stored, for_model = reopen(result.stored), reopen(result.for_model)
    assert stored.mode == "RGB"
    assert stored.size == (1024, 768)
    assert for_model.mode == "RGB"
    assert for_model.size == (384, 288)
    assert len(result.for_model) < len(result.stored)
    assert_metadata_free(result.stored)
    assert_metadata_free(result.for_model)


def test_portrait_long_side_is_capped() -> None:
    result = normalize(imagegen.product_jpeg((900, 1600)), store_max_side=800, model_side=200)
    assert (result.width, result.height) == (450, 800)
    assert reopen(result.for_model).size == (112, 200)


def test_small_image_is_not_upscaled() -> None:
    result = normalize(imagegen.product_jpeg((300, 200)))
    assert (result.width, result.height) == (300, 200)
    assert result.for_model == result.stored


def test_huge_jpeg_decodes_through_draft_mode() -> None:
    data = imagegen.product_jpeg((4000, 3000), quality=80)
    result = normalize(data)
    assert (result.width, result.height) == (1024, 768)
    # The picture survives the DCT scaling: the red "product" box is in the middle.
    assert near(reopen(result.stored).getpixel((512, 600)), (150, 20, 30), tolerance=60)


def test_progressive_jpeg() -> None:
    buf = BytesIO()
    imagegen.product_image((2000, 1500)).save(buf, "JPEG", quality=85, progressive=True)
    result = normalize(buf.getvalue())
    assert (result.width, result.height) == (1024, 768)


def test_grayscale_jpeg_becomes_rgb() -> None:
    buf = BytesIO()
    imagegen.product_image((640, 480)).convert("L").save(buf, "JPEG")
    assert reopen(normalize(buf.getvalue()).stored).mode == "RGB"


def test_webp() -> None:
    result = normalize(imagegen.webp((1200, 800)))
    assert result.source_format == "webp"
    assert (result.width, result.height) == (1024, 683)


# Orientation and metadata ------------------------------------------------------------------


def test_exif_orientation_is_applied_and_gps_exif_xmp_comment_are_dropped() -> None:
    data = imagegen.exif_rotated_jpeg_with_gps((400, 200), orientation=6)
    assert b"Exif" in data
    assert b"xmpmeta" in data
    assert b"secret-comment" in data

    result = normalize(data)

    # Orientation 6 turns the stored landscape into a portrait: left (red) half on top.
    assert (result.width, result.height) == (200, 400)
    stored = reopen(result.stored)
    assert near(stored.getpixel((100, 50)), imagegen.RED)
    assert near(stored.getpixel((100, 350)), imagegen.BLUE)
    assert_metadata_free(result.stored)
    assert_metadata_free(result.for_model)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow_exif_transpose(orientation: int) -> None:
    # Four coloured quadrants, so every flip and rotation is distinguishable.
    quadrants = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    im = Image.new("RGB", (160, 80))
    for i, colour in enumerate(quadrants):
        x, y = (i % 2) * 80, (i // 2) * 40
        im.paste(colour, (x, y, x + 80, y + 40))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = BytesIO()
    im.save(buf, "JPEG", quality=95, exif=exif.tobytes())

    reference = ImageOps.exif_transpose(Image.open(BytesIO(buf.getvalue())))
    ours = reopen(normalize(buf.getvalue()).stored)

    assert ours.size == reference.size
    w, h = ours.size
    for point in [(w // 4, h // 4), (3 * w // 4, h // 4), (w // 4, 3 * h // 4), (3 * w // 4, 3 * h // 4)]:
        assert near(ours.getpixel(point), reference.getpixel(point)), point


def test_icc_profile_is_not_carried_over() -> None:
    data = imagegen.jpeg_with_icc()
    assert "icc_profile" in Image.open(BytesIO(data)).info
    result = normalize(data)
    assert_metadata_free(result.stored)


def test_broken_icc_profile_is_ignored() -> None:
    buf = BytesIO()
    imagegen.product_image((300, 200)).save(buf, "JPEG", icc_profile=b"not a profile" * 20)
    result = normalize(buf.getvalue())
    assert_metadata_free(result.stored)


@pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")  # Pillow on corrupt EXIF
def test_corrupt_exif_is_ignored() -> None:
    buf = BytesIO()
    imagegen.product_image((300, 200)).save(buf, "JPEG", exif=b"Exif\x00\x00MM\x00*\xff\xff\xff\xff garbage")
    result = normalize(buf.getvalue())
    assert (result.width, result.height) == (300, 200)
    assert_metadata_free(result.stored)


def test_appended_zip_is_not_in_the_output() -> None:
    data, tail = imagegen.jpeg_with_zip()
    assert data.endswith(tail)
    result = normalize(data)
    for out in (result.stored, result.for_model):
        assert tail not in out
        assert b"PK\x03\x04" not in out
        assert b"HIDDEN-PAYLOAD-MARKER" not in out
        assert out.endswith(b"\xff\xd9")


# Modes --------------------------------------------------------------------------------------


def test_cmyk_jpeg_adobe_inverted() -> None:
    data = imagegen.cmyk_jpeg((300, 200))
    assert Image.open(BytesIO(data)).mode == "CMYK"
    assert b"Adobe" in data  # Photoshop-style APP14 marker: the inverted CMYK variant
    stored = reopen(normalize(data).stored)
    assert stored.mode == "RGB"
    assert near(stored.getpixel((50, 100)), imagegen.RED, tolerance=40)
    assert near(stored.getpixel((250, 100)), imagegen.BLUE, tolerance=40)


def test_16bit_grayscale_png_is_scaled_not_clipped() -> None:
    result = normalize(imagegen.png_16bit_gray((256, 64)))
    assert result.source_format == "png"
    stored = reopen(result.stored)
    assert stored.mode == "RGB"
    assert near(stored.getpixel((1, 32)), (0, 0, 0), tolerance=8)
    assert near(stored.getpixel((128, 32)), (128, 128, 128), tolerance=10)  # clipping would make this 255
    assert near(stored.getpixel((254, 32)), (255, 255, 255), tolerance=8)


@pytest.mark.parametrize(
    ("make", "left", "right"),
    [
        pytest.param(imagegen.png_palette_transparent, imagegen.WHITE, imagegen.BLUE, id="palette-trns"),
        pytest.param(imagegen.png_la, imagegen.WHITE, (0, 0, 0), id="LA"),
        pytest.param(imagegen.png_rgba, imagegen.WHITE, imagegen.RED, id="RGBA"),
        pytest.param(imagegen.png_1bit, (0, 0, 0), imagegen.WHITE, id="1-bit"),
    ],
)
def test_png_modes_become_rgb_with_transparency_on_white(
    make: object, left: tuple[int, int, int], right: tuple[int, int, int]
) -> None:
    assert callable(make)
    stored = reopen(normalize(make()).stored)
    assert stored.mode == "RGB"
    w, h = stored.size
    assert near(stored.getpixel((w // 4, h // 2)), left)
    assert near(stored.getpixel((3 * w // 4, h // 2)), right)


@pytest.mark.parametrize("make", [imagegen.animated_webp, imagegen.animated_png], ids=["webp", "apng"])
def test_animations_keep_the_first_frame(make: object) -> None:
    assert callable(make)
    stored = reopen(normalize(make()).stored)
    assert near(stored.getpixel((10, 10)), imagegen.RED)


# Refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(imagegen.empty(), id="empty"),
        pytest.param(imagegen.gif(), id="gif"),
        pytest.param(imagegen.bmp(), id="bmp"),
        pytest.param(imagegen.tiff(), id="tiff"),
        pytest.param(imagegen.svg(), id="svg"),
        pytest.param(imagegen.text_renamed_jpg(), id="text-as-jpg"),
        pytest.param(imagegen.truncated_jpeg(), id="truncated-jpeg"),
        pytest.param(imagegen.product_jpeg((64, 64))[:200], id="jpeg-header-only"),
        pytest.param(imagegen.webp()[:100], id="truncated-webp"),
        pytest.param(imagegen.png_rgba()[:-30], id="png-without-iend"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, id="png-garbage"),
        pytest.param(b"\xff\xd8\xff" + b"\x00" * 40, id="jpeg-garbage"),
    ],
)
def test_unsupported_or_undecodable_is_415(data: bytes) -> None:
    with pytest.raises(UnsupportedImage) as info:
        normalize(data)
    assert info.value.status_code == 415


def test_pixel_bomb_png_is_413_without_decoding() -> None:
    data = imagegen.png_pixel_bomb(20_000, 20_000)
    assert len(data) < 100_000  # tiny on disk, 400 MP in the header
    with pytest.raises(ImageTooLarge) as info:
        normalize(data)
    assert info.value.status_code == 413


def test_header_over_our_limit_but_under_pillows_is_413() -> None:
    data = imagegen.jpeg_header_claiming(10_000, 5_000)  # 50 MP: Pillow alone would not even warn
    with pytest.raises(ImageTooLarge) as info:
        normalize(data)
    assert "40,000,000 pixels" in info.value.detail


def test_max_pixels_is_ours_not_pillows() -> None:
    with pytest.raises(ImageTooLarge):
        normalize(imagegen.product_jpeg((400, 300)), max_pixels=100_000)
    assert normalize(imagegen.product_jpeg((400, 300)), max_pixels=120_000).width == 400


@pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")  # Pillow on corrupt EXIF
def test_mutated_files_never_escape_as_non_app_errors() -> None:
    """Flip, cut and splice bytes of valid files: each result is a success or a 4xx AppError."""
    rng = random.Random(1234)
    seeds = [
        imagegen.product_jpeg((200, 150)),
        imagegen.png_rgba((60, 40)),
        imagegen.png_16bit_gray((64, 16)),
        imagegen.webp((120, 80)),
        imagegen.exif_rotated_jpeg_with_gps((80, 40)),
    ]
    statuses: list[int] = []
    for seed in seeds:
        for _ in range(40):
            data = bytearray(seed)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            if rng.random() < 0.3:
                data = data[: rng.randrange(8, len(data))]
            try:
                normalize(bytes(data))
            except AppError as exc:
                statuses.append(exc.status_code)
            else:
                statuses.append(200)
    assert set(statuses) <= {200, 413, 415}
    assert 415 in statuses


# HEIF, optional ------------------------------------------------------------------------------


def test_heif_is_allowed_only_when_pillow_heif_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    allowed_formats.cache_clear()
    try:
        monkeypatch.setitem(sys.modules, "pillow_heif", None)  # "not installed"
        assert "HEIF" not in allowed_formats()

        allowed_formats.cache_clear()
        registered: list[bool] = []
        fake = types.ModuleType("pillow_heif")
        fake.register_heif_opener = lambda: registered.append(True)  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "pillow_heif", fake)
        assert allowed_formats() == ("JPEG", "PNG", "WEBP", "HEIF")
        allowed_formats()
        assert registered == [True]  # registered once, lazily
    finally:
        allowed_formats.cache_clear()


def test_normalizing_leaves_pillows_global_settings_alone() -> None:
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    with pytest.raises(ImageTooLarge):
        normalize(imagegen.product_jpeg((400, 300)), max_pixels=1_000)
    with pytest.raises(UnsupportedImage):
        normalize(imagegen.truncated_jpeg())
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
