"""The data bucket (uploads, model artifacts, async results) and the bucket its access logs go to."""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.nag import acknowledge

UPLOADS_PREFIX = "uploads/"
MODELS_PREFIX = "models/"
ASYNC_PREFIX = "async-inference/"


def bucket_name(environment: str, *, logs: bool = False) -> str:
    """`product-analyzer-<env>[-logs]-<account>-<region>`: fixed, so the deploy role can name it."""
    kind = f"{environment}-logs" if logs else environment
    return f"product-analyzer-{kind}-{Aws.ACCOUNT_ID}-{Aws.REGION}"


class Storage(Construct):
    """`bucket`: SSE-KMS with a bucket key, TLS only, no public access, uploads expire after
    `retention_days`; `log_bucket`: its server access logs and the load balancer's access logs."""

    def __init__(
        self, scope: Construct, construct_id: str, *, environment: str, key: kms.IKey, retention_days: int
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_bucket = s3.Bucket(
            self,
            "LogBucket",
            bucket_name=bucket_name(environment, logs=True),
            # Load balancer access logs can only be written with SSE-S3, not SSE-KMS.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-logs", expiration=Duration.days(365)),
                s3.LifecycleRule(
                    id="abort-incomplete-multipart-uploads", abort_incomplete_multipart_upload_after=Duration.days(1)
                ),
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.log_bucket,
            "AwsSolutions-S1",
            "This is the access-log bucket itself: logging its accesses into itself would write a log record "
            "for every log record delivered, and a second log bucket would only move the question.",
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=bucket_name(environment),
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            server_access_logs_bucket=self.log_bucket,
            server_access_logs_prefix="s3-access/",
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-uploads", prefix=UPLOADS_PREFIX, expiration=Duration.days(retention_days)),
                # Async inference results describe the uploaded photos: they go with them.
                s3.LifecycleRule(
                    id="expire-async-results", prefix=ASYNC_PREFIX, expiration=Duration.days(retention_days)
                ),
                s3.LifecycleRule(
                    id="abort-incomplete-multipart-uploads", abort_incomplete_multipart_upload_after=Duration.days(1)
                ),
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
