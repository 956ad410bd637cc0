"""`ProductAnalyzer-GitHubOidc`: one per account. GitHub Actions' OIDC provider and the deploy role the
workflow assumes (never keys), trusted only for the repository's `staging` and `production` environments.

The role deploys the way `cdk deploy` does, by assuming the CDK bootstrap roles; everything else it
does itself is listed below and scoped to this project's names (repository `product-analyzer`,
clusters, task definitions and roles `product-analyzer-*`, endpoint `blip2-endpoint*`, stacks
`ProductAnalyzer-*`).
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Annotations, Aws, CfnOutput, Duration, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.config import ENDPOINT_NAME, ENVIRONMENTS, GITHUB_REPO_PLACEHOLDER, REPOSITORY_NAME, SERVICE
from infra.nag import grant

GITHUB_OIDC_URL = "https://token.actions.githubusercontent.com"
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
DEPLOY_ROLE_NAME = f"{SERVICE}-deploy"
CDK_QUALIFIER = "hnb659fds"  # `cdk bootstrap`'s default


class GitHubOidcStack(Stack):
    """`role` (`product-analyzer-deploy`), and `provider` unless `existing_provider_arn` names one."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        github_repo: str,
        existing_provider_arn: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        if github_repo == GITHUB_REPO_PLACEHOLDER:
            Annotations.of(self).add_warning_v2(
                "product-analyzer:github-repo",
                f"The deploy role trusts {GITHUB_REPO_PLACEHOLDER}: deploy this stack with -c githubRepo=owner/repo.",
            )
        # An account holds one provider per URL: import it where another project already made it.
        if existing_provider_arn:
            provider_arn = existing_provider_arn
        else:
            provider = iam.OidcProviderNative(self, "Provider", url=GITHUB_OIDC_URL, client_ids=["sts.amazonaws.com"])
            provider_arn = provider.oidc_provider_arn
        self.role = iam.Role(
            self,
            "DeployRole",
            role_name=DEPLOY_ROLE_NAME,
            description=f"GitHub Actions of {github_repo} ({', '.join(ENVIRONMENTS)}) deploy product-analyzer",
            assumed_by=iam.WebIdentityPrincipal(
                provider_arn,
                conditions={
                    "StringEquals": {
                        f"{GITHUB_OIDC_HOST}:aud": "sts.amazonaws.com",
                        # Only jobs that run in one of the repository's deployment environments (which
                        # can require reviewers); not pull requests, not other branches' plain jobs.
                        f"{GITHUB_OIDC_HOST}:sub": [f"repo:{github_repo}:environment:{env}" for env in ENVIRONMENTS],
                    }
                },
            ),
            max_session_duration=Duration.hours(2),
        )
        for statement, wildcard_reason in deploy_statements():
            grant(self.role, statement, wildcard_reason=wildcard_reason)
        CfnOutput(self, "DeployRoleArn", value=self.role.role_arn, description="role-to-assume of the workflow")


_REGIONS = "The workflow deploys to every region of the stack set, so the region is '*' and the account is this one; "


