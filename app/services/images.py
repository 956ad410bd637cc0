"""Normalize an uploaded photo: identify, bound, decode small, orient, strip, re-encode, hash.

`normalize_image` is synchronous and CPU-bound; callers run it in a worker thread
(`anyio.to_thread.run_sync`) under the upload limiter. Its steps, in order:

1. Identify the format from the bytes with Pillow's own openers, restricted to JPEG, PNG and
   WebP (plus HEIF/HEIC when the optional `pillow_heif` is importable). The declared content
   type and file name are never consulted. Anything else is `UnsupportedImage` (415).
2. Read width x height from the header and refuse more than `max_pixels` *before* decoding
   (`ImageTooLarge`, 413). Pillow's own bomb guard is also mapped to 413 but not relied on:
   its limit is global, and it only warns below twice that limit.
3. Decode JPEGs in draft mode: libjpeg scales by 1/2, 1/4 or 1/8 in the DCT, to the smallest
   size that still covers `store_max_side`, so a 12 MP photo never exists at full size.
4. Downscale to `store_max_side`, convert any mode to RGB (CMYK, 16-bit grey, palette and
   alpha composited onto white, ...), convert an embedded ICC profile to sRGB, apply the
   EXIF orientation, and encode a JPEG from a fresh image that carries no EXIF, GPS, XMP,
   ICC profile or comment. Trailing data (a ZIP glued after the JPEG) never survives.
5. Make the model's copy from the stored-size image (not from the source again) and hash
   the stored bytes.

Every decoder failure (truncated data, a corrupt chunk, a bad header) ends as a 4xx
`AppError`: Pillow raises a zoo of exception types on hostile input, and none may escape.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from io import BytesIO
from typing import Final

from PIL import Image, ImageCms, UnidentifiedImageError

from app.domain.models import NormalizedImage
from app.errors import AppError, ImageTooLarge, UnsupportedImage

# Pillow format id -> our `source_format`. MPO is how Pillow names the multi-picture JPEGs many
# phones write; it is opened by the JPEG opener and is a JPEG for every purpose here.
_SOURCE_FORMATS: Final[dict[str, str]] = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "HEIF": "heif"}
_BASE_FORMATS: Final[tuple[str, ...]] = ("JPEG", "PNG", "WEBP")
_WHITE: Final = (255, 255, 255)
# Pillow's filters are true (antialiased) downscaling filters. For the big step (a DCT-halved
# 12 MP photo to 1024 px) HAMMING costs 40% of LANCZOS and lands within 2/255 RMS of a LANCZOS
# resize of the full-resolution photo (bench/preprocess.py); the small model copy affords BICUBIC.
_RESAMPLE: Final = Image.Resampling.HAMMING
_MODEL_RESAMPLE: Final = Image.Resampling.BICUBIC
# Downscale in two steps (a cheap box `reduce`, then the filter) once the source is 3x the target.
_REDUCING_GAP: Final = 3.0


@functools.cache
def allowed_formats() -> tuple[str, ...]:
    """The Pillow format ids we open: JPEG, PNG, WebP, and HEIF when `pillow_heif` is importable.

    `pillow_heif` is an optional extra (`product-analyzer[heic]`); its opener is registered once,
    on first use, never at import time.
    """
    try:
        pillow_heif = importlib.import_module("pillow_heif")
    except ImportError:
        return _BASE_FORMATS
    pillow_heif.register_heif_opener()
    return (*_BASE_FORMATS, "HEIF")


@functools.cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def normalize_image(
    data: bytes,
    *,
    max_pixels: int,
    store_max_side: int,
    model_side: int,
    quality: int,
) -> NormalizedImage:
    """Turn untrusted upload bytes into metadata-free, oriented, downscaled JPEGs.

    Args:
        data: the uploaded file, as received.
        max_pixels: refuse images whose header claims more pixels than this (413).
        store_max_side: long side of the stored JPEG (never upscaled).
        model_side: long side of the JPEG sent to the vision model (never upscaled).
        quality: JPEG quality of both outputs.

    Returns:
        The stored and model JPEGs, the stored JPEG's sha256 and size, and what the source was.

    Raises:
        UnsupportedImage: not an allowed format, or undecodable (415).
        ImageTooLarge: more pixels than `max_pixels` (413).
    """
    if not data:
        raise UnsupportedImage("The image is empty.")
    try:
        return _normalize(data, max_pixels, store_max_side, model_side, quality)
    except AppError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"The image has more than {max_pixels:,} pixels.") from exc
    except UnidentifiedImageError as exc:
        raise UnsupportedImage() from exc
    except Exception as exc:
        # Deliberately broad: on hostile bytes Pillow raises OSError, SyntaxError, ValueError,
        # struct.error, EOFError, IndexError, ... A file we cannot decode is the client's 415.
        raise UnsupportedImage("The image could not be decoded; it may be truncated or corrupt.") from exc


def _normalize(data: bytes, max_pixels: int, store_max_side: int, model_side: int, quality: int) -> NormalizedImage:
    # Pillow may warn here (DecompressionBombWarning) for sizes between its global limit and twice
    # it; the warning is harmless because our own limit below refuses the image anyway, and
    # `warnings.catch_warnings` would not be thread-safe in the worker threads this runs in.
    with Image.open(BytesIO(data), formats=allowed_formats()) as src:
        fmt = src.format or ""
        source_format = _SOURCE_FORMATS.get(fmt)
        if source_format is None:  # pragma: no cover - only the allowed openers ran
            raise UnsupportedImage()
        source_width, source_height = src.size
        if source_width * source_height > max_pixels:
            raise ImageTooLarge(
                f"The image is {source_width}x{source_height} pixels; the limit is {max_pixels:,} pixels."
            )

        target = _fit(src.size, store_max_side)
        if fmt in ("JPEG", "MPO"):
            # Let libjpeg scale in the DCT (1/2, 1/4, 1/8) to the smallest size still >= target.
            src.draft("RGB", target)
        # Multi-frame files (animated WebP, APNG, MPO) are positioned on their first frame.
        src.load()
        icc_profile = src.info.get("icc_profile")
        orientation = _orientation(src)
        # From here on every image is a new one: `src` is destroyed when the block exits.
        im = _downscale(src, target)

    im = _to_srgb(im, icc_profile if isinstance(icc_profile, bytes) else None)
    if orientation is not None:
        im = im.transpose(orientation)

    stored = _encode_jpeg(im, quality)
    if max(im.size) > model_side:
        for_model = _encode_jpeg(im.resize(_fit(im.size, model_side), _MODEL_RESAMPLE), quality)
    else:
        for_model = stored
    return NormalizedImage(
        stored=stored,
        for_model=for_model,
        sha256=hashlib.sha256(stored).hexdigest(),
        width=im.width,
        height=im.height,
        source_format=source_format,
        source_width=source_width,
        source_height=source_height,
    )


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The size that fits `size` into a `max_side` square, keeping the aspect ratio; never upscales."""
    width, height = size
    long_side = max(width, height)
    if long_side <= max_side:
        return width, height
    scale = max_side / long_side
    return max(1, round(width * scale)), max(1, round(height * scale))


