"""What the infra tests share: the contexts the session synthesizes, the stack names, `Synthesis`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk.assertions import Template
from constructs import IConstruct

from infra.build import Deployment
from infra.config import AppConfig, load_config
from infra.stacks.service import ServiceStack

IMAGE_TAG = "0123abcd"
GITHUB_REPO = "acme/product-analyzer"
DOMAIN = "api.example.com"
ZONE_ID = "Z0123456789ABCDEFGHIJ"
ALARM_EMAIL = "ops@example.com"
SUPABASE_URL = "https://abcd.supabase.co"
STAGING_CONTEXT = {"env": "staging", "imageTag": IMAGE_TAG, "githubRepo": GITHUB_REPO}
PRODUCTION_CONTEXT = {
    "env": "production",
    "imageTag": IMAGE_TAG,
    "githubRepo": GITHUB_REPO,
    "regions": "ca-central-1,us-east-1",
    "domainName": DOMAIN,
    "hostedZoneId": ZONE_ID,
    "alarmEmail": ALARM_EMAIL,
    "supabaseUrl": SUPABASE_URL,
}

STAGING = "ProductAnalyzer-Staging-ca-central-1"
PRODUCTION = "ProductAnalyzer-Production-ca-central-1"
PRODUCTION_US = "ProductAnalyzer-Production-us-east-1"
REGISTRY = "ProductAnalyzer-Registry-ca-central-1"
REGISTRY_US = "ProductAnalyzer-Registry-us-east-1"
GITHUB_OIDC = "ProductAnalyzer-GitHubOidc"


def config_from(context: dict[str, str]) -> AppConfig:
    """What `-c key=value ...` on the command line would configure."""
    return load_config(context.get)


@dataclass
class Synthesis:
    """The synthesized app: its stacks, the cloud assembly folder, and each template, parsed once."""

    app: cdk.App
    deployment: Deployment
    outdir: Path
    _templates: dict[str, Template] = field(default_factory=dict)

    def stack(self, name: str) -> cdk.Stack:
        return next(stack for stack in self.deployment.stacks() if stack.stack_name == name)

    def template_path(self, name: str) -> Path:
        return self.outdir / f"{name}.template.json"

    def template(self, name: str) -> Template:
        if name not in self._templates:
            self._templates[name] = Template.from_stack(self.stack(name))
        return self._templates[name]

    def service(self, name: str) -> ServiceStack:
        stack = self.stack(name)
        assert isinstance(stack, ServiceStack)
        return stack

    def logical_id(self, construct: IConstruct) -> str:
        """The logical id of `construct`'s CloudFormation resource (an L2's default child)."""
        element = construct if isinstance(construct, cdk.CfnElement) else construct.node.default_child
        assert isinstance(element, cdk.CfnElement), construct
        logical_id: str = cdk.Stack.of(element).resolve(element.logical_id)
        return logical_id

    def resources(self, name: str, resource_type: str) -> dict[str, Any]:
        """`{logical id: resource}` of one type, for assertions `Template` has no matcher for."""
        found: dict[str, Any] = self.template(name).find_resources(resource_type)
        return found
