"""What the BLIP-2 endpoint runs with: its execution role and the async notification topics."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match

from tests.infra.synth import STAGING, Synthesis


def _statements(synthesis: Synthesis, role_logical_id: str) -> dict[str, dict[str, Any]]:
    (policy,) = [
        p["Properties"]
        for p in synthesis.resources(STAGING, "AWS::IAM::Policy").values()
        if p["Properties"]["Roles"] == [{"Ref": role_logical_id}]
    ]
    return {statement["Sid"]: statement for statement in policy["PolicyDocument"]["Statement"]}


def test_execution_role_is_assumed_by_sagemaker_under_a_name_the_deploy_role_may_pass(synthesis: Synthesis) -> None:
    synthesis.template(STAGING).has_resource_properties(
        "AWS::IAM::Role",
        {
            "RoleName": "product-analyzer-staging-sagemaker-ca-central-1",
            "AssumeRolePolicyDocument": {
                "Statement": [
                    {
                        "Action": "sts:AssumeRole",
                        "Effect": "Allow",
                        "Principal": {"Service": "sagemaker.amazonaws.com"},
                    }
                ],
                "Version": "2012-10-17",
            },
            "ManagedPolicyArns": Match.absent(),
        },
    )


def test_execution_role_reads_models_writes_async_results_pulls_the_dlc_logs_and_notifies(synthesis: Synthesis) -> None:
    stack = synthesis.service(STAGING)
    bucket = synthesis.logical_id(stack.storage.bucket)
    statements = _statements(synthesis, synthesis.logical_id(stack.inference.execution_role))

    assert set(statements) == {
        "ReadModelArtifacts",
        "WriteAsyncResults",
        "UseDataKeyThroughS3AndSns",
        "EcrLogin",
        "PullDeepLearningContainer",
        "WriteEndpointLogs",
        "PutEndpointMetrics",
        "NotifyAsyncResults",
    }
    assert statements["ReadModelArtifacts"]["Action"] == "s3:GetObject"
    assert statements["ReadModelArtifacts"]["Resource"] == {
        "Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/models/*"]]
    }
    assert statements["WriteAsyncResults"]["Action"] == "s3:PutObject"
    assert statements["WriteAsyncResults"]["Resource"] == {
        "Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/async-inference/*"]]
    }
    assert statements["UseDataKeyThroughS3AndSns"]["Condition"] == {
        "StringEquals": {"kms:ViaService": ["s3.ca-central-1.amazonaws.com", "sns.ca-central-1.amazonaws.com"]}
    }
    assert statements["PullDeepLearningContainer"]["Resource"] == {
        "Fn::Join": [
            "",
            ["arn:", {"Ref": "AWS::Partition"}, ":ecr:ca-central-1:763104351884:repository/pytorch-inference"],
        ]
    }
    assert statements["WriteEndpointLogs"]["Resource"][1]["Fn::Join"][1][-1] == (
        ":log-group:/aws/sagemaker/Endpoints/blip2-endpoint-staging:log-stream:*"
    )
    assert statements["PutEndpointMetrics"]["Condition"] == {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}
    assert statements["NotifyAsyncResults"] == {
        "Sid": "NotifyAsyncResults",
        "Effect": "Allow",
        "Action": "sns:Publish",
        "Resource": [
            {"Ref": synthesis.logical_id(stack.inference.success_topic)},
            {"Ref": synthesis.logical_id(stack.inference.error_topic)},
        ],
    }


def test_async_topics_are_kms_encrypted_and_deny_publishing_without_tls(synthesis: Synthesis) -> None:
    stack = synthesis.service(STAGING)
    key = synthesis.logical_id(stack.key)
    template = synthesis.template(STAGING)

    for topic, name in [
        (stack.inference.success_topic, "product-analyzer-staging-async-success"),
        (stack.inference.error_topic, "product-analyzer-staging-async-error"),
    ]:
        topic_id = synthesis.logical_id(topic)
        template.has_resource_properties(
            "AWS::SNS::Topic", {"TopicName": name, "KmsMasterKeyId": {"Fn::GetAtt": [key, "Arn"]}}
        )
        template.has_resource_properties(
            "AWS::SNS::TopicPolicy",
            {
                "Topics": [{"Ref": topic_id}],
                "PolicyDocument": {
                    "Statement": [
                        {
                            "Sid": "AllowPublishThroughSSLOnly",
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "sns:Publish",
                            "Resource": {"Ref": topic_id},
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        }
                    ],
                    "Version": "2012-10-17",
                },
            },
        )
