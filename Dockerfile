# The service image: FastAPI on uvicorn, port 8080, for ECS Fargate behind an ALB.
#
#   docker build -t product-analyzer --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --rm -p 8080:8080 --env-file prod.env product-analyzer
#   docker run --rm --env-file prod.env product-analyzer alembic upgrade head   # migrations, as a one-off task
#
# No torch and no model/ code: the image talks to BLIP-2 on SageMaker (docker/model.Dockerfile is
# the model's own image). Its defaults are production's backends; the deploy sets the rest
# (S3_BUCKET, DATABASE_URL, OPENAI_API_KEY, SUPABASE_URL, ...), and startup refuses to run without them.

# Pinned by version. Pin the digest too (python:3.11.17-slim-bookworm@sha256:...) where a registry
# can be reached to read it; this repository is built and checked offline, where it cannot.
FROM python:3.11.17-slim-bookworm AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH="/opt/venv/bin:$PATH"


# Dependencies in a virtual environment of their own, a layer that only requirements.txt changes.
# Wheels only: slim has no compiler, and a package that would need one should fail here, loudly.
FROM base AS builder

WORKDIR /build
RUN python -m venv "$VIRTUAL_ENV"
COPY requirements.txt ./
RUN python -m pip install --no-cache-dir --require-virtualenv --only-binary=:all: -r requirements.txt


FROM base AS runtime

# The service's own defaults: production backends, one JSON log line per event.
ENV ENVIRONMENT=production \
    VISION_BACKEND=sagemaker \
    STORAGE_BACKEND=s3 \
    REPORT_WRITER=openai \
    AUTH_MODE=supabase \
    LOG_FORMAT=json

WORKDIR /srv

COPY --from=builder /opt/venv /opt/venv
# app/ brings the Alembic migrations (app/adapters/sql/migrations); alembic.ini lets operators run
# `alembic upgrade head` from this image. Files stay root's: the service cannot change its own code.
COPY app/ ./app/
COPY alembic.ini ./

# Bytecode compiled once here, since PYTHONDONTWRITEBYTECODE keeps the service from writing it
# (the root filesystem may be read-only). A fixed uid, so that file ownership and runAsNonRoot checks hold.
RUN python -m compileall -q app \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin app
USER 10001:10001

EXPOSE 8080

# Liveness without curl: /healthz checks no dependency. ECS runs this only if the task definition
# asks for it; the ALB's own health check calls the same path.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"]

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="product-analyzer" \
      org.opencontainers.image.description="Photo of a product in, structured product report out" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT"

# One process a task: ECS scales tasks, not workers. X-Forwarded-* is trusted from FORWARDED_ALLOW_IPS,
# which uvicorn reads when no flag overrides it: any address here (the ALB is the only peer, through
# its security group), narrowed to the VPC's CIDR by the deploy (infra/). On SIGTERM uvicorn stops accepting, finishes what is
# in flight for up to 20 s, then exits, within ECS's default stopTimeout of 30 s. Keep-alive outlasts
# the ALB's 60 s idle timeout, so the ALB, not uvicorn, closes idle connections (no 502 on reuse).
STOPSIGNAL SIGTERM
ENV FORWARDED_ALLOW_IPS="*"
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8080", "--proxy-headers", \
     "--timeout-graceful-shutdown", "20", "--timeout-keep-alive", "65"]
