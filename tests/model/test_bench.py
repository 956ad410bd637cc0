"""bench/model.py stays runnable, and the full-size architecture it benchmarks on a GPU is BLIP-2 OPT-2.7B."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import Blip2ForConditionalGeneration

from bench import model as bench_model
from model.tiny import full_size_config


def test_the_full_size_architecture_has_blip2_opt_2_7b_dimensions() -> None:
    with torch.device("meta"):  # shapes only: no memory, no time
        model = Blip2ForConditionalGeneration(full_size_config(image_token_id=50265))
    total = sum(p.numel() for p in model.parameters())
    language = sum(p.numel() for p in model.language_model.parameters())
    vision = sum(p.numel() for p in model.vision_model.parameters())
    assert round(total / 1e9, 2) == 3.74  # the published size of Salesforce/blip2-opt-2.7b
    assert round(language / 1e9, 2) == 2.65  # OPT-2.7B: what each decode step reads
    assert round(vision / 1e9, 2) == 0.99  # ViT-g/14
    # The roofline the issue quotes: fp16 weights read once per step on an A10G (600 GB/s).
    assert round(language * 2 / 600e9 * 1000, 1) == 8.8


def test_the_model_benchmark_runs_end_to_end_on_the_tiny_model(tmp_path: Path) -> None:
    out = tmp_path / "model.json"
    result = bench_model.main(
        ["--runs", "1", "--requests", "4", "--concurrency", "1,4", "--max-batch-size", "4", "--out", str(out)]
    )
    assert json.loads(out.read_text()) == result
    assert out.with_suffix(".png").stat().st_size > 0
    assert set(result["server"]["batching"]) == {"1", "4"}
    assert result["server"]["no_batching"]["4"]["mean_batch"] == 1
    assert result["server"]["batching"]["4"]["mean_batch"] > 1  # four closed-loop clients do share calls
    assert result["naive"]["requests"] == result["ours"]["requests"] == 1
    assert result["decode_step_ms"]["roofline"] is None  # no GPU: no roofline to compare with
