"""cdk-nag 3: the AwsSolutions pack runs as a CDK policy-validation plugin, and a finding that is a
decision rather than a defect is acknowledged on its construct (or an ancestor) with the reason.

An unacknowledged finding, error or warning, stops synthesis: `cdk synth`, `cdk deploy` and
`python app.py` all fail until it is fixed or acknowledged here.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Acknowledgment, Stack, Stage, Validations
from aws_cdk import aws_iam as iam
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

MIN_REASON_CHARS = 40


def add_checks(app: Stage) -> AwsSolutionsChecks:
    """Run the AwsSolutions pack on every synthesis of `app` (cdk-nag 3 is a validation plugin, not an aspect)."""
    checks = AwsSolutionsChecks(app, verbose=True)
    Validations.of(app).add_plugins(checks)
    return checks


def acknowledge(construct: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge `rule_id` (e.g. `AwsSolutions-S1`, `AwsSolutions-IAM5[Resource::*]`) on `construct`."""
    if len(reason) < MIN_REASON_CHARS:
        raise ValueError(f"{rule_id}: a reason says, in a sentence, why this is acceptable here")
    Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def grant(role: iam.Role, statement: iam.PolicyStatement, *, wildcard_reason: str | None = None) -> None:
    """Add `statement` to `role`'s policy; acknowledge each of its wildcards (AwsSolutions-IAM5) with
    `wildcard_reason`, which it must then have: a wildcard nobody explained is refused here."""
    role.add_to_principal_policy(statement)
    stack = Stack.of(role)
    findings = [f"Action::{action}" for action in statement.actions if "*" in action]
    findings += [
        f"Resource::{flat}" for flat in (_flatten(stack.resolve(r)) for r in statement.resources) if "*" in flat
    ]
    if findings and not wildcard_reason:
        raise ValueError(f"{statement.sid}: {', '.join(findings)} need a wildcard_reason")
    for finding in findings:
        acknowledge(role, f"AwsSolutions-IAM5[{finding}]", wildcard_reason or "")


def _flatten(value: Any) -> str:
    """A resolved ARN the way cdk-nag spells it in a finding: `<Ref>`, `<LogicalId.Attribute>`."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return f"<{value['Ref']}>"
    if "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        return f"<{logical_id}.{attribute}>"
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_flatten(part) for part in parts)
    raise ValueError(f"cannot spell {value!r} as cdk-nag does")
