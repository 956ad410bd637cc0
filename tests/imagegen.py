"""Build the odd and hostile images the tests feed the upload path, in memory, with Pillow.

Nothing here touches the disk or the network: every function returns the file's bytes.
"""

from __future__ import annotations

import random
import struct
import zipfile
import zlib
from io import BytesIO

from PIL import Image, ImageCms, ImageDraw

RED = (220, 30, 30)
BLUE = (30, 30, 220)
WHITE = (255, 255, 255)


def _encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def product_image(size: tuple[int, int] = (1600, 1200), *, seed: int = 7) -> Image.Image:
    """A photo-like RGB picture: gradient backdrop, shapes and noise, so it does not compress to nothing."""
    width, height = size
    rng = random.Random(seed)
    # A smooth two-axis gradient, built small and scaled up (fast), as a table top under a lamp.
    base = Image.new("RGB", (64, 48))
    base.putdata([(90 + x * 2 + y, 80 + y * 3, 70 + (x + y) % 60) for y in range(48) for x in range(64)])
    im = base.resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(im)
    # The "product": a box with a label, and a few props.
    draw.rounded_rectangle(
        (width * 0.3, height * 0.25, width * 0.7, height * 0.8), radius=max(2, width // 40), fill=(150, 20, 30)
    )
    draw.rectangle((width * 0.38, height * 0.4, width * 0.62, height * 0.55), fill=(240, 230, 210))
    for _ in range(12):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(max(2, width // 50), max(3, width // 12))
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse((x - r, y - r, x + r, y + r), outline=colour, width=max(1, r // 8))
    # Sensor-like noise, blended in at low strength.
    noise = Image.effect_noise(size, 40).convert("RGB")
    return Image.blend(im, noise, 0.12)


def product_jpeg(size: tuple[int, int] = (1600, 1200), *, quality: int = 90, seed: int = 7) -> bytes:
    return _encode(product_image(size, seed=seed), "JPEG", quality=quality)


def half_red_half_blue(size: tuple[int, int] = (400, 200)) -> Image.Image:
    """Left half red, right half blue: after any rotation the colours say where the halves went."""
    im = Image.new("RGB", size, BLUE)
    im.paste(RED, (0, 0, size[0] // 2, size[1]))
    return im


def exif_rotated_jpeg_with_gps(size: tuple[int, int] = (400, 200), *, orientation: int = 6) -> bytes:
    """A landscape JPEG stored sideways, with EXIF orientation, GPS tags, an XMP packet and a comment.

    Orientation 6 means "rotate 90° clockwise to display": the displayed image is portrait,
    red on top (the stored left half), blue at the bottom.
    """
    im = half_red_half_blue(size)
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0110] = "PhoneModel X"  # Model
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"  # GPSLatitudeRef
    gps[2] = (45.0, 30.0, 12.5)  # GPSLatitude
    gps[3] = "W"  # GPSLongitudeRef
    gps[4] = (73.0, 34.0, 5.25)  # GPSLongitude
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="45,30.2N"/>'
        b"</rdf:RDF></x:xmpmeta>"
    )
    return _encode(im, "JPEG", quality=92, exif=exif.tobytes(), xmp=xmp, comment=b"secret-comment")


def jpeg_with_icc(size: tuple[int, int] = (300, 200)) -> bytes:
    """An RGB JPEG that carries an ICC profile (sRGB, built by LittleCMS)."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return _encode(product_image(size), "JPEG", quality=90, icc_profile=icc)


def cmyk_jpeg(size: tuple[int, int] = (300, 200)) -> bytes:
    """A CMYK JPEG as Photoshop writes them (Adobe APP14, inverted CMYK): left half red, right half blue."""
    return _encode(half_red_half_blue(size).convert("CMYK"), "JPEG", quality=95)


def png_16bit_gray(size: tuple[int, int] = (256, 64)) -> bytes:
    """A 16-bit grayscale PNG: a horizontal ramp from 0 to 65535."""
    width, height = size
    im = Image.new("I;16", size)
    row = [round(x * 65535 / (width - 1)) for x in range(width)]
    im.putdata(row * height)
    return _encode(im, "PNG")


def png_palette_transparent(size: tuple[int, int] = (200, 100)) -> bytes:
    """A palette PNG (tRNS chunk): left half transparent, right half opaque blue."""
    im = Image.new("P", size, 0)
    im.putpalette([0, 0, 0, *BLUE] + [0, 0, 0] * 254)
    im.paste(1, (size[0] // 2, 0, size[0], size[1]))
    return _encode(im, "PNG", transparency=0)


def png_la(size: tuple[int, int] = (200, 100)) -> bytes:
    """A grey+alpha PNG: left half transparent, right half opaque black."""
    im = Image.new("LA", size, (0, 255))
    im.paste((0, 0), (0, 0, size[0] // 2, size[1]))
    return _encode(im, "PNG")


def png_rgba(size: tuple[int, int] = (200, 100)) -> bytes:
    """An RGBA PNG: left half fully transparent (black underneath), right half opaque red."""
    im = Image.new("RGBA", size, (0, 0, 0, 0))
    im.paste((*RED, 255), (size[0] // 2, 0, size[0], size[1]))
    return _encode(im, "PNG")


def png_1bit(size: tuple[int, int] = (64, 32)) -> bytes:
    im = Image.new("1", size, 0)
    im.paste(1, (size[0] // 2, 0, size[0], size[1]))
    return _encode(im, "PNG")


def webp(size: tuple[int, int] = (300, 200), *, lossless: bool = False) -> bytes:
    return _encode(product_image(size), "WEBP", quality=80, lossless=lossless)


def animated_webp(size: tuple[int, int] = (120, 80)) -> bytes:
    """Two frames: red first, then blue."""
    first, second = Image.new("RGB", size, RED), Image.new("RGB", size, BLUE)
    return _encode(first, "WEBP", save_all=True, append_images=[second], duration=100, lossless=True)


def animated_png(size: tuple[int, int] = (120, 80)) -> bytes:
    """An APNG of two frames: red first, then blue."""
    first, second = Image.new("RGB", size, RED), Image.new("RGB", size, BLUE)
    return _encode(first, "PNG", save_all=True, append_images=[second], duration=100)


def gif(size: tuple[int, int] = (64, 64)) -> bytes:
    return _encode(Image.new("RGB", size, RED), "GIF")


def bmp(size: tuple[int, int] = (64, 64)) -> bytes:
    return _encode(Image.new("RGB", size, RED), "BMP")


def tiff(size: tuple[int, int] = (64, 64)) -> bytes:
    return _encode(Image.new("RGB", size, RED), "TIFF")


def svg() -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
        b'<rect width="100" height="100" fill="red"/></svg>\n'
    )


def text_renamed_jpg() -> bytes:
    """What a client sends when someone renames notes.txt to photo.jpg."""
    return b"Shopping list:\n- milk\n- eggs\n" * 20


def empty() -> bytes:
    return b""


def truncated_jpeg(size: tuple[int, int] = (800, 600), *, keep: float = 0.5) -> bytes:
    """A JPEG cut off part-way through its entropy-coded data (an interrupted upload)."""
    data = product_jpeg(size)
    return data[: int(len(data) * keep)]


def jpeg_with_zip(size: tuple[int, int] = (400, 300)) -> tuple[bytes, bytes]:
    """A JPEG with a ZIP archive appended (a polyglot); returns (the file, the ZIP tail)."""
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("payload/readme.txt", "HIDDEN-PAYLOAD-MARKER " * 50)
    tail = buf.getvalue()
    return product_jpeg(size) + tail, tail


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_pixel_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A 1-bit grayscale PNG whose header claims width x height pixels, all black: tiny on disk.

    The IDAT stream is real (every row is a filter byte plus zeros), so a decoder that trusted
    the header would really allocate and inflate all of it.
    """
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit, grayscale
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_header_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF0 frame header is patched to claim width x height."""
    data = bytearray(product_jpeg((64, 48)))
    sof = data.find(b"\xff\xc0")
    assert sof > 0, "baseline JPEG expected"
    # SOF0: marker(2) length(2) precision(1) height(2) width(2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


# Forms: multipart/form-data bodies built by hand, so tests control every byte -------------------

BOUNDARY = "----test-boundary-7MA4YWxkTrZu0gW"
Part = tuple[str, bytes] | tuple[str, bytes, str | None, str | None]


def multipart(parts: list[Part], *, boundary: str = BOUNDARY) -> bytes:
    """Encode `(name, value)` text parts and `(name, value, filename, content_type)` file parts."""
    out = bytearray()
    for part in parts:
        name, value = part[0], part[1]
        filename = part[2] if len(part) > 2 else None
        content_type = part[3] if len(part) > 3 else None
        out += f"--{boundary}\r\n".encode()
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if content_type is not None:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + value + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def content_type(boundary: str = BOUNDARY) -> str:
    return f"multipart/form-data; boundary={boundary}"
