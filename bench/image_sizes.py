"""Measure how many bytes one stored upload takes: the mean size of our normalized JPEGs.

    python -m bench.image_sizes [--seeds 3] [--out bench/results/image_sizes.json]

Feeds `app.services.images.normalize_image` (with the service's default Settings: long side
STORE_MAX_SIDE=1024, JPEG_QUALITY=85, metadata stripped) synthetic phone photos at the
resolutions phone cameras write, and reports the size of the JPEG the app stores. The mean over
every photo is the default `--avg-image-kb` of `python -m app.ops.estimate bucket`.

The photos are synthetic, built in memory, two scenes at each resolution and seed:

- product: `tests.imagegen.product_image` (gradient backdrop, a boxed product with a label,
  rings, low sensor-like noise), the photo the upload tests use;
- label:   `bench.preprocess.phone_photo` (the same idea with fine "label text" and more shapes,
  stored sideways with EXIF orientation 6), the photo the preprocessing benchmark uses.

What they represent, honestly: JPEGs with smooth light, hard edges and some noise, sized like
real camera output, so the downscale and the encoder do real work. What they do not have is
real texture (fabric, wood grain, foliage, cluttered backgrounds, fine print), which is what
makes real photos large: a detailed real 1024x768 JPEG at quality 85 is commonly 100-250 KB, so
treat this figure as a lower bound, and re-measure on a sample of real uploads (their stored
sizes are in `image.bytes` of every response) once there are some.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import PIL

from app.config import Settings
from app.services.images import normalize_image
from bench.preprocess import phone_photo
from tests.imagegen import product_image

DEFAULT_OUT = Path(__file__).parent / "results" / "image_sizes.json"
# (name, (width, height)) as phone cameras write them, landscape; larger sensors bin to 12 MP.
RESOLUTIONS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("1.9 MP messaging-app resend", (1600, 1200)),
    ("8 MP 4:3 older phone", (3264, 2448)),
    ("12 MP 4:3 (48 MP binned)", (4032, 3024)),
    ("12 MP 16:9", (4032, 2268)),
    ("12.5 MP 4:3 (50 MP binned)", (4080, 3072)),
    ("24 MP 4:3", (5712, 4284)),
)
SOURCE_QUALITY = 92  # what phone cameras typically write


def _product(size: tuple[int, int], seed: int) -> bytes:
    buf = BytesIO()
    product_image(size, seed=seed).save(buf, "JPEG", quality=SOURCE_QUALITY)
    return buf.getvalue()


def _label(size: tuple[int, int], seed: int) -> bytes:
    return phone_photo(size, seed=seed)


SCENES: dict[str, Callable[[tuple[int, int], int], bytes]] = {"product": _product, "label": _label}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="photos per scene and resolution")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for name, size in RESOLUTIONS:
        for scene, build in SCENES.items():
            stored_sizes: list[int] = []
            source_sizes: list[int] = []
            stored_dims: tuple[int, int] = (0, 0)
            for seed in range(args.seeds):
                data = build(size, seed)
                result = normalize_image(
                    data,
                    max_pixels=settings.max_image_pixels,
                    store_max_side=settings.store_max_side,
                    model_side=settings.model_image_side,
                    quality=settings.jpeg_quality,
                )
                stored_sizes.append(len(result.stored))
                source_sizes.append(len(data))
                stored_dims = (result.width, result.height)
            rows.append(
                {
                    "resolution": name,
                    "source_size": list(size),
                    "scene": scene,
                    "photos": len(stored_sizes),
                    "source_mean_bytes": round(statistics.fmean(source_sizes)),
                    "stored_size": list(stored_dims),
                    "stored_mean_bytes": round(statistics.fmean(stored_sizes)),
                    "stored_min_bytes": min(stored_sizes),
                    "stored_max_bytes": max(stored_sizes),
                }
            )

    # Every resolution and scene weighs the same: we do not know the mix of real uploads yet.
    mean_bytes = statistics.fmean(row["stored_mean_bytes"] for row in rows)
    results: dict[str, Any] = {
        "settings": {
            "store_max_side": settings.store_max_side,
            "jpeg_quality": settings.jpeg_quality,
            "source_jpeg_quality": SOURCE_QUALITY,
        },
        "seeds": args.seeds,
        "photos": sum(row["photos"] for row in rows),
        "rows": rows,
        "stored_mean_bytes": round(mean_bytes),
        "stored_mean_kb": round(mean_bytes / 1000, 1),  # kB = 1000 bytes, as the estimator takes it
        "stored_min_bytes": min(row["stored_min_bytes"] for row in rows),
        "stored_max_bytes": max(row["stored_max_bytes"] for row in rows),
        "note": (
            "Synthetic photos (tests/imagegen.product_image, bench/preprocess.phone_photo): no real texture, "
            "so a lower bound for real product photos; re-measure on real uploads."
        ),
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "pillow": PIL.__version__,
        },
    }

    print(
        f"stored JPEG size: long side {settings.store_max_side}, quality {settings.jpeg_quality}, "
        f"{args.seeds} seeds per scene, Pillow {PIL.__version__}"
    )
    print(
        f"{'resolution':<30} {'scene':<8} {'source kB':>10} {'stored':>10} {'mean kB':>8} {'min kB':>7} {'max kB':>7}"
    )
    for row in rows:
        print(
            f"{row['resolution']:<30} {row['scene']:<8} {row['source_mean_bytes'] / 1000:>10.0f} "
            f"{'x'.join(map(str, row['stored_size'])):>10} {row['stored_mean_bytes'] / 1000:>8.1f} "
            f"{row['stored_min_bytes'] / 1000:>7.1f} {row['stored_max_bytes'] / 1000:>7.1f}"
        )
    print(f"mean stored size over {results['photos']} photos: {results['stored_mean_kb']} kB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
