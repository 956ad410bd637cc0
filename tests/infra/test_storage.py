"""The data bucket, its log bucket, the KMS key and the ECR repository."""

from __future__ import annotations

import json

from aws_cdk.assertions import Match

from tests.infra.synth import PRODUCTION, REGISTRY, STAGING, Synthesis

BLOCK_ALL = {
    "BlockPublicAcls": True,
    "BlockPublicPolicy": True,
    "IgnorePublicAcls": True,
    "RestrictPublicBuckets": True,
}


def _deny_non_tls(bucket_id: str) -> dict[str, object]:
    return {
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Action": "s3:*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        "Resource": [
            {"Fn::GetAtt": [bucket_id, "Arn"]},
            {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/*"]]},
        ],
    }


def test_data_bucket_is_private_kms_encrypted_with_a_bucket_key_and_expires_uploads(synthesis: Synthesis) -> None:
    stack = synthesis.service(STAGING)
    key = synthesis.logical_id(stack.key)
    log_bucket = synthesis.logical_id(stack.storage.log_bucket)
    bucket = synthesis.logical_id(stack.storage.bucket)

    resource = synthesis.resources(STAGING, "AWS::S3::Bucket")[bucket]
    properties = {name: value for name, value in resource["Properties"].items() if name != "Tags"}
    assert properties == {
        "BucketName": {
            "Fn::Join": ["", ["product-analyzer-staging-", {"Ref": "AWS::AccountId"}, "-", {"Ref": "AWS::Region"}]]
        },
        "BucketEncryption": {
            "ServerSideEncryptionConfiguration": [
                {
                    "BucketKeyEnabled": True,
                    "ServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": {"Fn::GetAtt": [key, "Arn"]},
                    },
                }
            ]
        },
        "PublicAccessBlockConfiguration": BLOCK_ALL,
        "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        "LifecycleConfiguration": {
            "Rules": [
                {"Id": "expire-uploads", "Prefix": "uploads/", "ExpirationInDays": 30, "Status": "Enabled"},
                {
                    "Id": "expire-async-results",
                    "Prefix": "async-inference/",
                    "ExpirationInDays": 30,
                    "Status": "Enabled",
                },
                {
                    "Id": "abort-incomplete-multipart-uploads",
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                    "Status": "Enabled",
                },
            ]
        },
        "LoggingConfiguration": {"DestinationBucketName": {"Ref": log_bucket}, "LogFilePrefix": "s3-access/"},
    }
    # Uploads are personal data: the bucket outlives the stack, never deleted by a teardown.
    assert resource["DeletionPolicy"] == "Retain"


def test_data_bucket_policy_denies_requests_without_tls(synthesis: Synthesis) -> None:
    stack = synthesis.service(STAGING)
    bucket = synthesis.logical_id(stack.storage.bucket)

    synthesis.template(STAGING).has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": bucket},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        _deny_non_tls(bucket),
                        Match.object_like({"Effect": "Deny", "Condition": {"NumericLessThan": {"s3:TlsVersion": 1.2}}}),
                    ]
                )
            },
        },
    )


def test_log_bucket_takes_access_logs_from_s3_and_the_load_balancer(synthesis: Synthesis) -> None:
    stack = synthesis.service(STAGING)
    log_bucket = synthesis.logical_id(stack.storage.log_bucket)
    bucket = synthesis.logical_id(stack.storage.bucket)
    template = synthesis.template(STAGING)

    template.has_resource(
        "AWS::S3::Bucket",
        {
            "Properties": Match.object_like(
                {
                    # ALB access logs can only be written with SSE-S3.
                    "BucketEncryption": {
                        "ServerSideEncryptionConfiguration": [
                            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                        ]
                    },
                    "PublicAccessBlockConfiguration": BLOCK_ALL,
                    "LifecycleConfiguration": {
                        "Rules": Match.array_with([Match.object_like({"ExpirationInDays": 365})])
                    },
                }
            ),
            "DeletionPolicy": "Retain",
        },
    )
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": log_bucket},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        _deny_non_tls(log_bucket),
                        Match.object_like(
                            {
                                "Principal": {"Service": "logging.s3.amazonaws.com"},
                                "Action": "s3:PutObject",
                                "Condition": Match.object_like(
                                    {"ArnLike": {"aws:SourceArn": {"Fn::GetAtt": [bucket, "Arn"]}}}
                                ),
                            }
                        ),
                        Match.object_like(
                            {
                                # The Elastic Load Balancing account of ca-central-1.
                                "Principal": {
                                    "AWS": {
                                        "Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":iam::985666609251:root"]]
                                    }
                                },
                                "Action": "s3:PutObject",
                            }
                        ),
                    ]
                )
            },
        },
    )


def test_one_rotating_customer_managed_key_that_logs_may_use_for_this_environment_only(synthesis: Synthesis) -> None:
    template = synthesis.template(STAGING)

    template.resource_count_is("AWS::KMS::Key", 1)
    template.has_resource_properties(
        "AWS::KMS::Key",
        {
            "EnableKeyRotation": True,
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Sid": "AllowCloudWatchLogs",
                                "Condition": {
                                    "ArnLike": {
                                        "kms:EncryptionContext:aws:logs:arn": {
                                            "Fn::Join": [
                                                "",
                                                Match.array_with([":log-group:/product-analyzer/staging/*"]),
                                            ]
                                        }
                                    }
                                },
                            }
                        )
                    ]
                )
            },
        },
    )
    template.has_resource_properties("AWS::KMS::Alias", {"AliasName": "alias/product-analyzer-staging"})


def test_retention_days_come_from_the_configuration(synthesis: Synthesis) -> None:
    # Both environments use IMAGE_RETENTION_DAYS' default; the lifecycle rule carries it.
    synthesis.template(PRODUCTION).has_resource_properties(
        "AWS::S3::Bucket",
        {
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [{"Id": "expire-uploads", "Prefix": "uploads/", "ExpirationInDays": 30, "Status": "Enabled"}]
                )
            }
        },
    )


def test_registry_scans_on_push_and_keeps_the_last_images(synthesis: Synthesis) -> None:
    template = synthesis.template(REGISTRY)

    template.resource_count_is("AWS::ECR::Repository", 1)
    resource = next(iter(synthesis.resources(REGISTRY, "AWS::ECR::Repository").values()))
    properties = resource["Properties"]
    assert properties["RepositoryName"] == "product-analyzer"
    assert properties["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert properties["ImageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert properties["ImageTagMutabilityExclusionFilters"] == [
        {"ImageTagMutabilityExclusionFilterType": "WILDCARD", "ImageTagMutabilityExclusionFilterValue": "latest"}
    ]
    assert resource["DeletionPolicy"] == "Retain"
    rules = json.loads(properties["LifecyclePolicy"]["LifecyclePolicyText"])["rules"]
    assert rules[-1] == {
        "rulePriority": 2,
        "description": "Keep the last 30 images",
        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 30},
        "action": {"type": "expire"},
    }
    assert rules[0]["selection"] == {
        "tagStatus": "untagged",
        "countType": "sinceImagePushed",
        "countNumber": 7,
        "countUnit": "days",
    }
