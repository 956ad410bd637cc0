"""In-process BLIP-2 (VISION_BACKEND=local) through the very functions SageMaker calls.

The model loads once, in the lifespan, via `load_model` (what `model_fn` calls); each request goes through
`input_fn -> predict_fn -> output_fn` with the same JSON body the SageMaker adapter sends,
so the in-process path and the endpoint cannot drift apart. The model is loaded and called on
one thread of its own (`model.thread`: torch slows down once several threads have used it),
so calls run one at a time (torch already uses every core for one call). A request that times
out answers 504 at once while its model call finishes in the background; the next call waits
in the thread's queue until it has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import anyio
import structlog

from app.config import ConfigError, Settings
from app.domain import vision_contract
from app.domain.models import VisionResult
from app.errors import UpstreamTimeout, VisionModelError
from model.code import inference
from model.thread import model_thread

log = structlog.get_logger(__name__)


def load_model(settings: Settings) -> inference.LoadedModel:
    """Load BLIP-2 from MODEL_DIR, else MODEL_ID from the hub; blocking, so call it on the model's thread."""
    source = str(settings.model_dir) if settings.model_dir else settings.model_id
    try:
        return inference.load_model(source, device=settings.model_device, dtype=settings.model_dtype)
    except OSError as exc:  # transformers raises OSError when the hub cannot be reached or has no such model
        raise ConfigError(
            f"Could not load MODEL_ID={settings.model_id} from the Hugging Face hub; set MODEL_DIR to a local "
            "BLIP-2 folder (for an offline demo: `make tiny-model`, then MODEL_DIR=data/models/tiny-blip2)."
        ) from exc


class LocalVision:
    """The `VisionModel` port over an in-process BLIP-2."""

    def __init__(
        self, loaded: inference.LoadedModel, *, timeout_s: float, thread: ThreadPoolExecutor | None = None
    ) -> None:
        """Serve `loaded`, best on the `thread` it was loaded on (see `model.thread`)."""
        self.loaded = loaded
        self.name = loaded.name
        self.timeout_s = timeout_s
        self._thread = thread or model_thread()

    def _run(self, body: bytes) -> bytes:
        request = inference.input_fn(body, inference.JSON_TYPE)
        prediction = inference.predict_fn(request, self.loaded)
        payload, _ = inference.output_fn(prediction, inference.JSON_TYPE)
        return payload

    async def describe(
        self,
        image_jpeg: bytes,
        questions: Sequence[str],
        *,
        caption_max_new_tokens: int,
        answer_max_new_tokens: int,
    ) -> VisionResult:
        body = vision_contract.request_body(
            image_jpeg,
            questions,
            caption_max_new_tokens=caption_max_new_tokens,
            answer_max_new_tokens=answer_max_new_tokens,
        )
        try:
            with anyio.fail_after(self.timeout_s):
                # A cancelled wait leaves a running call to finish; a queued one never starts.
                payload = await asyncio.get_running_loop().run_in_executor(self._thread, self._run, body)
        except TimeoutError as exc:
            raise UpstreamTimeout("The vision model did not answer in time.") from exc
        except inference.InvalidInput as exc:
            raise VisionModelError("The vision model refused the image.") from exc
        except (RuntimeError, ValueError) as exc:  # torch errors (out of memory, shape bugs) are RuntimeErrors
            log.exception("local_vision_failed")
            raise VisionModelError() from exc
        try:
            return vision_contract.parse_response(payload, questions, default_model=self.name)
        except vision_contract.MalformedVisionResponse as exc:
            raise VisionModelError("The vision model answered with an unexpected shape.") from exc

    async def check(self) -> None:
        """The model is loaded by the time this object exists."""
        return
