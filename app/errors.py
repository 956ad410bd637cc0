"""The service's exceptions: one base, a status code, a stable snake_case code, a safe sentence.

    AppError (500 internal_error)
    ├── MissingImage            400 missing_image
    ├── MalformedRequest        400 malformed_request
    ├── Unauthorized            401 unauthorized        (WWW-Authenticate: Bearer)
    ├── NotFound                404 not_found
    ├── Conflict                409 conflict
    │   ├── IdempotencyKeyInUse 409 idempotency_key_in_use   (Retry-After; the first request still runs)
    │   └── AnalysisRunning     409 analysis_running
    ├── ImageTooLarge           413 image_too_large
    ├── PayloadTooLarge         413 payload_too_large
    ├── UnsupportedImage        415 unsupported_image
    ├── UnsupportedMediaType    415 unsupported_media_type
    ├── InvalidField            422 invalid_field
    │   └── IdempotencyKeyReused 422 idempotency_key_reused  (the same key with another request)
    ├── RateLimited             429 rate_limited        (Retry-After)
    ├── UpstreamError           502 upstream_error
    │   ├── VisionModelError    502 vision_model_error
    │   └── ReportWriterError   502 report_writer_error
    ├── UpstreamUnavailable     503 upstream_unavailable
    ├── UpstreamTimeout         504 upstream_timeout
    └── NotReady                503 not_ready

Adapters wrap third-party errors into these (`raise VisionModelError(...) from exc`), so
nothing above the adapters ever sees a boto3 or OpenAI exception. `app.errors_http` renders
every `AppError` as the JSON error body of DESIGN.md; anything else reaches `app.middleware`,
which logs it and answers the generic 500.
`detail` is shown to clients: it never carries secrets, tokens, paths or upstream bodies.
"""

from __future__ import annotations

from collections.abc import Mapping


class AppError(Exception):
    status_code: int = 500
    code: str = "internal_error"
    detail: str = "The server failed to handle this request."

    def __init__(self, detail: str | None = None, *, headers: Mapping[str, str] | None = None) -> None:
        if detail is not None:
            self.detail = detail
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self.detail)


class MissingImage(AppError):
    status_code = 400
    code = "missing_image"
    detail = "Send the photo as the multipart form field 'image'."


class MalformedRequest(AppError):
    status_code = 400
    code = "malformed_request"
    detail = "The request body is not a valid multipart/form-data upload."


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"
    detail = "A valid bearer token is required."

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class NotFound(AppError):
    status_code = 404
    code = "not_found"
    detail = "No such resource."


class Conflict(AppError):
    status_code = 409
    code = "conflict"
    detail = "The request conflicts with the resource's current state."


class IdempotencyKeyInUse(Conflict):
    code = "idempotency_key_in_use"
    detail = "A request with this Idempotency-Key is still running; retry it shortly."

    def __init__(self, retry_after_s: int = 1) -> None:
        super().__init__(headers={"Retry-After": str(max(1, retry_after_s))})


class AnalysisRunning(Conflict):
    code = "analysis_running"
    detail = "The analysis is still running; delete it once it has finished."


class ImageTooLarge(AppError):
    status_code = 413
    code = "image_too_large"
    detail = "The image is too large."


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"
    detail = "The request body is too large."


class UnsupportedMediaType(AppError):
    status_code = 415
    code = "unsupported_media_type"
    detail = "Send the body as application/json."


class UnsupportedImage(AppError):
    status_code = 415
    code = "unsupported_image"
    detail = "The file is not a supported image (JPEG, PNG or WebP)."


class InvalidField(AppError):
    status_code = 422
    code = "invalid_field"
    detail = "A form field is invalid."


class IdempotencyKeyReused(InvalidField):
    code = "idempotency_key_reused"
    detail = "This Idempotency-Key was used with a different request; use a new key for a new request."


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"
    detail = "Too many requests; retry later."

    def __init__(self, retry_after_s: int, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after_s))})


class UpstreamError(AppError):
    status_code = 502
    code = "upstream_error"
    detail = "An upstream service returned an error."


class VisionModelError(UpstreamError):
    code = "vision_model_error"
    detail = "The vision model failed to describe the image."


class ReportWriterError(UpstreamError):
    code = "report_writer_error"
    detail = "The report writer failed to write a report."


class UpstreamUnavailable(AppError):
    status_code = 503
    code = "upstream_unavailable"
    detail = "An upstream service is unavailable; retry later."


class UpstreamTimeout(AppError):
    status_code = 504
    code = "upstream_timeout"
    detail = "An upstream service did not answer in time."


class NotReady(AppError):
    status_code = 503
    code = "not_ready"
    detail = "The service is not ready."
