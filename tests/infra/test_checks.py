"""The checks careful teams run before AWS sees a template: cfn-lint on every synthesized template, and
cdk-nag's AwsSolutions pack with no finding left but the acknowledged ones, each with its reason.

cdk-nag 3 is a CDK policy-validation plugin, not an aspect: its findings never become annotations
(`Annotations.from_stack(...).find_error(...)` would find nothing, whatever the templates hold), and
`Aspects.of(app).add(AwsSolutionsChecks())` breaks synthesis. So the pack is asked directly
(`validate_scope`), and a one-bucket app shows that the way `build` registers it stops a synthesis.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from cdk_nag import AwsSolutionsChecks
from cfnlint.api import ManualArgs, lint_file

from infra.nag import MIN_REASON_CHARS, acknowledge, add_checks, grant
from tests.infra.synth import (
    GITHUB_OIDC,
    PRODUCTION,
    PRODUCTION_US,
    REGISTRY,
    REGISTRY_US,
    STAGING,
    Synthesis,
)

ALL_STACKS = [REGISTRY, REGISTRY_US, STAGING, PRODUCTION, PRODUCTION_US, GITHUB_OIDC]
# What each kind of stack acknowledges; a new acknowledgment is a decision, so it is added here too.
ACKNOWLEDGED = {
    "service": {
        "AwsSolutions-S1",  # the access-log bucket does not log into itself
        "AwsSolutions-SMG4",  # third-party keys, rotated by the operator
        "AwsSolutions-ECS2",  # plain environment holds configuration only
        "AwsSolutions-APIG4",  # the app verifies Supabase tokens itself
        "AwsSolutions-IAM5",  # prefix-scoped wildcards, each explained
    },
    "registry": set(),
    "github_oidc": {"AwsSolutions-IAM5"},
}


def _kind(name: str) -> str:
    if name == GITHUB_OIDC:
        return "github_oidc"
    return "registry" if "-Registry-" in name else "service"


def _acknowledgments(stack: cdk.Stack) -> list[tuple[str, str, str]]:
    """(construct path, rule id, reason) of every cdk-nag acknowledgment in `stack`."""
    found = []
    for construct in stack.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                for rule, reason in dict(entry.data).items():
                    rule = re.sub(r"^annotation::", "", rule, flags=re.IGNORECASE)
                    if rule.startswith("AwsSolutions-"):
                        found.append((construct.node.path, rule, str(reason)))
    return found


@pytest.mark.parametrize("name", ALL_STACKS)
def test_cfn_lint_finds_nothing(synthesis: Synthesis, name: str) -> None:
    region = synthesis.stack(name).region

    matches = lint_file(synthesis.template_path(name), config=ManualArgs(regions=[region]))

    assert [str(match) for match in matches] == []


def test_cfn_lint_reports_a_broken_template(tmp_path: Path) -> None:
    broken = tmp_path / "broken.template.json"
    broken.write_text(
        json.dumps({"Resources": {"Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"VersioningConfig": {}}}}})
    )

    matches = lint_file(broken, config=ManualArgs(regions=["ca-central-1"]))

    assert any(match.rule.id.startswith("E3") for match in matches)


@pytest.mark.parametrize("name", ALL_STACKS)
def test_cdk_nag_finds_no_unacknowledged_error_or_warning(synthesis: Synthesis, name: str) -> None:
    report = AwsSolutionsChecks(verbose=True).validate_scope(synthesis.stack(name))

    findings = {
        severity: sorted(
            f"{violation.rule_name} at {resource.construct_path}"
            for violation in report.violations
            if violation.severity == severity
            for resource in violation.violating_resources
        )
        for severity in ("error", "warning")
    }
    assert findings == {"error": [], "warning": []}
    assert report.success


@pytest.mark.parametrize("name", ALL_STACKS)
def test_every_acknowledgment_is_expected_and_gives_its_reason(synthesis: Synthesis, name: str) -> None:
    acknowledgments = _acknowledgments(synthesis.stack(name))

    assert {rule.split("[")[0] for _, rule, _ in acknowledgments} == ACKNOWLEDGED[_kind(name)]
    for path, rule, reason in acknowledgments:
        assert len(reason) >= MIN_REASON_CHARS, (path, rule, reason)
        if rule.startswith("AwsSolutions-IAM5"):
            # Only resource wildcards, each on the role it concerns; never a wildcard action.
            assert rule.startswith("AwsSolutions-IAM5[Resource::"), rule
            assert path.rsplit("/", 1)[-1].endswith("Role"), path


def test_the_checks_stop_a_synthesis_with_a_finding(tmp_path: Path) -> None:
    # A one-bucket app: its own tiny synthesis, separate from the session's.
    app = cdk.App(outdir=str(tmp_path))
    s3.Bucket(cdk.Stack(app, "Careless"), "Bucket")  # no TLS-only policy, no access logs
    add_checks(app)

    with pytest.raises(RuntimeError, match=r"(?s)ValidationFailed.*AwsSolutions-S1"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    violations = {v["ruleName"] for plugin in report["pluginReports"] for v in plugin["violations"]}
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= violations


def test_a_wildcard_grant_needs_its_reason() -> None:
    stack = cdk.Stack(cdk.App(), "Grants")
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"))
    bucket = s3.Bucket(stack, "Bucket")
    wildcard = iam.PolicyStatement(sid="Objects", actions=["s3:GetObject"], resources=[bucket.arn_for_objects("a/*")])

    with pytest.raises(ValueError, match=r"Resource::<Bucket83908E77.Arn>/a/\*"):
        grant(role, wildcard)
    with pytest.raises(ValueError, match="a reason says"):
        acknowledge(role, "AwsSolutions-IAM5[Resource::*]", "because")

    grant(role, wildcard, wildcard_reason="Keys under a/ are chosen per request; nothing outside a/ is granted.")
    acknowledged = [
        entry.data for entry in role.node.metadata if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY
    ]
    assert any("AwsSolutions-IAM5[Resource::<Bucket83908E77.Arn>/a/*]" in str(data) for data in acknowledged)
