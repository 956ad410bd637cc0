"""`ProductAnalyzer-Registry-<region>`: the ECR repository both environments pull from, so the image that
passed staging is the image production runs."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ecr as ecr
from constructs import Construct

from infra.config import REPOSITORY_NAME


class RegistryStack(Stack):
    """`repository`: scan on push, tags immutable (but `latest`), the newest `image_retention_count` images kept."""

    def __init__(self, scope: Construct, construct_id: str, *, image_retention_count: int, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.repository = ecr.Repository(
            self,
            "Repository",
            repository_name=REPOSITORY_NAME,
            image_scan_on_push=True,
            # A commit's tag always names the same image; `latest` may move.
            image_tag_mutability=ecr.TagMutability.IMMUTABLE_WITH_EXCLUSION,
            image_tag_mutability_exclusion_filters=[ecr.ImageTagMutabilityExclusionFilter.wildcard("latest")],
            lifecycle_rules=[
                ecr.LifecycleRule(
                    rule_priority=1,
                    description="Drop untagged images (superseded layers of re-pushed tags) after a week",
                    tag_status=ecr.TagStatus.UNTAGGED,
                    max_image_age=Duration.days(7),
                ),
                ecr.LifecycleRule(
                    rule_priority=2,
                    description=f"Keep the last {image_retention_count} images",
                    tag_status=ecr.TagStatus.ANY,
                    max_image_count=image_retention_count,
                ),
            ],
            # Running services pull from it; deleting the stack must not delete the images.
            removal_policy=RemovalPolicy.RETAIN,
        )
        CfnOutput(self, "RepositoryUri", value=self.repository.repository_uri, description="docker push target")
