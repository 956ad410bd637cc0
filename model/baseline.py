"""The naive way to run BLIP-2, kept as the yardstick for tests and benchmarks.

One `generate` per prompt through `Blip2ForConditionalGeneration.generate`, the image
re-encoded by the vision tower every time, batch 1. `model/code/inference.py` must give the
same words (greedy decoding) while encoding the image once and decoding all prompts together.
"""

from __future__ import annotations

from typing import Any

import torch

from model.code.inference import CAPTION_PROMPT, QUESTION_PROMPT, LoadedModel, VisionRequest


@torch.inference_mode()
def naive_predict(request: VisionRequest, loaded: LoadedModel) -> dict[str, Any]:
    """Caption and answer with one full `generate` (vision tower included) per prompt."""
    prompts = [(CAPTION_PROMPT, request.caption_max_new_tokens)] + [
        (QUESTION_PROMPT.format(question=q), request.answer_max_new_tokens) for q in request.questions
    ]
    texts: list[str] = []
    for prompt, budget in prompts:
        inputs = loaded.processor(images=request.image, text=prompt, return_tensors="pt").to(loaded.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(loaded.dtype)
        output: torch.Tensor = loaded.model.generate(**inputs, max_new_tokens=budget, do_sample=False)
        if loaded.model.config.use_decoder_only_language_model:
            output = output[:, inputs["input_ids"].shape[1] :]
        text = loaded.processor.tokenizer.decode(output[0], skip_special_tokens=True)
        texts.append(" ".join(text.split()))
    return {
        "model": loaded.name,
        "caption": texts[0],
        "answers": [{"question": q, "answer": a} for q, a in zip(request.questions, texts[1:], strict=True)],
    }
