"""The GitHub OIDC provider and the deploy role: who may assume it, and what it may do."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk

from infra.stacks.github_oidc import GitHubOidcStack
from tests.infra.synth import GITHUB_OIDC, GITHUB_REPO, Synthesis


def _statements(synthesis: Synthesis) -> dict[str, dict[str, Any]]:
    (policy,) = synthesis.resources(GITHUB_OIDC, "AWS::IAM::Policy").values()
    return {statement["Sid"]: statement for statement in policy["Properties"]["PolicyDocument"]["Statement"]}


def _flat(value: object) -> str:
    """An ARN as text, `Ref`s as `<Name>`, for readable comparisons."""
    if isinstance(value, str):
        return value
    assert isinstance(value, dict)
    if "Ref" in value:
        return f"<{value['Ref']}>"
    separator, parts = value["Fn::Join"]
    return str(separator).join(_flat(part) for part in parts)


def test_provider_is_githubs_with_the_sts_audience(synthesis: Synthesis) -> None:
    synthesis.template(GITHUB_OIDC).has_resource_properties(
        "AWS::IAM::OIDCProvider",
        {"Url": "https://token.actions.githubusercontent.com", "ClientIdList": ["sts.amazonaws.com"]},
    )


def test_deploy_role_trusts_only_the_repositorys_staging_and_production_environments(synthesis: Synthesis) -> None:
    (role,) = synthesis.resources(GITHUB_OIDC, "AWS::IAM::Role").values()
    (provider,) = synthesis.resources(GITHUB_OIDC, "AWS::IAM::OIDCProvider")

    assert role["Properties"]["RoleName"] == "product-analyzer-deploy"
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Effect": "Allow",
            "Principal": {"Federated": {"Ref": provider}},
            "Condition": {
                "StringEquals": {
                    "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
                    "token.actions.githubusercontent.com:sub": [
                        f"repo:{GITHUB_REPO}:environment:staging",
                        f"repo:{GITHUB_REPO}:environment:production",
                    ],
                }
            },
        }
    ]
    assert "ManagedPolicyArns" not in role["Properties"]


def test_deploy_role_permissions_are_scoped_to_this_projects_names(synthesis: Synthesis) -> None:
    statements = _statements(synthesis)
    resources = {sid: _flat(s["Resource"]) for sid, s in statements.items() if not isinstance(s["Resource"], list)}
    account = "<AWS::AccountId>"
    arn = "arn:<AWS::Partition>"

    assert statements["AssumeCdkBootstrapRoles"]["Action"] == "sts:AssumeRole"
    assert resources["AssumeCdkBootstrapRoles"] == f"{arn}:iam::{account}:role/cdk-hnb659fds-*"
    assert resources["PushImage"] == f"{arn}:ecr:*:{account}:repository/product-analyzer"
    assert "ecr:PutImage" in statements["PushImage"]["Action"]
    assert resources["RunMigrationTask"] == f"{arn}:ecs:*:{account}:task-definition/product-analyzer-*:*"
    assert _flat(statements["RunMigrationTask"]["Condition"]["ArnLike"]["ecs:cluster"]) == (
        f"{arn}:ecs:*:{account}:cluster/product-analyzer-*"
    )
    assert statements["PassTaskRoles"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
    }
    assert statements["PassModelRole"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
    }
    assert resources["PassModelRole"] == f"{arn}:iam::{account}:role/product-analyzer-*-sagemaker-*"
    assert resources["UploadModelArtifacts"] == f"{arn}:s3:::product-analyzer-*-{account}-*/models/*"
    assert [_flat(r) for r in statements["DeployModel"]["Resource"]] == [
        f"{arn}:sagemaker:*:{account}:model/blip2-endpoint*",
        f"{arn}:sagemaker:*:{account}:endpoint-config/blip2-endpoint*",
        f"{arn}:sagemaker:*:{account}:endpoint/blip2-endpoint*",
    ]
    assert "sagemaker:CreateEndpoint" in statements["DeployModel"]["Action"]
    assert resources["ReadStackOutputs"] == f"{arn}:cloudformation:*:{account}:stack/ProductAnalyzer-*/*"
    assert statements["ReadStackOutputs"]["Action"] == "cloudformation:DescribeStacks"
    # Only the calls that accept no other resource get '*'.
    assert sorted(sid for sid, resource in resources.items() if resource == "*") == ["EcrLogin", "ScaleModel"]
    assert all(s["Effect"] == "Allow" for s in statements.values())
    assert not any(action.endswith(":*") for s in statements.values() for action in _actions(s))


def test_an_existing_provider_is_imported_not_created() -> None:
    # Read from the construct tree: no second synthesis.
    arn = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    stack = GitHubOidcStack(cdk.App(), "Oidc", github_repo=GITHUB_REPO, existing_provider_arn=arn)

    assert not [
        c
        for c in stack.node.find_all()
        if isinstance(c, cdk.CfnResource) and c.cfn_resource_type == "AWS::IAM::OIDCProvider"
    ]
    assert stack.role.assume_role_policy is not None
    trust = stack.resolve(stack.role.assume_role_policy.to_json())
    assert trust["Statement"][0]["Principal"] == {"Federated": arn}


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else list(actions)