_TRANSPOSE: Final[dict[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(src: Image.Image) -> Image.Transpose | None:
    """The transpose that displays `src` upright, from its EXIF (or XMP) orientation tag.

    This is `ImageOps.exif_transpose`'s table, applied later to the downscaled image so the
    rotation costs a 1 MP copy instead of a 12 MP one. A corrupt EXIF block is ignored: the
    photo is still a photo.
    """
    try:
        value = src.getexif().get(0x0112)  # ExifTags.Base.Orientation
    except Exception:  # corrupt EXIF: Pillow raises various types; ignore the tag, keep the photo
        return None
    return _TRANSPOSE.get(value) if isinstance(value, int) else None


def _downscale(src: Image.Image, target: tuple[int, int]) -> Image.Image:
    """A new image of size `target`, in RGB, L or CMYK (the modes colour management handles).

    RGB, L and CMYK resample correctly as they are, so they shrink first and convert later, on
    the small image. Palette, alpha, 1-bit and 16-bit images are flattened to RGB first.
    """
    im = src if src.mode in ("RGB", "L", "CMYK") else _flatten_to_rgb(src)
    if im.size != target:
        return im.resize(target, _RESAMPLE, reducing_gap=_REDUCING_GAP)
    return im.copy() if im is src else im


def _flatten_to_rgb(im: Image.Image) -> Image.Image:
    """RGB for the modes that cannot be resampled as they are: palette, alpha, 1-bit, 16-bit grey."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grey: scale 0..65535 to 0..255. `convert("L")` would clip everything above 255.
        return im.convert("I").point(lambda value: value / 256).convert("L").convert("RGB")
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        im = im.convert("RGBA")
    elif mode != "RGBA":
        im = im.convert("RGB")
    if im.mode != "RGBA":
        return im
    # Transparency becomes white, as on a product page; never the black hidden under alpha 0.
    flat = Image.new("RGB", im.size, _WHITE)
    flat.paste(im, mask=im.getchannel("A"))
    return flat


_ICC_SPACES: Final[dict[str, str]] = {"RGB": "RGB", "CMYK": "CMYK", "L": "GRAY"}


def _to_srgb(im: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """RGB pixels in sRGB: colour-manage through the embedded ICC profile where there is one.

    A profile that does not match the pixels' colour space, or that LittleCMS cannot read, is
    ignored and the pixels are converted as they are: a broken profile is no reason to refuse
    a photo. Pillow reads Adobe's inverted CMYK JPEGs as ordinary CMYK, so both kinds land here.
    """
    if icc_profile:
        try:
            source = ImageCms.ImageCmsProfile(BytesIO(icc_profile))
            if source.profile.xcolor_space.strip() == _ICC_SPACES.get(im.mode):
                converted = ImageCms.profileToProfile(im, source, _srgb_profile(), outputMode="RGB")
                if converted is not None:
                    return converted
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass
    return im if im.mode == "RGB" else im.convert("RGB")


def _encode_jpeg(im: Image.Image, quality: int) -> bytes:
    """Encode as baseline JPEG from a copy with empty `info`, so Pillow carries nothing over.

    Pillow's JPEG writer takes `exif`, `icc_profile`, `xmp` and `dpi` only from the save call,
    but the comment from `im.info`; clearing `info` makes "no metadata" not depend on that detail.
    """
    im.info = {}
    buf = BytesIO()
    im.save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


__all__ = ["allowed_formats", "normalize_image"]
