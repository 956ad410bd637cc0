"""The production report writer: an OpenAI model with strict structured outputs.

It calls `client.chat.completions.parse(response_format=<pydantic model>)`. The SDK also offers
`responses.parse`, but Chat Completions is the API that OpenAI-compatible servers (vLLM, Ollama,
LiteLLM...) implement, and `OPENAI_BASE_URL` promises any of them; on api.openai.com both
are stable and give the same strict JSON-schema guarantee.

Strict schemas cannot express `dict[str, str]` (every object needs fixed, required keys), so the
model fills `LLMReport` with `attributes` as a list of name/value pairs; `to_product_report`
turns that into the service's `ProductReport`.

Errors map to `app.errors` at this boundary; a detail never carries the key, the prompt or the
upstream body (the original stays on `__cause__` for the logs):

    refusal, finish_reason length / content_filter,
    unparsable or invalid output, 4xx other than 429,
    429 insufficient_quota (retrying will not help)    -> ReportWriterError   502
    connection failure, 429, 5xx (after the retries)   -> UpstreamUnavailable 503
    timeout (after the retries)                        -> UpstreamTimeout     504
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, cast

import httpx2
import openai
import pydantic
from openai import AsyncOpenAI
from pydantic import BaseModel, ConfigDict

from app.config import ConfigError
from app.domain.models import REPORT_MAX_TAGS, REPORT_MAX_TITLE_CHARS, Condition, ProductReport, VisionResult
from app.errors import ReportWriterError, UpstreamTimeout, UpstreamUnavailable
from app.services.prompts import build_report_prompt
from app.services.taxonomy import Category
from app.services.text import truncate_words

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam
    from openai.types.shared import ReasoningEffort

    from app.config import Settings

WRITER: Final = "openai"  # the report's `writer`; `name` adds the model for logs
MAX_ATTRIBUTES: Final = 20
# A report is a few hundred tokens; the cap bounds cost if a model rambles, with room left for
# reasoning tokens (they count against it) at a higher OPENAI_REASONING_EFFORT.
MAX_COMPLETION_TOKENS: Final = 4096
_NO_BRAND: Final = frozenset({"", "unknown", "none", "null", "n/a", "no brand", "unbranded", "generic"})


# The docstrings of these two models travel to the LLM as schema descriptions: they speak to it.
class LLMAttribute(BaseModel):
    """One fact about the product that the data shows, such as its color."""

    model_config = ConfigDict(extra="forbid")

    name: str
    value: str


class LLMReport(BaseModel):
    """A structured report about the one product in the photo."""

    model_config = ConfigDict(extra="forbid")

    title: str
    brand: str | None
    category: Category
    attributes: list[LLMAttribute]
    condition: Condition
    description: str
    tags: list[str]


def build_openai_client(settings: Settings, *, http_client: httpx2.AsyncClient | None = None) -> AsyncOpenAI:
    """Build the OpenAI client with the service's timeout and retries; `http_client` is for tests."""
    if settings.openai_api_key is None:
        raise ConfigError("REPORT_WRITER=openai needs OPENAI_API_KEY.")
    return AsyncOpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        # Explicit: the SDK's defaults (600 s, 2 retries) would hold a request for many minutes.
        timeout=settings.openai_timeout_seconds,
        max_retries=settings.openai_max_retries,
        http_client=http_client,
    )


class OpenAIWriter:
    """Write product reports with an OpenAI model, in the requested locale."""

    def __init__(self, client: AsyncOpenAI, *, model: str, reasoning_effort: str | None) -> None:
        self._client = client
        self._model = model
        # Empty means "do not send it": some OpenAI-compatible servers reject the parameter. Other
        # values go through unchecked, so a server's new effort level needs no release here.
        self._reasoning_effort = cast("ReasoningEffort", reasoning_effort) if reasoning_effort else None
        self.name = f"{WRITER}:{model}"

    async def write(self, vision: VisionResult, *, locale: str, hints: str | None) -> ProductReport:
        """Write the report; `hints` travel as untrusted data, never as instructions."""
        prompt = build_report_prompt(vision, locale=locale, hints=hints)
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": prompt.user},
        ]
        try:
            completion = await self._client.chat.completions.parse(
                model=self._model,
                messages=messages,
                response_format=LLMReport,
                max_completion_tokens=MAX_COMPLETION_TOKENS,
                reasoning_effort=self._reasoning_effort or openai.omit,
            )
        except openai.LengthFinishReasonError as exc:
            raise ReportWriterError("The report writer ran out of output tokens.") from exc
        except openai.ContentFilterFinishReasonError as exc:
            raise ReportWriterError("The report writer's content filter stopped the report.") from exc
        except pydantic.ValidationError as exc:
            raise ReportWriterError("The report writer returned a malformed report.") from exc
        except openai.APITimeoutError as exc:  # before APIConnectionError: it is a subclass
            raise UpstreamTimeout("The report writer did not answer in time.") from exc
        except openai.APIConnectionError as exc:
            raise UpstreamUnavailable("The report writer could not be reached; retry later.") from exc
        except openai.APIStatusError as exc:
            raise _status_error(exc) from exc
        except openai.OpenAIError as exc:
            raise ReportWriterError() from exc

        if not completion.choices:
            raise ReportWriterError("The report writer returned no report.")
        message = completion.choices[0].message
        if message.refusal:
            raise ReportWriterError("The report writer declined to describe this product.")
        if message.parsed is None:
            raise ReportWriterError("The report writer returned no report.")
        return to_product_report(message.parsed)


def _status_error(exc: openai.APIStatusError) -> ReportWriterError | UpstreamUnavailable:
    if isinstance(exc, openai.RateLimitError) and exc.code == "insufficient_quota":
        # A spent quota is not a passing rate limit: retrying later will not help.
        return ReportWriterError("The report writer's account is out of quota.")
    if isinstance(exc, openai.RateLimitError) or exc.status_code >= 500:
        return UpstreamUnavailable("The report writer is overloaded or failing; retry later.")
    # 400, 401, 403, 404...: our request or our configuration is wrong; a retry will not help.
    return ReportWriterError("The report writer rejected the request.")


def to_product_report(llm: LLMReport) -> ProductReport:
    """Convert the model's report to a `ProductReport`, tidying what the schema cannot enforce."""
    title = " ".join(llm.title.split())
    if not title:
        raise ReportWriterError("The report writer returned a report without a title.")
    attributes: dict[str, str] = {}
    for attribute in llm.attributes:
        name = "_".join(attribute.name.lower().split())
        value = " ".join(attribute.value.split())
        # The first value of a name wins; empty pairs carry nothing.
        if name and value and name not in attributes and len(attributes) < MAX_ATTRIBUTES:
            attributes[name] = value
    brand = " ".join((llm.brand or "").split())
    tags = dict.fromkeys(" ".join(tag.lower().split()) for tag in llm.tags)
    tags.pop("", None)
    return ProductReport(
        title=truncate_words(title, REPORT_MAX_TITLE_CHARS),
        brand=None if brand.lower() in _NO_BRAND else brand,
        category=llm.category,
        attributes=attributes,
        condition=llm.condition,
        description=llm.description.strip(),
        tags=list(tags)[:REPORT_MAX_TAGS],
        writer=WRITER,
    )
