"""Compose the stacks of a deployment into a CDK app; `main` is what `python app.py` runs.

Per region of the environment: `ProductAnalyzer-Registry-<region>` and `ProductAnalyzer-<Env>-<region>`
(which deploys after it); per account: `ProductAnalyzer-GitHubOidc`, in the first region.
Every stack is checked by cdk-nag's AwsSolutions pack as it synthesizes.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aws_cdk as cdk

from infra.config import SERVICE, AppConfig, ConfigError, load_config
from infra.nag import add_checks
from infra.stacks.github_oidc import GitHubOidcStack
from infra.stacks.registry import RegistryStack
from infra.stacks.service import ServiceStack

DEFAULT_OUTDIR = Path(__file__).resolve().parent / "cdk.out"
STACK_PREFIX = "ProductAnalyzer"
# Behaviours newer than aws-cdk-lib's defaults, set here rather than in cdk.json so that the CLI,
# `python app.py` and the tests synthesize the same templates.
FEATURE_FLAGS = {
    # Server access logs are delivered under a bucket policy, not the legacy log-delivery ACL.
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
}


@dataclass
class Deployment:
    """The stacks one synthesis made, by region (and environment)."""

    registries: dict[str, RegistryStack] = field(default_factory=dict)
    services: dict[tuple[str, str], ServiceStack] = field(default_factory=dict)
    github_oidc: GitHubOidcStack | None = None

    def stacks(self) -> list[cdk.Stack]:
        """Every stack, registries first."""
        stacks: list[cdk.Stack] = [*self.registries.values(), *self.services.values()]
        return [*stacks, self.github_oidc] if self.github_oidc else stacks


def registry_stack_name(region: str) -> str:
    """`ProductAnalyzer-Registry-<region>`."""
    return f"{STACK_PREFIX}-Registry-{region}"


def service_stack_name(environment_title: str, region: str) -> str:
    """`ProductAnalyzer-<Env>-<region>`."""
    return f"{STACK_PREFIX}-{environment_title}-{region}"


GITHUB_OIDC_STACK_NAME = f"{STACK_PREFIX}-GitHubOidc"


def build(
    app: cdk.App,
    configs: Sequence[AppConfig],
    *,
    account: str | None = None,
) -> Deployment:
    """Add the stacks of `configs` (usually one environment; tests pass several) to `app`, with cdk-nag.

    `account` pins the account (default: the CLI's `CDK_DEFAULT_ACCOUNT`, else account-agnostic).
    """
    for flag, value in FEATURE_FLAGS.items():
        app.node.set_context(flag, value)
    account = account or os.environ.get("CDK_DEFAULT_ACCOUNT")
    deployment = Deployment()
    for config in configs:
        env = config.environment
        for region in env.regions:
            where = cdk.Environment(account=account, region=region)
            if region not in deployment.registries:
                deployment.registries[region] = RegistryStack(
                    app,
                    registry_stack_name(region),
                    env=where,
                    image_retention_count=config.image_retention_count,
                    description=f"{SERVICE}: the ECR repository every environment pulls from ({region})",
                )
            stack = ServiceStack(
                app,
                service_stack_name(env.title, region),
                env=where,
                config=env,
                image_tag=config.image_tag,
                description=f"{SERVICE} {env.name} in {region}",
                termination_protection=env.name == "production",
            )
            stack.add_stack_dependency(deployment.registries[region], "the task definition pulls from the repository")
            cdk.Tags.of(stack).add("environment", env.name)
            deployment.services[(env.name, region)] = stack
    first = configs[0]
    deployment.github_oidc = GitHubOidcStack(
        app,
        GITHUB_OIDC_STACK_NAME,
        env=cdk.Environment(account=account, region=first.environment.regions[0]),
        github_repo=first.github_repo,
        existing_provider_arn=first.github_oidc_provider_arn,
        description=f"{SERVICE}: GitHub Actions OIDC provider and deploy role (one per account)",
    )
    cdk.Tags.of(app).add("project", SERVICE)
    add_checks(app)
    return deployment


def parse_context(argv: Sequence[str]) -> dict[str, str]:
    """`-c key=value` pairs, as the CDK CLI takes them, for `python app.py` run by hand."""
    parser = argparse.ArgumentParser(prog="app.py", description="Synthesize the product-analyzer stacks.")
    parser.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    context: dict[str, str] = {}
    for pair in args.context:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            parser.error(f"-c {pair!r}: expected KEY=VALUE")
        context[key] = value
    return context


def main(argv: Sequence[str]) -> int:
    """Synthesize into `$CDK_OUTDIR` (set by the CLI) or infra/cdk.out; return the exit status."""
    context = parse_context(argv)
    outdir = None if os.environ.get("CDK_OUTDIR") else str(DEFAULT_OUTDIR)
    app = cdk.App(context=context, outdir=outdir)
    try:
        config = load_config(app.node.try_get_context)
    except ConfigError as exc:
        print(f"error: {exc}")
        return 2
    build(app, [config])
    app.synth()
    return 0
