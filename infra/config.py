"""What differs between deployments: one `EnvironmentConfig` per environment, picked by CDK context.

    cdk synth -c env=production -c imageTag=$GITHUB_SHA [-c regions=ca-central-1,us-east-1]
              [-c domainName=api.example.com -c hostedZoneId=Z123 [-c hostedZoneName=example.com]]
              [-c alarmEmail=ops@example.com] [-c supabaseUrl=https://xyz.supabase.co]
              [-c githubRepo=owner/repo [-c githubOidcProviderArn=arn:aws:iam::…:oidc-provider/…]]
              [-c desiredCount=0] [-c imageRetentionDays=30] [-c latencySloMs=10000]

Context values arrive as strings from `-c` and as JSON values from cdk.json; `load_config` reads
both and refuses anything malformed with one sentence naming the key.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

SERVICE = "product-analyzer"
REPOSITORY_NAME = "product-analyzer"
ENDPOINT_NAME = "blip2-endpoint"
METRICS_NAMESPACE = "ProductAnalyzer"
# Below API Gateway's 10 MB payload limit (HTTP APIs), so that an oversized photo meets the app's own JSON 413.
MAX_UPLOAD_BYTES = 9_500_000
DEFAULT_REGION = "ca-central-1"
IMAGE_RETENTION_DAYS = 30
LATENCY_SLO_MS = 10_000
# The ECR repository is shared by every environment, so it keeps enough images to roll back production.
IMAGE_RETENTION_COUNT = 30
# `-c githubRepo=owner/repo`; until it is given, the deploy role trusts this repository, which is no one's.
GITHUB_REPO_PLACEHOLDER = "OWNER/REPO"

EnvironmentName = Literal["staging", "production"]
ENVIRONMENTS: tuple[EnvironmentName, ...] = ("staging", "production")
CpuArchitecture = Literal["ARM64", "X86_64"]

_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
_GITHUB_REPO = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
_IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_ZONE_ID = re.compile(r"^Z[A-Z0-9]{1,31}$")
_OIDC_PROVIDER_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:oidc-provider/token\.actions\.githubusercontent\.com$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ConfigError(ValueError):
    """The context cannot describe a deployment; the message names the offending key."""


@dataclass(frozen=True, kw_only=True)
class DomainConfig:
    """A custom domain for the API: an ACM certificate and a Route 53 alias in `hosted_zone_id`."""

    domain_name: str
    hosted_zone_id: str
    hosted_zone_name: str


@dataclass(frozen=True, kw_only=True)
class EnvironmentConfig:
    """Everything one environment (staging, production) sets; each region gets the same stack set."""

    name: EnvironmentName
    regions: tuple[str, ...] = (DEFAULT_REGION,)
    # ECS service size: desired tasks at deploy time, and the autoscaling floor and ceiling.
    desired_count: int
    min_tasks: int
    max_tasks: int
    cpu: int = 512
    memory_mib: int = 1024
    # Graviton: about 20% cheaper per vCPU-hour on Fargate, and every wheel in requirements.txt ships
    # for aarch64 (no torch in the service image). The image must be built for linux/arm64.
    cpu_architecture: CpuArchitecture = "ARM64"
    # One NAT gateway: the tasks reach OpenAI, Supabase and PostHog on the internet; AWS traffic
    # takes the VPC endpoints. Two (one per AZ) removes the single-AZ egress dependency for ~$33/month.
    nat_gateways: int = 1
    domain: DomainConfig | None = None
    image_retention_days: int = IMAGE_RETENTION_DAYS
    latency_slo_ms: int = LATENCY_SLO_MS
    alarm_email: str | None = None
    log_retention_days: int = 30
    # Keep log groups when the stack is deleted (buckets and the KMS key are always kept).
    retain_logs: bool = False
    supabase_url: str | None = None
    openai_model: str = "gpt-5-mini"
    sagemaker_endpoint: str = ENDPOINT_NAME
    # Alarm thresholds
    fault_rate_percent: float = 5.0
    fault_rate_min_requests: int = 10
    model_latency_p95_ms: int = 5_000
    async_backlog_threshold: int = 20
    # HTTP API default-stage throttling (requests per second, burst)
    throttle_rate_limit: int = 50
    throttle_burst_limit: int = 100
    # Autoscaling targets
    cpu_target_percent: int = 60
    requests_per_target_per_minute: int = 120

    @property
    def title(self) -> str:
        """`Staging` or `Production`, as stack names spell it."""
        return self.name.capitalize()


@dataclass(frozen=True, kw_only=True)
class AppConfig:
    """One synthesis: an environment, the image to run, and the account-wide settings."""

    environment: EnvironmentConfig
    image_tag: str = "latest"
    github_repo: str = GITHUB_REPO_PLACEHOLDER
    # The account's GitHub OIDC provider, when another project already created it (one per URL per account).
    github_oidc_provider_arn: str | None = None
    image_retention_count: int = IMAGE_RETENTION_COUNT


DEFAULTS: dict[str, EnvironmentConfig] = {
    "staging": EnvironmentConfig(
        name="staging",
        # Its own endpoint: a model deployed to staging must not reach production before the approval.
        sagemaker_endpoint=f"{ENDPOINT_NAME}-staging",
        desired_count=1,
        min_tasks=1,
        max_tasks=2,
        throttle_rate_limit=20,
        throttle_burst_limit=40,
    ),
    "production": EnvironmentConfig(
        name="production",
        desired_count=2,
        min_tasks=2,
        max_tasks=6,
        log_retention_days=90,
        retain_logs=True,
    ),
}

ContextGetter = Callable[[str], object]


def load_config(context: ContextGetter) -> AppConfig:
    """Build the configuration from CDK context (`app.node.try_get_context`); raise `ConfigError`."""
    name = _text(context, "env") or "staging"
    if name not in DEFAULTS:
        raise ConfigError(f"-c env={name!r}: choose one of {', '.join(ENVIRONMENTS)}.")
    env = DEFAULTS[name]
    changes: dict[str, Any] = {}

    regions = _text(context, "regions")
    if regions:
        parsed = tuple(dict.fromkeys(part.strip() for part in regions.split(",") if part.strip()))
        bad = [region for region in parsed if not _REGION.match(region)]
        if not parsed or bad:
            raise ConfigError(f"-c regions={regions!r}: expected region names such as ca-central-1,us-east-1.")
        changes["regions"] = parsed

    domain_name = _text(context, "domainName")
    zone_id = _text(context, "hostedZoneId")
    if domain_name or zone_id:
        changes["domain"] = _domain(domain_name, zone_id, _text(context, "hostedZoneName"))

    email = _text(context, "alarmEmail")
    if email:
        if not _EMAIL.match(email):
            raise ConfigError(f"-c alarmEmail={email!r} is not an email address.")
        changes["alarm_email"] = email

    supabase_url = _text(context, "supabaseUrl")
    if supabase_url:
        if not supabase_url.startswith("https://"):
            raise ConfigError(f"-c supabaseUrl={supabase_url!r} must start with https://.")
        changes["supabase_url"] = supabase_url.rstrip("/")

    desired = _number(context, "desiredCount", minimum=0, maximum=env.max_tasks)
    if desired is not None:
        # Zero lets a first deploy create the secrets before any task needs them.
        changes["desired_count"] = desired
        changes["min_tasks"] = min(env.min_tasks, desired)
    retention_days = _number(context, "imageRetentionDays", minimum=1, maximum=3650)
    if retention_days is not None:
        changes["image_retention_days"] = retention_days
    slo_ms = _number(context, "latencySloMs", minimum=1, maximum=600_000)
    if slo_ms is not None:
        changes["latency_slo_ms"] = slo_ms

    image_tag = _text(context, "imageTag") or "latest"
    if not _IMAGE_TAG.match(image_tag):
        raise ConfigError(f"-c imageTag={image_tag!r} is not a valid image tag.")
    github_repo = _text(context, "githubRepo") or GITHUB_REPO_PLACEHOLDER
    if not _GITHUB_REPO.match(github_repo):
        raise ConfigError(f"-c githubRepo={github_repo!r}: expected owner/repository.")
    provider_arn = _text(context, "githubOidcProviderArn")
    if provider_arn and not _OIDC_PROVIDER_ARN.match(provider_arn):
        raise ConfigError(f"-c githubOidcProviderArn={provider_arn!r} is not an IAM OIDC provider ARN.")
    return AppConfig(
        environment=dataclasses.replace(env, **changes),
        image_tag=image_tag,
        github_repo=github_repo,
        github_oidc_provider_arn=provider_arn,
    )


def _domain(domain_name: str | None, zone_id: str | None, zone_name: str | None) -> DomainConfig:
    if not (domain_name and zone_id):
        raise ConfigError("-c domainName and -c hostedZoneId go together: give both, or neither.")
    domain_name = domain_name.lower().rstrip(".")
    if not _DOMAIN.match(domain_name):
        raise ConfigError(f"-c domainName={domain_name!r} is not a domain name.")
    if not _ZONE_ID.match(zone_id):
        raise ConfigError(f"-c hostedZoneId={zone_id!r} is not a Route 53 hosted zone id (Z...).")
    # api.example.com lives in example.com unless told otherwise.
    zone_name = (zone_name or domain_name.split(".", 1)[1]).lower().rstrip(".")
    if domain_name != zone_name and not domain_name.endswith(f".{zone_name}"):
        raise ConfigError(f"-c domainName={domain_name!r} is not inside hosted zone {zone_name!r}.")
    return DomainConfig(domain_name=domain_name, hosted_zone_id=zone_id, hosted_zone_name=zone_name)


def _text(context: ContextGetter, key: str) -> str | None:
    value = context(key)
    if value is None:
        return None
    return str(value).strip() or None


def _number(context: ContextGetter, key: str, *, minimum: int, maximum: int) -> int | None:
    value = _text(context, key)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"-c {key}={value!r} is not a whole number.") from None
    if not minimum <= number <= maximum:
        raise ConfigError(f"-c {key}={number} is outside {minimum}..{maximum}.")
    return number
