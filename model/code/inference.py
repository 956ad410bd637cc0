"""BLIP-2 inference handler: the one code path for SageMaker, the local server and in-process use.

SageMaker's PyTorch container imports this file from `code/` in the model tarball and calls
the four functions below; `app.adapters.vision_local` and `model.serve` call the same ones.

Vision contract (DESIGN.md). Request, `application/json`:
    {"image": "<base64 JPEG or PNG>", "questions": ["What brand is it?", ...],
     "max_new_tokens": {"caption": 30, "answer": 10}}
or a raw `image/jpeg`, `image/png` or `application/x-image` body (caption + default questions).
Response, `application/json`:
    {"model": "...", "caption": "...", "answers": [{"question": "...", "answer": "..."}],
     "timings_ms": {"preprocess": 0.0, "generate": 0.0}}

Speed: each image goes through the vision tower and Q-Former once; its query embeddings are
copied into one row per prompt (caption + every question), and all rows of all images in the
batch are decoded by ONE greedy `generate` call, each row stopping at its own token budget.
fp16 and SDPA attention on CUDA. `model.serve` batches concurrent requests into `predict_batch`.

Environment (read by `load_model`, which `model_fn` calls): `MODEL_DEVICE` (auto|cpu|cuda), `MODEL_DTYPE`
(auto|float16|bfloat16|float32; auto = float16 on CUDA, float32 on CPU), `MODEL_NAME`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image, UnidentifiedImageError
from transformers import Blip2ForConditionalGeneration, Blip2Processor, StoppingCriteria, StoppingCriteriaList

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Used only for raw image bodies; the app always sends its own questions (VISION_QUESTIONS).
DEFAULT_QUESTIONS: tuple[str, ...] = (
    "What is this product?",
    "What brand is it?",
    "What color is it?",
    "What material is it made of?",
    "What condition is it in?",
    "What text is visible on it?",
)
QUESTION_PROMPT = "Question: {question} Answer:"
CAPTION_PROMPT = ""  # BLIP-2 captions from the image alone (BOS only)

MAX_QUESTIONS = 16
MAX_QUESTION_CHARS = 500
MAX_TOKENS_CAPTION = 128
MAX_TOKENS_ANSWER = 64
DEFAULT_MAX_NEW_TOKENS = {"caption": 30, "answer": 10}
MAX_IMAGE_PIXELS = 40_000_000
RAW_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "application/x-image"})
JSON_TYPE = "application/json"


class InvalidInput(ValueError):
    """The request cannot be served as sent; `status_code` is the HTTP status to answer with."""

    status_code = 400

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass
class LoadedModel:
    """What `model_fn` returns: the model, its processor, and where it runs."""

    model: Blip2ForConditionalGeneration
    processor: Blip2Processor
    device: torch.device
    dtype: torch.dtype
    name: str


@dataclass
class VisionRequest:
    """A decoded request: one image, its questions and token budgets."""

    image: Image.Image
    questions: list[str]
    caption_max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS["caption"]
    answer_max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS["answer"]
    timings_ms: dict[str, float] = field(default_factory=dict)


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if name not in dtypes:
        raise ValueError(f"MODEL_DTYPE must be one of auto, {', '.join(dtypes)}; got {name!r}")
    return dtypes[name]


def model_fn(model_dir: str, context: Any = None) -> LoadedModel:
    """Load the model the way SageMaker's container asks: device and dtype from the environment.

    The toolkit calls this with one or two arguments and refuses a function with any other
    number of parameters, so the options live in `load_model`.

    Args:
        model_dir: where the container extracted the model tarball (/opt/ml/model).
        context: SageMaker's context object; unused.

    Returns:
        What `load_model` returns.
    """
    return load_model(model_dir)


def load_model(model_dir: str, *, device: str | None = None, dtype: str | None = None) -> LoadedModel:
    """Load BLIP-2 and its processor from a folder (or a hub id) once per process.

    Args:
        model_dir: a folder with `config.json`, weights and processor files, or a hub model id.
        device: auto, cpu or cuda; defaults to MODEL_DEVICE, else auto.
        dtype: auto, float16, bfloat16 or float32; defaults to MODEL_DTYPE, else auto.

    Returns:
        The loaded model, in eval mode, on the chosen device and dtype.
    """
    torch_device = _pick_device(device or os.environ.get("MODEL_DEVICE", "auto"))
    torch_dtype = _pick_dtype(dtype or os.environ.get("MODEL_DTYPE", "auto"), torch_device)
    processor = Blip2Processor.from_pretrained(model_dir)
    # SDPA: PyTorch's fused attention kernels (flash / memory-efficient on CUDA). Named, not
    # left to the library default, because the speed of every decode step depends on it.
    model = Blip2ForConditionalGeneration.from_pretrained(model_dir, dtype=torch_dtype, attn_implementation="sdpa")
    model.to(torch_device)  # type: ignore[arg-type]  # transformers' decorator mistypes Module.to
    model.train(False)  # eval mode (`eval()` is untyped in transformers)
    name = os.environ.get("MODEL_NAME") or Path(str(model_dir).rstrip("/")).name or str(model_dir)
    return LoadedModel(model=model, processor=processor, device=torch_device, dtype=torch_dtype, name=name)


def _open_image(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=["JPEG", "PNG"])
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise InvalidInput("image has too many pixels", 413)
        image.load()
    except InvalidInput:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput("image is not a decodable JPEG or PNG", 415) from exc
    return image.convert("RGB")


def _token_budget(value: object, key: str, upper: int) -> int:
    if value is None:
        return DEFAULT_MAX_NEW_TOKENS[key]
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= upper:
        raise InvalidInput(f"max_new_tokens.{key} must be an integer from 1 to {upper}")
    return value


def input_fn(request_body: bytes | str, request_content_type: str) -> VisionRequest:
    """Decode a request body into a `VisionRequest`.

    Args:
        request_body: the raw body (SageMaker passes bytes; JSON may arrive as str).
        request_content_type: the body's Content-Type; parameters such as charset are ignored.

    Returns:
        The decoded image and questions. Raises `InvalidInput` (with an HTTP status) on bad input.
    """
    started = time.perf_counter()
    content_type = (request_content_type or "").split(";")[0].strip().lower()
    body = request_body.encode() if isinstance(request_body, str) else request_body
    if content_type in RAW_IMAGE_TYPES:
        request = VisionRequest(image=_open_image(body), questions=list(DEFAULT_QUESTIONS))
    elif content_type == JSON_TYPE:
        request = _parse_json_request(body)
    else:
        raise InvalidInput(f"unsupported content type {content_type!r}", 415)
    request.timings_ms["decode"] = (time.perf_counter() - started) * 1000
    return request


def _parse_json_request(body: bytes) -> VisionRequest:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput("body is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise InvalidInput("body must be a JSON object")
    encoded = payload.get("image")
    if not isinstance(encoded, str) or not encoded:
        raise InvalidInput("'image' must be a base64 string")
    try:
        image_bytes = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput("'image' is not valid base64") from exc
    questions = payload.get("questions", [])
    if not isinstance(questions, list) or not all(isinstance(q, str) and q.strip() for q in questions):
        raise InvalidInput("'questions' must be a list of non-empty strings")
    if len(questions) > MAX_QUESTIONS:
        raise InvalidInput(f"at most {MAX_QUESTIONS} questions per request")
    if any(len(q) > MAX_QUESTION_CHARS for q in questions):
        raise InvalidInput(f"each question is at most {MAX_QUESTION_CHARS} characters")
    budgets = payload.get("max_new_tokens") or {}
    if not isinstance(budgets, dict):
        raise InvalidInput("'max_new_tokens' must be an object")
    caption_budget = _token_budget(budgets.get("caption"), "caption", MAX_TOKENS_CAPTION)
    answer_budget = _token_budget(budgets.get("answer"), "answer", MAX_TOKENS_ANSWER)
    return VisionRequest(  # the image last: every cheap check first
        image=_open_image(image_bytes),
        questions=[q.strip() for q in questions],
        caption_max_new_tokens=caption_budget,
        answer_max_new_tokens=answer_budget,
    )


class _PerRowBudget(StoppingCriteria):
    """Stop each row of a batched `generate` once it has produced its own number of tokens."""

    def __init__(self, budgets: torch.Tensor) -> None:
        self.budgets = budgets
        self.start: int | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if self.start is None:  # first call comes after the first new token
            self.start = input_ids.shape[1] - 1
        produced = input_ids.shape[1] - self.start
        done: torch.Tensor = produced >= self.budgets
        return done


def _decode_rows(tokenizer: PreTrainedTokenizerBase, sequences: torch.Tensor, budgets: Sequence[int]) -> list[str]:
    rows = [sequences[i, :budget].tolist() for i, budget in enumerate(budgets)]
    texts: list[str] = tokenizer.batch_decode(rows, skip_special_tokens=True)
    return [" ".join(text.split()) for text in texts]


@torch.inference_mode()
def predict_batch(requests: Sequence[VisionRequest], loaded: LoadedModel) -> list[dict[str, Any]]:
    """Caption and answer for several requests with one vision pass and one `generate` call.

    Args:
        requests: decoded requests; each image is encoded once however many questions it has.
        loaded: what `model_fn` returned.

    Returns:
        One vision-contract response dict per request, in order.
    """
    model, processor, device = loaded.model, loaded.processor, loaded.device
    tokenizer = processor.tokenizer
    started = time.perf_counter()

    pixel_values = processor.image_processor([r.image for r in requests], return_tensors="pt")["pixel_values"]
    pixel_values = pixel_values.to(device=device, dtype=loaded.dtype)
    # One row per prompt: the caption first, then each question, for every request in turn.
    prompts: list[str] = []
    image_rows: list[int] = []
    budgets: list[int] = []
    for index, request in enumerate(requests):
        prompts.append(CAPTION_PROMPT)
        budgets.append(request.caption_max_new_tokens)
        for question in request.questions:
            prompts.append(QUESTION_PROMPT.format(question=question))
            budgets.append(request.answer_max_new_tokens)
        image_rows.extend([index] * (1 + len(request.questions)))
    # Left padding whatever the tokenizer's default (OPT's pads right): every row's prompt must
    # end where its first new token goes, right after the image's query embeddings and the text.
    text = tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt")
    input_ids = text["input_ids"].to(device)
    text_mask = text["attention_mask"].to(device)
    preprocess_ms = (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    image_features = model.get_image_features(pixel_values=pixel_values).pooler_output  # (images, Q, H)
    row_features = image_features[torch.tensor(image_rows, device=device)]
    text_embeds = model.get_input_embeddings()(input_ids)
    inputs_embeds = torch.cat([row_features.to(text_embeds.dtype), text_embeds], dim=1)
    image_mask = torch.ones(row_features.shape[:2], dtype=text_mask.dtype, device=device)
    attention_mask = torch.cat([image_mask, text_mask], dim=1)
    budget_tensor = torch.tensor(budgets, device=device)
    generated = model.language_model.generate(
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        max_new_tokens=max(budgets),
        do_sample=False,
        num_beams=1,
        stopping_criteria=StoppingCriteriaList([_PerRowBudget(budget_tensor)]),
        pad_token_id=tokenizer.pad_token_id,
    )
    if model.config.use_decoder_only_language_model is False:
        generated = generated[:, 1:]  # drop the decoder start token
    texts = _decode_rows(tokenizer, generated, budgets)
    generate_ms = (time.perf_counter() - started) * 1000

    results: list[dict[str, Any]] = []
    cursor = 0
    for request in requests:
        caption, answers = texts[cursor], texts[cursor + 1 : cursor + 1 + len(request.questions)]
        cursor += 1 + len(request.questions)
        results.append(
            {
                "model": loaded.name,
                "caption": caption,
                "answers": [{"question": q, "answer": a} for q, a in zip(request.questions, answers, strict=True)],
                "timings_ms": {
                    "decode": round(request.timings_ms.get("decode", 0.0), 2),
                    "preprocess": round(preprocess_ms, 2),
                    "generate": round(generate_ms, 2),
                },
            }
        )
    return results


def predict_fn(input_data: VisionRequest, model: LoadedModel) -> dict[str, Any]:
    """Caption the image and answer its questions.

    Args:
        input_data: what `input_fn` returned.
        model: what `model_fn` returned.

    Returns:
        The vision-contract response as a dict.
    """
    return predict_batch([input_data], model)[0]


def output_fn(prediction: dict[str, Any], accept: str) -> tuple[bytes, str]:
    """Serialize a prediction as JSON (the only representation offered).

    Args:
        prediction: what `predict_fn` returned.
        accept: the client's Accept header.

    Returns:
        The body and its content type.
    """
    if not accepts(accept):
        raise InvalidInput(f"cannot answer as {accept!r}; accept application/json", 406)
    return json.dumps(prediction, ensure_ascii=False).encode(), JSON_TYPE


def accepts(accept: str) -> bool:
    """Tell whether an Accept header admits JSON, the only representation `output_fn` offers."""
    offered = (JSON_TYPE, "*/*", "application/*")
    return not accept or any(part.split(";")[0].strip().lower() in offered for part in accept.split(","))
