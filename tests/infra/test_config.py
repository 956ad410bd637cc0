"""Configuration from CDK context: defaults, overrides, and refusals that name the key. No synthesis."""

from __future__ import annotations

import pytest

from infra.build import parse_context
from infra.config import (
    DEFAULT_REGION,
    GITHUB_REPO_PLACEHOLDER,
    IMAGE_RETENTION_DAYS,
    LATENCY_SLO_MS,
    ConfigError,
    DomainConfig,
    load_config,
)


def test_defaults_are_staging_in_ca_central_1_with_the_latest_image() -> None:
    config = load_config({}.get)

    env = config.environment
    assert env.name == "staging"
    assert env.title == "Staging"
    assert env.regions == (DEFAULT_REGION,) == ("ca-central-1",)
    assert config.image_tag == "latest"
    assert config.github_repo == GITHUB_REPO_PLACEHOLDER
    assert env.image_retention_days == IMAGE_RETENTION_DAYS == 30
    assert env.latency_slo_ms == LATENCY_SLO_MS == 10_000
    assert env.domain is None
    assert env.alarm_email is None
    assert env.cpu_architecture == "ARM64"
    assert env.nat_gateways == 1


def test_production_is_larger_and_keeps_its_logs() -> None:
    staging = load_config({"env": "staging"}.get).environment
    production = load_config({"env": "production"}.get).environment

    assert (staging.desired_count, staging.min_tasks, staging.max_tasks) == (1, 1, 2)
    assert (production.desired_count, production.min_tasks, production.max_tasks) == (2, 2, 6)
    assert production.retain_logs
    assert not staging.retain_logs
    assert production.log_retention_days > staging.log_retention_days


def test_context_overrides_each_setting() -> None:
    context = {
        "env": "production",
        "imageTag": "3f2a9c1",
        "regions": "ca-central-1, us-east-1,ca-central-1",
        "domainName": "API.Example.com.",
        "hostedZoneId": "Z0123456789ABCDEFGHIJ",
        "alarmEmail": "ops@example.com",
        "supabaseUrl": "https://abcd.supabase.co/",
        "githubRepo": "acme/product-analyzer",
        "githubOidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com",
        "desiredCount": "0",
        "imageRetentionDays": 7,  # cdk.json gives JSON numbers, -c gives strings
        "latencySloMs": "8000",
    }
    config = load_config(context.get)

    env = config.environment
    assert config.image_tag == "3f2a9c1"
    assert env.regions == ("ca-central-1", "us-east-1")
    assert env.domain == DomainConfig(
        domain_name="api.example.com", hosted_zone_id="Z0123456789ABCDEFGHIJ", hosted_zone_name="example.com"
    )
    assert env.alarm_email == "ops@example.com"
    assert env.supabase_url == "https://abcd.supabase.co"
    assert config.github_repo == "acme/product-analyzer"
    assert config.github_oidc_provider_arn == context["githubOidcProviderArn"]
    # Zero tasks (first deploy, before the secrets are filled) lowers the autoscaling floor with it.
    assert (env.desired_count, env.min_tasks, env.max_tasks) == (0, 0, 6)
    assert env.image_retention_days == 7
    assert env.latency_slo_ms == 8000


def test_an_explicit_hosted_zone_name_is_kept() -> None:
    context = {"domainName": "api.eu.example.com", "hostedZoneId": "Z123", "hostedZoneName": "eu.example.com"}

    domain = load_config(context.get).environment.domain

    assert domain is not None
    assert domain.hosted_zone_name == "eu.example.com"


@pytest.mark.parametrize(
    ("context", "key"),
    [
        ({"env": "prod"}, "env"),
        ({"regions": "canada"}, "regions"),
        ({"regions": " , "}, "regions"),
        ({"domainName": "api.example.com"}, "domainName"),
        ({"hostedZoneId": "Z123"}, "domainName"),
        ({"domainName": "api..example", "hostedZoneId": "Z123"}, "domainName"),
        ({"domainName": "api.example.com", "hostedZoneId": "123"}, "hostedZoneId"),
        ({"domainName": "api.example.com", "hostedZoneId": "Z123", "hostedZoneName": "other.com"}, "domainName"),
        ({"alarmEmail": "ops"}, "alarmEmail"),
        ({"supabaseUrl": "http://abcd.supabase.co"}, "supabaseUrl"),
        ({"desiredCount": "two"}, "desiredCount"),
        ({"desiredCount": "99"}, "desiredCount"),
        ({"imageRetentionDays": "0"}, "imageRetentionDays"),
        ({"imageTag": "not a tag"}, "imageTag"),
        ({"githubRepo": "product-analyzer"}, "githubRepo"),
        ({"githubOidcProviderArn": "arn:aws:iam::1:oidc-provider/x"}, "githubOidcProviderArn"),
    ],
)
def test_bad_context_is_refused_naming_the_key(context: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(context.get)


def test_app_py_takes_context_the_way_the_cli_does() -> None:
    assert parse_context(["-c", "env=production", "--context", "imageTag=abc", "-c", "alarmEmail="]) == {
        "env": "production",
        "imageTag": "abc",
        "alarmEmail": "",
    }
    with pytest.raises(SystemExit):
        parse_context(["-c", "env"])
