"""The stack set: names, regions, order, termination protection and the outputs other tools read."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match

from tests.infra.synth import (
    GITHUB_OIDC,
    IMAGE_TAG,
    PRODUCTION,
    PRODUCTION_US,
    REGISTRY,
    REGISTRY_US,
    STAGING,
    Synthesis,
)

SERVICE_OUTPUTS = {
    "ApiUrl",
    "EndpointName",
    "BucketName",
    "ClusterName",
    "ServiceName",
    "TaskDefinitionArn",
    "TaskSecurityGroupId",
    "PrivateSubnetIds",
    "ModelExecutionRoleArn",
    "AsyncSuccessTopicArn",
    "AsyncErrorTopicArn",
    "AlarmTopicArn",
    "EdgeLogGroupName",
}


def test_one_stack_set_per_configured_region(synthesis: Synthesis) -> None:
    stacks = {stack.stack_name: stack.region for stack in synthesis.deployment.stacks()}

    # Staging is configured with the default region, production with two.
    assert stacks == {
        REGISTRY: "ca-central-1",
        REGISTRY_US: "us-east-1",
        STAGING: "ca-central-1",
        PRODUCTION: "ca-central-1",
        PRODUCTION_US: "us-east-1",
        GITHUB_OIDC: "ca-central-1",
    }
    for name in stacks:
        assert synthesis.template_path(name).is_file()


def test_each_environment_stack_deploys_after_its_regions_registry(synthesis: Synthesis) -> None:
    for name, registry in [(STAGING, REGISTRY), (PRODUCTION, REGISTRY), (PRODUCTION_US, REGISTRY_US)]:
        dependencies = {stack.stack_name for stack in synthesis.stack(name).dependencies}
        assert dependencies == {registry}


def test_only_production_is_protected_from_deletion(synthesis: Synthesis) -> None:
    assert synthesis.stack(PRODUCTION).termination_protection
    assert synthesis.stack(PRODUCTION_US).termination_protection
    assert not synthesis.stack(STAGING).termination_protection


@pytest.mark.parametrize("name", [STAGING, PRODUCTION, PRODUCTION_US])
def test_environment_stacks_export_the_outputs_the_workflow_reads(synthesis: Synthesis, name: str) -> None:
    outputs = json.loads(synthesis.template_path(name).read_text())["Outputs"]

    assert set(outputs) >= SERVICE_OUTPUTS
    # Plain outputs, no exports: nothing in another stack can pin these resources.
    assert not any("Export" in output for output in outputs.values())


def test_registry_outputs_the_repository_uri(synthesis: Synthesis) -> None:
    synthesis.template(REGISTRY).has_output("RepositoryUri", {"Value": Match.any_value()})


def test_outputs_point_at_the_resources(synthesis: Synthesis) -> None:
    template = synthesis.template(STAGING)
    stack = synthesis.service(STAGING)
    ref = synthesis.logical_id
    template.has_output("BucketName", {"Value": {"Ref": ref(stack.storage.bucket)}})
    template.has_output("EdgeLogGroupName", {"Value": {"Ref": ref(stack.edge_log_group)}})
    template.has_output("ClusterName", {"Value": {"Ref": ref(stack.service.cluster)}})
    template.has_output("TaskDefinitionArn", {"Value": {"Ref": ref(stack.service.task_definition)}})
    template.has_output(
        "TaskSecurityGroupId", {"Value": {"Fn::GetAtt": [ref(stack.service.security_group), "GroupId"]}}
    )
    template.has_output(
        "ModelExecutionRoleArn", {"Value": {"Fn::GetAtt": [ref(stack.inference.execution_role), "Arn"]}}
    )
    template.has_output("AsyncSuccessTopicArn", {"Value": {"Ref": ref(stack.inference.success_topic)}})
    template.has_output("AsyncErrorTopicArn", {"Value": {"Ref": ref(stack.inference.error_topic)}})
    template.has_output("AlarmTopicArn", {"Value": {"Ref": ref(stack.alarms.topic)}})
    # Without a custom domain, the stage's execute-api URL.
    template.has_output(
        "ApiUrl", {"Value": {"Fn::Join": ["", Match.array_with(["https://", {"Ref": ref(stack.api.api)}])]}}
    )
    template.has_output("ContainerName", {"Value": "app"})
    template.has_output("PrivateSubnetIds", {"Value": {"Fn::Join": [",", Match.any_value()]}})
    template.has_output("SecretNamePrefix", {"Value": "product-analyzer/staging/"})
    # With a custom domain the URL is the domain's.
    synthesis.template(PRODUCTION).has_output("ApiUrl", {"Value": "https://api.example.com/"})


def test_the_task_runs_the_configured_image_tag(synthesis: Synthesis) -> None:
    synthesis.template(STAGING).has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "ContainerDefinitions": [
                Match.object_like({"Image": {"Fn::Join": ["", Match.array_with([f"/product-analyzer:{IMAGE_TAG}"])]}})
            ]
        },
    )


def test_staging_and_production_call_different_model_endpoints(synthesis: Synthesis) -> None:
    """A model deployed to staging (by the deploy workflow, to `EndpointName`) never reaches production."""
    synthesis.template(STAGING).has_output("EndpointName", {"Value": "blip2-endpoint-staging"})
    synthesis.template(PRODUCTION).has_output("EndpointName", {"Value": "blip2-endpoint"})