def deploy_statements() -> list[tuple[iam.PolicyStatement, str | None]]:
    """What the deploy workflow does besides `cdk deploy` (push, migrate, deploy the model, read outputs),
    each with the reason for its wildcards."""
    account = Aws.ACCOUNT_ID
    arn = f"arn:{Aws.PARTITION}"
    sagemaker = f"{arn}:sagemaker:*:{account}"
    return [
        (
            iam.PolicyStatement(
                sid="AssumeCdkBootstrapRoles",
                actions=["sts:AssumeRole"],
                resources=[f"{arn}:iam::{account}:role/cdk-{CDK_QUALIFIER}-*"],
            ),
            "cdk deploy assumes the bootstrap roles (deploy, file and image publishing, lookup) of each "
            f"bootstrapped region, all named cdk-{CDK_QUALIFIER}-<kind>-<account>-<region>.",
        ),
        (
            iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            "ecr:GetAuthorizationToken takes no resource but '*'; pushes are limited to the product-analyzer "
            "repository.",
        ),
        (
            iam.PolicyStatement(
                sid="PushImage",
                actions=[
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:BatchGetImage",
                    "ecr:CompleteLayerUpload",
                    "ecr:DescribeImages",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:InitiateLayerUpload",
                    "ecr:PutImage",
                    "ecr:UploadLayerPart",
                ],
                resources=[f"{arn}:ecr:*:{account}:repository/{REPOSITORY_NAME}"],
            ),
            _REGIONS + "the repository is product-analyzer in each.",
        ),
        (
            iam.PolicyStatement(
                sid="RunMigrationTask",
                actions=["ecs:RunTask"],
                resources=[f"{arn}:ecs:*:{account}:task-definition/{SERVICE}-*:*"],
                conditions={"ArnLike": {"ecs:cluster": f"{arn}:ecs:*:{account}:cluster/{SERVICE}-*"}},
            ),
            _REGIONS + "the task definition families are product-analyzer-<env>, at whatever revision the "
            "deploy just registered, run only in the product-analyzer-<env> clusters.",
        ),
        (
            iam.PolicyStatement(
                sid="WatchMigrationTask",
                actions=["ecs:DescribeTasks"],
                resources=[f"{arn}:ecs:*:{account}:task/{SERVICE}-*/*"],
            ),
            _REGIONS + "task ids are assigned by ECS when the migration task starts, in the product-analyzer clusters.",
        ),
        (
            iam.PolicyStatement(
                sid="ReadMigrationLogs",
                actions=["logs:GetLogEvents", "logs:FilterLogEvents"],
                resources=[f"{arn}:logs:*:{account}:log-group:/{SERVICE}/*"],
            ),
            _REGIONS + "the migration's output is in the app log group /product-analyzer/<env>/app.",
        ),
        (
            iam.PolicyStatement(
                sid="PassTaskRoles",
                actions=["iam:PassRole"],
                resources=[f"{arn}:iam::{account}:role/{SERVICE}-*-task-*"],
                conditions={"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
            ),
            "run-task passes the task and execution roles, named product-analyzer-<env>-task[-exec]-<region>, "
            "and only to ECS tasks.",
        ),
        (
            iam.PolicyStatement(
                sid="PassModelRole",
                actions=["iam:PassRole"],
                resources=[f"{arn}:iam::{account}:role/{SERVICE}-*-sagemaker-*"],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            ),
            "model.deploy passes the endpoint's execution role, named product-analyzer-<env>-sagemaker-<region>, "
            "and only to SageMaker.",
        ),
        (
            iam.PolicyStatement(
                sid="UploadModelArtifacts",
                actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                resources=[f"{arn}:s3:::{SERVICE}-*-{account}-*/models/*"],
            ),
            "model.package uploads a new tarball per model version under models/ of the environments' buckets, "
            "named product-analyzer-<env>-<account>-<region>.",
        ),
        (
            iam.PolicyStatement(
                sid="EncryptModelArtifacts",
                actions=["kms:GenerateDataKey", "kms:Decrypt"],
                resources=[f"{arn}:kms:*:{account}:key/*"],
                conditions={
                    "StringLike": {"kms:ViaService": "s3.*.amazonaws.com"},
                    "ForAnyValue:StringLike": {"kms:ResourceAliases": f"alias/{SERVICE}-*"},
                },
            ),
            "Key ids are random; the conditions limit this to the environments' keys (alias "
            "product-analyzer-<env>), used through S3 for the multipart model upload.",
        ),
        (
            iam.PolicyStatement(
                sid="DeployModel",
                actions=[
                    "sagemaker:AddTags",
                    "sagemaker:CreateEndpoint",
                    "sagemaker:CreateEndpointConfig",
                    "sagemaker:CreateModel",
                    "sagemaker:DeleteEndpoint",
                    "sagemaker:DeleteEndpointConfig",
                    "sagemaker:DeleteModel",
                    "sagemaker:DescribeEndpoint",
                    "sagemaker:DescribeEndpointConfig",
                    "sagemaker:DescribeModel",
                    "sagemaker:ListTags",
                    "sagemaker:UpdateEndpoint",
                    "sagemaker:UpdateEndpointWeightsAndCapacities",
                ],
                resources=[
                    f"{sagemaker}:model/{ENDPOINT_NAME}*",
                    f"{sagemaker}:endpoint-config/{ENDPOINT_NAME}*",
                    f"{sagemaker}:endpoint/{ENDPOINT_NAME}*",
                ],
            ),
            _REGIONS + "model.deploy names each model blip2-endpoint-<timestamp> and its endpoint config after it.",
        ),
        (
            iam.PolicyStatement(
                sid="ScaleModel",
                actions=[
                    "application-autoscaling:DescribeScalableTargets",
                    "application-autoscaling:DescribeScalingPolicies",
                    "application-autoscaling:PutScalingPolicy",
                    "application-autoscaling:RegisterScalableTarget",
                ],
                resources=["*"],
            ),
            "Registering the async endpoint's scalable target and policies (model.deploy --async) is authorized "
            "on '*': Application Auto Scaling has no ARN for a target before it exists.",
        ),
        (
            iam.PolicyStatement(
                sid="AlarmOnModelBacklog",
                actions=["cloudwatch:PutMetricAlarm", "cloudwatch:DescribeAlarms"],
                resources=[f"{arn}:cloudwatch:*:{account}:alarm:{ENDPOINT_NAME}*"],
            ),
            _REGIONS + "model.deploy's scale-from-zero alarm is named blip2-endpoint-has-backlog-without-capacity.",
        ),
        (
            iam.PolicyStatement(
                sid="CreateModelScalingServiceRole",
                actions=["iam:CreateServiceLinkedRole"],
                resources=[
                    f"{arn}:iam::{account}:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
                    "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
                ],
                conditions={"StringEquals": {"iam:AWSServiceName": "sagemaker.application-autoscaling.amazonaws.com"}},
            ),
            None,
        ),
        (
            iam.PolicyStatement(
                sid="ReadStackOutputs",
                actions=["cloudformation:DescribeStacks"],
                resources=[f"{arn}:cloudformation:*:{account}:stack/ProductAnalyzer-*/*"],
            ),
            _REGIONS + "the stacks are ProductAnalyzer-<kind>-<region>, their ids assigned by CloudFormation.",
        ),
    ]
