"""Benchmark the vision model: the naive loop against ours, alone and behind the server's batching.

    python -m bench.model                                   # tiny random BLIP-2 on this machine
    python -m bench.model --architecture blip2-opt-2.7b     # full size, random weights, fp16 (GPU)

In this one process, on one set of weights, one request = one image + the six default questions
(7 prompts; caption budget 30 tokens, answers 10), as the app sends it:

- naive:  `model.baseline.naive_predict`: one `generate` per prompt, the image re-encoded every
          time, float32, batch 1;
- ours:   `inference.predict_fn`: the image encoded once, all prompts in one `generate`
          (fp16 + SDPA on CUDA);
- server: `model.serve.ModelServer.invoke` (decode the JSON body, batch, predict, encode) under 1,
          8 and 32 concurrent clients, each sending its next request when its last one answered;
          once with batching off (max batch 1) and once with dynamic batching.

Random weights stop at random places, so every prompt decodes its whole budget here (EOS off):
the worst case, and the same work for every contender. On CUDA, the decode step is compared
with its roofline: the language model's weights read once per step at the GPU's memory bandwidth.
Writes bench/results/model-<device>.json and a plot beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from app.domain import vision_contract
from bench.stats import percentile, timed
from model.baseline import naive_predict
from model.code import inference
from model.serve import ModelServer
from model.thread import model_thread
from model.tiny import build

RESULTS = Path(__file__).parent / "results"
# Every torch call of this benchmark runs on this one thread, as in the server (see model.thread):
# contenders measured on different threads would slow each other down.
MODEL_THREAD = model_thread()
# Peak memory bandwidth, bytes/s, by a name fragment of `torch.cuda.get_device_name()`.
GPU_BANDWIDTH = {"A10G": 600e9, "L4": 300e9, "A100": 2.0e12, "H100 PCIe": 2.0e12, "H100": 3.35e12, "H200": 4.8e12}


def summarize(latencies_ms: list[float], wall_s: float) -> dict[str, float]:
    return {
        "requests": len(latencies_ms),
        "rps": round(len(latencies_ms) / wall_s, 2),
        "p50_ms": round(statistics.median(latencies_ms), 2),
        "p95_ms": round(percentile(latencies_ms, 0.95), 2),
    }


def request_body(seed: int) -> bytes:
    """A JSON body as the app sends it: a 384 px JPEG, the default questions and token budgets."""
    from PIL import Image

    image = Image.new("RGB", (384, 288), (40 * seed % 256, 90, 200 - 30 * seed % 200))
    for y in range(0, 288, 6):
        for x in range(0, 384, 5):
            image.putpixel((x, y), ((x + seed) % 256, y % 256, (x * y) % 256))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return vision_contract.request_body(
        buffer.getvalue(),
        inference.DEFAULT_QUESTIONS,
        caption_max_new_tokens=inference.DEFAULT_MAX_NEW_TOKENS["caption"],
        answer_max_new_tokens=inference.DEFAULT_MAX_NEW_TOKENS["answer"],
    )


def load(model_dir: Path, device: str, dtype: str) -> inference.LoadedModel:
    """Load through `load_model`, then turn EOS off so that every prompt decodes its whole budget."""
    loaded = inference.load_model(str(model_dir), device=device, dtype=dtype)
    for config in (loaded.model.generation_config, loaded.model.language_model.generation_config):
        config.eos_token_id = None
    return loaded


def sequential(fn: Callable[[], object], runs: int) -> dict[str, float]:
    """Time `fn` one call after another, each on the model's thread."""
    latencies = timed(lambda: MODEL_THREAD.submit(fn).result(), runs)
    return summarize(latencies, sum(latencies) / 1000)


async def load_test(
    loaded: inference.LoadedModel, bodies: list[bytes], *, concurrency: int, requests: int, batch: int, wait_ms: float
) -> dict[str, float]:
    """Drive `ModelServer.invoke` with `concurrency` closed-loop clients until `requests` have answered."""
    server = ModelServer(lambda: loaded, max_batch_size=batch, max_wait_ms=wait_ms, executor=MODEL_THREAD)
    await server.start()
    await server.ready.wait()
    latencies: list[float] = []
    remaining = requests

    async def client(index: int) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            body = bodies[(index + remaining) % len(bodies)]
            t0 = time.perf_counter()
            answer = await server.invoke(body, inference.JSON_TYPE, inference.JSON_TYPE)
            if answer.status != 200:
                raise RuntimeError(f"the server answered {answer.status}: {answer.body[:200]!r}")
            latencies.append((time.perf_counter() - t0) * 1000)

    try:
        await asyncio.gather(*(client(i) for i in range(concurrency)))  # warm-up: one round
        latencies.clear()
        remaining = requests
        server.batcher.stats.sizes.clear()
        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(concurrency)))
        wall = time.perf_counter() - started
    finally:
        await server.stop()
    sizes = server.batcher.stats.sizes
    result = summarize(latencies, wall)
    result["mean_batch"] = round(sum(size * count for size, count in sizes.items()) / sum(sizes.values()), 2)
    return result


def roofline_ms(loaded: inference.LoadedModel) -> float | None:
    """Return the ideal decode step at batch 1: the language model's weight bytes over memory bandwidth."""
    if loaded.device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(loaded.device)
    bandwidth = next((bw for fragment, bw in GPU_BANDWIDTH.items() if fragment in name), None)
    if bandwidth is None:
        return None
    weights = sum(p.numel() * p.element_size() for p in loaded.model.language_model.parameters())
    return weights / bandwidth * 1000


