"""The `/analyze` upload dependency: stream the multipart body, cap it while streaming, validate, normalize.

Why not `await request.form()`: Starlette spools every file part (to memory, then to a temporary
file) before the handler sees any of it, so an oversized upload is only noticed after it has
been read in full. Here the body is fed chunk by chunk from `request.stream()` into
python-multipart's streaming `MultipartParser`, and every byte is counted as it arrives:

- `Content-Length` over `MAX_UPLOAD_BYTES` + 64 KiB of form overhead: 413 before reading anything;
- the `image` part passing `MAX_UPLOAD_BYTES`: 413 at once, the rest of the body is never read;
- the body as a whole passing `MAX_UPLOAD_BYTES` + 64 KiB (a chunked body, padding, an epilogue): 413;
- text fields at most 4 KiB each and 32 KiB together, at most 32 parts, 8 header lines of at
  most 2 KiB per part and 16 KiB of part headers in all: nothing grows without bound.

Unknown text fields are read (within the caps) and ignored; unknown file parts are discarded
as they stream, counted only against the body cap.

Errors: a body that is not `multipart/form-data`, has no usable boundary, or is broken is 400
`malformed_request`; no `image` part, or an empty one (what a browser form sends when no file
was chosen), is 400 `missing_image`; a second `image` part or a bad text field is 422
`invalid_field`; anything the image decoder refuses is 415 or 413 (see `app.services.images`).

Handlers take `upload: ImageUploadDep`; the route passes `openapi_extra=ANALYZE_OPENAPI` so that
/docs shows the form, which this dependency reads by hand instead of through `File()`/`Form()`.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated, Any, Final, Literal

import anyio.to_thread
from fastapi import Depends, Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from app.api.state import image_limiter_of, settings_of
from app.config import MAX_CLIENT_QUESTIONS, MAX_HINTS_CHARS, MAX_QUESTION_CHARS
from app.domain.models import DEFAULT_LOCALE, LOCALE_PATTERN, AnalysisOptions, ImageUpload
from app.errors import ImageTooLarge, InvalidField, MalformedRequest, MissingImage
from app.services.images import normalize_image

FORM_OVERHEAD_BYTES: Final = 64 * 1024
MAX_TEXT_FIELD_BYTES: Final = 4 * 1024
MAX_TEXT_TOTAL_BYTES: Final = 32 * 1024
MAX_PARTS: Final = 32
MAX_HEADERS_PER_PART: Final = 8
MAX_HEADER_LINE_BYTES: Final = 2 * 1024
MAX_HEADER_TOTAL_BYTES: Final = 16 * 1024

IMAGE_FIELD: Final = "image"
TEXT_FIELDS: Final = frozenset({"questions", "locale", "hints"})
SINGLE_FIELDS: Final = frozenset({"locale", "hints"})

ANALYZE_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [IMAGE_FIELD],
                    "properties": {
                        IMAGE_FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": "The product photo: JPEG, PNG or WebP (HEIC where enabled).",
                        },
                        "questions": {
                            "type": "array",
                            "items": {"type": "string", "minLength": 1, "maxLength": MAX_QUESTION_CHARS},
                            "maxItems": MAX_CLIENT_QUESTIONS,
                            "description": "Extra questions for the vision model; repeat the field for each.",
                        },
                        "locale": {
                            "type": "string",
                            "default": DEFAULT_LOCALE,
                            "pattern": f"^{LOCALE_PATTERN.pattern}$",
                            "description": "Language of the report (BCP 47, e.g. en, fr-CA).",
                        },
                        "hints": {
                            "type": "string",
                            "maxLength": MAX_HINTS_CHARS,
                            "description": "The seller's own notes; passed to the writer as data.",
                        },
                    },
                },
                "encoding": {IMAGE_FIELD: {"contentType": "image/jpeg, image/png, image/webp, image/heic"}},
            }
        },
    }
}


async def image_upload(request: Request) -> ImageUpload:
    """Read, cap and validate the `/analyze` form, then normalize the image in a worker thread."""
    started = time.perf_counter()
    settings = settings_of(request)
    body_cap = settings.max_upload_bytes + FORM_OVERHEAD_BYTES
    reader = _FormReader(_boundary(request), max_image_bytes=settings.max_upload_bytes)
    if _content_length(request) > body_cap:
        raise ImageTooLarge(_too_large(settings.max_upload_bytes))

    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_cap:
                raise ImageTooLarge(_too_large(settings.max_upload_bytes))
            reader.feed(chunk)
            if reader.finished:
                break  # the epilogue, if any, is not worth reading
    except ClientDisconnect as exc:
        raise MalformedRequest("The client disconnected before the upload finished.") from exc
    if not reader.finished:
        raise MalformedRequest("The multipart body ended before its closing boundary.")

    if reader.image is None:
        raise MissingImage()
    if not reader.image:
        raise MissingImage("The 'image' part is empty; choose a photo to upload.")
    data = bytes(reader.image)
    options = _options(reader.fields)
    image = await anyio.to_thread.run_sync(
        partial(
            normalize_image,
            data,
            max_pixels=settings.max_image_pixels,
            store_max_side=settings.store_max_side,
            model_side=settings.model_image_side,
            quality=settings.jpeg_quality,
        ),
        limiter=image_limiter_of(request),
    )
    return ImageUpload(
        image=image,
        options=options,
        received_bytes=len(data),
        upload_ms=(time.perf_counter() - started) * 1000,
    )


ImageUploadDep = Annotated[ImageUpload, Depends(image_upload)]


def _too_large(max_bytes: int) -> str:
    return f"The upload is larger than the {max_bytes:,}-byte limit."


def _boundary(request: Request) -> bytes:
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data":
        raise MalformedRequest("Send the photo as multipart/form-data.")
    boundary = params.get(b"boundary", b"")
    if not boundary:
        raise MalformedRequest("The multipart/form-data Content-Type has no boundary.")
    return boundary


def _content_length(request: Request) -> int:
    raw = request.headers.get("content-length")
    if raw is None:
        return 0
    try:
        value = int(raw)
    except ValueError as exc:
        raise MalformedRequest("The Content-Length header is not a number.") from exc
    if value < 0:
        raise MalformedRequest("The Content-Length header is negative.")
    return value


class _FormReader:
    """python-multipart callbacks that collect the `image` part and the known text fields, within caps.

    Callbacks raise our `AppError`s directly; python-multipart lets them propagate out of `write`.
    """

    def __init__(self, boundary: bytes, *, max_image_bytes: int) -> None:
        self.max_image_bytes = max_image_bytes
        self.image: bytearray | None = None
        self.fields: dict[str, list[str]] = {name: [] for name in TEXT_FIELDS}
        self.finished = False
        self._parts = 0
        self._header_bytes = 0
        self._text_bytes = 0
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._sink: Literal["image", "text", "skip"] = "skip"
        self._name = ""
        self._known = False
        self._text = bytearray()
        try:
            self._parser = MultipartParser(
                boundary,
                callbacks={
                    "on_part_begin": self._part_begin,
                    "on_header_field": self._header_field,
                    "on_header_value": self._header_value_data,
                    "on_header_end": self._header_end,
                    "on_headers_finished": self._headers_finished,
                    "on_part_data": self._part_data,
                    "on_part_end": self._part_end,
                    "on_end": self._end,
                },
                max_header_count=MAX_HEADERS_PER_PART,
                max_header_size=MAX_HEADER_LINE_BYTES,
            )
        except (FormParserError, ValueError) as exc:
            raise MalformedRequest("The multipart boundary is invalid.") from exc

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise MalformedRequest() from exc

    # Headers -----------------------------------------------------------------------------

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise MalformedRequest(f"The form has more than {MAX_PARTS} parts.")
        self._headers.clear()
        self._sink = "skip"

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_TOTAL_BYTES:
            raise MalformedRequest("The form's part headers are too large.")

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._header_name).strip().lower()] = bytes(self._header_value).strip()
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition")
        if disposition is None:
            raise MalformedRequest("A form part has no Content-Disposition header.")
        kind, params = parse_options_header(disposition.decode("latin-1"))
        name_raw = params.get(b"name")
        if kind != b"form-data" or name_raw is None:
            raise MalformedRequest("A form part is not a named form-data field.")
        name = name_raw.decode("latin-1")
        self._name = name
        self._known = name in TEXT_FIELDS
        if name == IMAGE_FIELD:
            if self.image is not None:
                raise InvalidField("Send exactly one 'image' part.")
            self.image = bytearray()
            self._sink = "image"
        elif self._known or b"filename" not in params:
            if name == "questions" and len(self.fields[name]) >= MAX_CLIENT_QUESTIONS:
                raise InvalidField(f"Send at most {MAX_CLIENT_QUESTIONS} 'questions'.")
            if name in SINGLE_FIELDS and self.fields[name]:
                raise InvalidField(f"Send the field '{name}' at most once.")
            self._text.clear()
            self._sink = "text"
        else:
            self._sink = "skip"  # an unknown file part: dropped as it streams, bounded by the body cap

    # Data --------------------------------------------------------------------------------

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        if self._sink == "image":
            assert self.image is not None
            if len(self.image) + size > self.max_image_bytes:
                raise ImageTooLarge(_too_large(self.max_image_bytes))
            self.image += data[start:end]
        elif self._sink == "text":
            self._text_bytes += size
            if len(self._text) + size > MAX_TEXT_FIELD_BYTES or self._text_bytes > MAX_TEXT_TOTAL_BYTES:
                field = f"The field '{self._name}'" if self._known else "A form field"
                raise InvalidField(f"{field} is too long.")
            self._text += data[start:end]

    def _part_end(self) -> None:
        if self._sink == "text" and self._known:
            try:
                value = self._text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidField(f"The field '{self._name}' is not valid UTF-8.") from exc
            self.fields[self._name].append(value)
        self._sink = "skip"

    def _end(self) -> None:
        self.finished = True


def _options(fields: dict[str, list[str]]) -> AnalysisOptions:
    """Validate the text fields (each already UTF-8 and within the byte caps) into `AnalysisOptions`."""
    questions: list[str] = []
    for raw in fields["questions"]:
        question = raw.strip()
        if not question:
            raise InvalidField("Each 'questions' entry must be a non-empty question.")
        if len(question) > MAX_QUESTION_CHARS:
            raise InvalidField(f"Each 'questions' entry must be at most {MAX_QUESTION_CHARS} characters.")
        questions.append(question)

    locale = fields["locale"][0].strip() if fields["locale"] else ""
    if not locale:
        locale = DEFAULT_LOCALE
    elif not LOCALE_PATTERN.fullmatch(locale):
        raise InvalidField("The field 'locale' must be a language tag such as 'en' or 'fr-CA'.")

    hints = fields["hints"][0].strip() if fields["hints"] else ""
    if len(hints) > MAX_HINTS_CHARS:
        raise InvalidField(f"The field 'hints' must be at most {MAX_HINTS_CHARS} characters.")
    return AnalysisOptions(questions=tuple(questions), locale=locale, hints=hints or None)


__all__ = ["ANALYZE_OPENAPI", "ImageUploadDep", "image_upload"]
