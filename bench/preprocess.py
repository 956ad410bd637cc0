"""Benchmark the upload preprocessing: `normalize_image` against a naive Pillow pipeline.

    python -m bench.preprocess [--runs 20] [--out bench/results/preprocess.json]

Builds a realistic 12 MP phone photo in memory (4000x3000, gradients, shapes, sensor noise,
EXIF orientation 6), then times, in this one process pinned to one core:

- ours:  `app.services.images.normalize_image` (draft-mode decode, downscale, orient, strip, encode);
- naive: full decode, `ImageOps.exif_transpose`, `convert("RGB")`, LANCZOS to 1024 and to 384, save both.

Prints a table and writes the figures with the machine's description as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
from io import BytesIO
from pathlib import Path
from typing import Any

import PIL
from PIL import Image, ImageChops, ImageDraw, ImageOps, ImageStat

from app.config import Settings
from app.services.images import normalize_image
from bench.stats import percentile, timed

DEFAULT_OUT = Path(__file__).parent / "results" / "preprocess.json"


def phone_photo(size: tuple[int, int] = (4000, 3000), *, seed: int = 42) -> bytes:
    """A 12 MP JPEG that compresses like a photo: smooth light, hard edges, texture and noise."""
    width, height = size
    rng = random.Random(seed)
    small = Image.new("RGB", (80, 60))
    small.putdata([(60 + x + y, 70 + 2 * y, 90 + (x * 3) % 120) for y in range(60) for x in range(80)])
    im = small.resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(im)
    draw.rounded_rectangle((1200, 700, 2800, 2500), radius=80, fill=(170, 40, 35), outline=(40, 10, 10), width=12)
    draw.rectangle((1500, 1200, 2500, 1700), fill=(235, 228, 210))
    for row in range(6):  # "label text": fine high-contrast detail
        for col in range(40):
            if rng.random() < 0.7:
                x, y = 1540 + col * 23, 1240 + row * 72
                draw.rectangle((x, y, x + 15, y + 44), fill=(20, 20, 25))
    for _ in range(40):
        x, y, r = rng.randrange(width), rng.randrange(height), rng.randrange(30, 300)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse((x - r, y - r, x + r, y + r), outline=colour, width=rng.randrange(2, 20))
    noise = Image.effect_noise(size, 48).convert("RGB")
    im = Image.blend(im, noise, 0.10)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, as phones do
    exif[0x010F] = "BenchPhone"
    buf = BytesIO()
    im.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def naive(data: bytes, *, store_max_side: int, model_side: int, quality: int) -> tuple[bytes, bytes]:
    """What one writes first: decode everything, then shrink twice from full size."""
    im = Image.open(BytesIO(data))
    im.load()
    im = ImageOps.exif_transpose(im).convert("RGB")
    outputs = []
    for side in (store_max_side, model_side):
        scale = side / max(im.size)
        resized = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
        buf = BytesIO()
        resized.save(buf, "JPEG", quality=quality)
        outputs.append(buf.getvalue())
    return outputs[0], outputs[1]


def rms_difference(a: bytes, b: bytes) -> float:
    """Root-mean-square pixel difference (0-255 scale, averaged over RGB) of two same-size JPEGs."""
    first, second = Image.open(BytesIO(a)).convert("RGB"), Image.open(BytesIO(b)).convert("RGB")
    return round(statistics.fmean(ImageStat.Stat(ImageChops.difference(first, second)).rms), 2)


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(samples), 2),
        "p95_ms": round(percentile(samples, 0.95), 2),
        "min_ms": round(min(samples), 2),
    }


def pin_to_one_core() -> int | None:
    """Pin this process to one CPU where the OS allows it; returns that CPU or None."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    cpu = pin_to_one_core()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    limits = {"store_max_side": settings.store_max_side, "model_side": settings.model_image_side}
    quality = settings.jpeg_quality
    data = phone_photo()

    ours_result = normalize_image(data, max_pixels=settings.max_image_pixels, quality=quality, **limits)
    naive_stored, naive_model = naive(data, quality=quality, **limits)
    ours = summary(
        timed(lambda: normalize_image(data, max_pixels=settings.max_image_pixels, quality=quality, **limits), args.runs)
    )
    base = summary(timed(lambda: naive(data, quality=quality, **limits), args.runs))

    results: dict[str, Any] = {
        "input": {"width": 4000, "height": 3000, "bytes": len(data), "exif_orientation": 6},
        "settings": {**limits, "jpeg_quality": quality},
        "runs": args.runs,
        "ours": {
            **ours,
            "stored_bytes": len(ours_result.stored),
            "model_bytes": len(ours_result.for_model),
            "stored_size": [ours_result.width, ours_result.height],
        },
        "naive": {
            **base,
            "stored_bytes": len(naive_stored),
            "model_bytes": len(naive_model),
            "stored_size": list(Image.open(BytesIO(naive_stored)).size),
        },
        "speedup_median": round(base["median_ms"] / ours["median_ms"], 2),
        # How far our stored JPEG is from the naive one (full decode + LANCZOS): 0 = identical.
        "stored_rms_vs_naive": rms_difference(ours_result.stored, naive_stored),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "pinned_cpu": cpu,
            "pillow": PIL.__version__,
        },
    }

    print(
        f"12 MP JPEG ({len(data) / 1e6:.1f} MB, EXIF orientation 6), {args.runs} runs, "
        f"one core, Pillow {PIL.__version__}"
    )
    print(f"{'pipeline':<8} {'median ms':>10} {'p95 ms':>8} {'stored B':>9} {'model B':>8} {'stored size':>12}")
    for name in ("ours", "naive"):
        row = results[name]
        size = "x".join(map(str, row["stored_size"]))
        print(
            f"{name:<8} {row['median_ms']:>10.1f} {row['p95_ms']:>8.1f} "
            f"{row['stored_bytes']:>9} {row['model_bytes']:>8} {size:>12}"
        )
    print(f"speedup (median): {results['speedup_median']}x")
    print(f"stored image RMS difference vs naive: {results['stored_rms_vs_naive']} / 255")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