def device_description(device: str) -> str:
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def measure_naive(model_dir: Path, one: inference.VisionRequest, args: argparse.Namespace) -> dict[str, float]:
    """Time the naive loop in float32; its model is freed when this returns, before ours loads."""
    naive_model = MODEL_THREAD.submit(load, model_dir, args.device, "float32").result()
    return sequential(lambda: naive_predict(one, naive_model), args.runs)


def run(args: argparse.Namespace) -> dict[str, Any]:
    bodies = [request_body(seed) for seed in range(8)]
    one = inference.input_fn(bodies[0], inference.JSON_TYPE)
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = (
            args.model_dir
            or MODEL_THREAD.submit(
                build, Path(scratch) / args.architecture, architecture=args.architecture, device=args.build_device
            ).result()
        )
        naive = measure_naive(model_dir, one, args)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # two copies of 3.7 B parameters do not fit on an A10G
        loaded = MODEL_THREAD.submit(load, model_dir, args.device, args.dtype).result()

    ours = sequential(lambda: inference.predict_fn(one, loaded), args.runs)
    generate_ms = MODEL_THREAD.submit(inference.predict_fn, one, loaded).result()["timings_ms"]["generate"]
    steps = max(one.caption_max_new_tokens, one.answer_max_new_tokens)
    server: dict[str, dict[str, dict[str, float]]] = {"no_batching": {}, "batching": {}}
    for concurrency in args.concurrency:
        requests = max(args.requests, 4 * concurrency)
        for mode, batch in (("no_batching", 1), ("batching", args.max_batch_size)):
            server[mode][str(concurrency)] = asyncio.run(
                load_test(
                    loaded, bodies, concurrency=concurrency, requests=requests, batch=batch, wait_ms=args.max_wait_ms
                )
            )

    top = str(max(args.concurrency))
    roofline = roofline_ms(loaded)
    step_ms = generate_ms / steps
    return {
        "machine": device_description(args.device),
        "architecture": args.architecture if args.model_dir is None else args.model_dir.name,
        "dtype": {"naive": "float32", "ours": str(loaded.dtype).removeprefix("torch.")},
        "torch": torch.__version__,
        "request": {"prompts": 1 + len(one.questions), "caption_tokens": one.caption_max_new_tokens},
        "max_batch_size": args.max_batch_size,
        "max_wait_ms": args.max_wait_ms,
        "naive": naive,
        "ours": ours,
        "server": server,
        "decode_step_ms": {"ours": round(step_ms, 3), "roofline": round(roofline, 3) if roofline else None},
        "ratios": {
            "ours_vs_naive_p50": round(naive["p50_ms"] / ours["p50_ms"], 2),
            f"batching_vs_none_rps_at_{top}": round(
                server["batching"][top]["rps"] / server["no_batching"][top]["rps"], 2
            ),
            f"batching_p50_at_{top}_minus_p50_at_1_ms": round(
                server["batching"][top]["p50_ms"] - server["batching"]["1"]["p50_ms"], 2
            ),
            "step_vs_roofline": round(step_ms / roofline, 2) if roofline else None,
        },
    }


def table(result: dict[str, Any]) -> str:
    rows = [
        "| contender | concurrency | requests/s | p50 ms | p95 ms | mean batch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("naive", "ours"):
        r = result[name]
        rows.append(f"| {name} (one request at a time) | 1 | {r['rps']} | {r['p50_ms']} | {r['p95_ms']} | 1 |")
    for mode in ("no_batching", "batching"):
        for concurrency, r in result["server"][mode].items():
            label = "server, batching off" if mode == "no_batching" else "server, dynamic batching"
            rows.append(f"| {label} | {concurrency} | {r['rps']} | {r['p50_ms']} | {r['p95_ms']} | {r['mean_batch']} |")
    return "\n".join(rows)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, label in (("no_batching", "batching off"), ("batching", "dynamic batching")):
        points = result["server"][mode]
        levels = [int(c) for c in points]
        left.plot(levels, [points[c]["rps"] for c in points], marker="o", label=label)
        right.plot(levels, [points[c]["p50_ms"] for c in points], marker="o", label=label)
    for axis, ylabel in ((left, "requests/s"), (right, "p50 latency, ms")):
        axis.axhline(
            result["naive"]["rps"] if axis is left else result["naive"]["p50_ms"],
            color="grey",
            linestyle="--",
            label="naive, one at a time",
        )
        axis.set_xscale("log", base=2)
        axis.set_xticks(levels, [str(level) for level in levels])
        axis.set_xlabel("concurrent requests")
        axis.set_ylabel(ylabel)
        axis.legend()
    fig.suptitle(f"BLIP-2 ({result['architecture']}) on {result['machine']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="an existing BLIP-2 folder (default: build one)")
    parser.add_argument("--architecture", choices=("tiny", "blip2-opt-2.7b"), default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="ours: auto = float16 on CUDA, float32 on CPU")
    parser.add_argument("--runs", type=int, default=20, help="sequential requests for naive and ours")
    parser.add_argument("--requests", type=int, default=64, help="requests per load test (at least 4 per client)")
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 8, 32])
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/model-<device>.json")
    args = parser.parse_args(argv)
    args.build_device = "cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    if 1 not in args.concurrency:
        parser.error("--concurrency must include 1 (the latency baseline)")

    result = run(args)
    tag = "cuda" if args.build_device == "cuda" else "cpu"
    out = args.out or RESULTS / f"model-{tag}-{result['architecture']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out.with_suffix(".png"))
    print(table(result))
    print(json.dumps({"decode_step_ms": result["decode_step_ms"], "ratios": result["ratios"]}, indent=2))
    print(f"written to {out} and {out.with_suffix('.png')}")
    return result


if __name__ == "__main__":
    main()
