"""Settings, read once from the environment (and `.env`) by `create_app`.

Every name here is part of the operator contract in DESIGN.md: extend, never rename.
Backend selectors are `Literal[...]`, so an unknown backend name stops startup with a
pydantic error naming the variable; `check_backends` adds the cross-field rules (a secret
the chosen backend needs, `AUTH_MODE=disabled` in production).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_QUESTIONS: tuple[str, ...] = (
    "What is this product?",
    "What brand is it?",
    "What color is it?",
    "What material is it made of?",
    "What condition is it in?",
    "What text is visible on it?",
)

MAX_CLIENT_QUESTIONS = 8
MAX_QUESTION_CHARS = 200
MAX_HINTS_CHARS = 500
# What Supabase Auth signs with: asymmetric signing keys (published as JWKS), or the legacy shared secret.
JWT_ALGORITHMS: tuple[str, ...] = ("ES256", "RS256", "EdDSA", "HS256")
# The model endpoint takes at most 16 questions a request (model/code/inference.py).
MAX_MODEL_QUESTIONS = 16


class ConfigError(Exception):
    """The configuration cannot start the service; the message is one sentence for the operator."""


class Settings(BaseSettings):
    """The service's configuration; field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    environment: Literal["development", "test", "production"] = "development"

    # Storage
    storage_backend: Literal["local", "s3"] = "local"
    storage_dir: Path = Path("./data/uploads")
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_kms_key_id: str | None = None
    aws_region: str = "ca-central-1"

    # Vision model
    vision_backend: Literal["local", "sagemaker"] = "local"
    model_dir: Path | None = None
    model_id: str = "Salesforce/blip2-opt-2.7b"
    model_device: Literal["auto", "cpu", "cuda"] = "auto"
    model_dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    sagemaker_endpoint: str = "blip2-endpoint"
    sagemaker_runtime_url: str | None = None
    vision_questions: tuple[str, ...] = DEFAULT_QUESTIONS
    vision_caption_max_new_tokens: int = Field(default=30, ge=1, le=128)
    vision_answer_max_new_tokens: int = Field(default=10, ge=1, le=64)
    vision_timeout_seconds: float = Field(default=20.0, gt=0)
    vision_max_attempts: int = Field(default=3, ge=1, le=10)

    # Report writer
    report_writer: Literal["template", "openai"] = "template"
    openai_api_key: SecretStr | None = None
    openai_model: str = "gpt-5-mini"
    openai_base_url: str | None = None
    openai_timeout_seconds: float = Field(default=20.0, gt=0)
    openai_max_retries: int = Field(default=1, ge=0, le=5)
    # Sent as `reasoning_effort`; set it empty for OpenAI-compatible servers that reject the parameter.
    openai_reasoning_effort: str | None = "minimal"

    # Auth
    auth_mode: Literal["disabled", "supabase"] = "disabled"
    supabase_url: str | None = None
    supabase_jwt_secret: SecretStr | None = None
    # Empty: ES256 and RS256 when SUPABASE_URL is set, HS256 when SUPABASE_JWT_SECRET is (see `jwt_algorithms`).
    supabase_jwt_algorithms: Annotated[tuple[str, ...], NoDecode] = ()
    supabase_jwks_cache_seconds: float = Field(default=600.0, gt=0)
    supabase_jwks_refetch_seconds: float = Field(default=30.0, ge=1)
    local_user_id: str = "local"

    # Database
    database_url: str = "sqlite+aiosqlite:///./data/app.db"
    database_timeout_seconds: float = Field(default=5.0, gt=0)
    database_pool_size: int = Field(default=5, ge=1, le=100)

    # What one user may spend (0 turns each off)
    rate_limit_per_minute: int = Field(default=10, ge=0)
    daily_quota: int = Field(default=100, ge=0)
    cache_ttl_seconds: int = Field(default=86_400, ge=0)

    # Uploads
    max_upload_bytes: int = Field(default=15 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    store_max_side: int = Field(default=1024, ge=64, le=4096)
    model_image_side: int = Field(default=384, ge=32, le=1024)
    jpeg_quality: int = Field(default=85, ge=50, le=95)

    # Operations
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()

    # Monitoring (PostHog events, the latency SLO, CloudWatch metrics in the log line)
    posthog_api_key: SecretStr | None = None
    posthog_host: str = "https://us.i.posthog.com"
    # Key of the HMAC that turns a user id into PostHog's distinct_id; the raw id never leaves.
    posthog_id_salt: SecretStr | None = None
    latency_slo_ms: int = Field(default=10_000, gt=0)
    latency_window_seconds: int = Field(default=300, ge=10)
    latency_min_samples: int = Field(default=20, ge=1)
    # CloudWatch embedded metric format namespace of the canonical log line; empty turns the block off.
    metrics_namespace: str = "ProductAnalyzer"

    # Supabase Edge Function logs: POST /v1/logs/edge -> CloudWatch Logs
    edge_log_token: SecretStr | None = None
    edge_log_group: str | None = None
    edge_log_stream: str | None = None
    edge_log_queue_max: int = Field(default=50_000, ge=100)
    edge_log_flush_seconds: float = Field(default=2.0, gt=0, le=60)
    edge_log_max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=16 * 1024 * 1024)

    @field_validator("cors_origins", "supabase_jwt_algorithms", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("supabase_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else None

    @field_validator("supabase_jwt_algorithms")
    @classmethod
    def _check_algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(value) - set(JWT_ALGORITHMS)
        if unknown:
            raise ValueError(f"unsupported {sorted(unknown)}; choose from {', '.join(JWT_ALGORITHMS)}")
        return value

    def jwt_algorithms(self) -> tuple[str, ...]:
        """The algorithms a token may be signed with: configured, never read from the token."""
        if self.supabase_jwt_algorithms:
            return self.supabase_jwt_algorithms
        derived: tuple[str, ...] = ("ES256", "RS256") if self.supabase_url else ()
        return derived + (("HS256",) if self.supabase_jwt_secret else ())

    @field_validator("vision_questions")
    @classmethod
    def _check_questions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        questions = tuple(q.strip() for q in value)
        if any(not q or len(q) > MAX_QUESTION_CHARS for q in questions):
            raise ValueError(f"each question must be 1 to {MAX_QUESTION_CHARS} characters")
        if len(questions) + MAX_CLIENT_QUESTIONS > MAX_MODEL_QUESTIONS:
            raise ValueError(
                f"at most {MAX_MODEL_QUESTIONS - MAX_CLIENT_QUESTIONS} questions, leaving room for the client's"
            )
        return questions

    @field_validator("local_user_id")
    @classmethod
    def _check_user_id(cls, value: str) -> str:
        if not value or value in (".", "..") or len(value) > 64:
            raise ValueError("must be 1 to 64 characters and not '.' or '..'")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    def check_backends(self) -> None:
        """Raise `ConfigError` when the chosen backends lack what they need."""
        if self.environment == "production" and self.auth_mode == "disabled":
            raise ConfigError("AUTH_MODE=disabled is refused when ENVIRONMENT=production; set AUTH_MODE=supabase.")
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ConfigError("STORAGE_BACKEND=s3 needs S3_BUCKET.")
        if self.report_writer == "openai" and self.openai_api_key is None:
            raise ConfigError("REPORT_WRITER=openai needs OPENAI_API_KEY.")
        if self.vision_backend == "local" and self.model_dir and not (self.model_dir / "config.json").is_file():
            raise ConfigError(
                f"MODEL_DIR={self.model_dir} holds no BLIP-2 model (no config.json); "
                "build the tiny one with `make tiny-model` or point MODEL_DIR at a downloaded model."
            )
        if self.posthog_api_key is not None and self.posthog_id_salt is None:
            raise ConfigError(
                "POSTHOG_API_KEY needs POSTHOG_ID_SALT (a random secret, e.g. `openssl rand -hex 32`) "
                "to hash user ids before they leave."
            )
        if self.edge_log_group and self.edge_log_token is None:
            raise ConfigError("EDGE_LOG_GROUP needs EDGE_LOG_TOKEN, the bearer token Edge Functions send.")
        if self.auth_mode == "supabase":
            if not (self.supabase_url or self.supabase_jwt_secret):
                raise ConfigError("AUTH_MODE=supabase needs SUPABASE_URL (JWKS) or SUPABASE_JWT_SECRET (HS256).")
            algorithms = set(self.jwt_algorithms())
            if "HS256" in algorithms and self.supabase_jwt_secret is None:
                raise ConfigError("SUPABASE_JWT_ALGORITHMS includes HS256, which needs SUPABASE_JWT_SECRET.")
            if algorithms - {"HS256"} and not self.supabase_url:
                raise ConfigError("SUPABASE_JWT_ALGORITHMS includes ES256/RS256/EdDSA, which need SUPABASE_URL (JWKS).")
