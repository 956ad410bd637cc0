"""`python -m model.deploy` against moto: what a real-time and an async deployment create, what a
dry run prints (and that it sends nothing), and what it refuses.

moto (5.2) has every call used here but one and keeps every field asserted on, with these gaps:
- its CreateEndpointConfig checks InstanceType against an old list without ml.g5.*; the `aws`
  fixture lets G5 types through (AWS takes them; it is our default);
- it has no UpdateEndpoint (NotImplementedError): the `updates` fixture adds one to moto's
  SageMaker, which records each call and, when told to, rolls back as SageMaker does;
- its endpoints are InService at once and never fail, and it accepts an endpoint config name that
  already exists (AWS refuses). Those paths use botocore's Stubber instead, or set the state of
  moto's endpoint directly.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import metadata, requires, version
from pathlib import Path
from typing import Any

import boto3
import botocore.httpsession
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import FakeEndpointConfig, sagemaker_backends
from moto.sagemaker.responses import SageMakerResponse
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from model import deploy

REGION = "ca-central-1"
# DescribeEndpoint's required fields, for Stubber answers; tests add EndpointStatus (and FailureReason).
DESCRIBED = {
    "EndpointName": "blip2-endpoint",
    "EndpointArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/blip2-endpoint",
    "CreationTime": "2025-01-01T00:00:00Z",
    "LastModifiedTime": "2025-01-01T00:00:00Z",
}
MODEL_DATA = "s3://blip2-models/releases/blip2-endpoint.tar.gz"
NEW_MODEL_DATA = "s3://blip2-models/releases/blip2-endpoint-v2.tar.gz"
ROLE = "arn:aws:iam::123456789012:role/blip2-sagemaker"
BASE = ["--model-data", MODEL_DATA, "--role", ROLE]
PYTORCH_GPU_IMAGE = re.compile(r"^\d{12}\.dkr\.ecr\.ca-central-1\.amazonaws\.com/pytorch-inference:2\.6\.0-gpu-py312$")
ASYNC = ["--async", "--output-path", "s3://blip2-async/results"]
UPDATE_CALLS = [
    "sagemaker.DescribeEndpoint",  # there, and InService: the update path
    "sagemaker.CreateModel",
    "sagemaker.CreateEndpointConfig",
    "sagemaker.UpdateEndpoint",
    "sagemaker.DescribeEndpoint",  # the wait: InService, and on the new config
]
ROLLBACK_REASON = "The primary container for production variant AllTraffic did not pass the ping health check."
ASYNC_CALLS = [
    "sagemaker.DescribeEndpoint",  # no such endpoint: the create path
    "sagemaker.CreateModel",
    "sagemaker.CreateEndpointConfig",
    "sagemaker.CreateEndpoint",
    "sagemaker.DescribeEndpoint",
    "application-autoscaling.RegisterScalableTarget",
    "application-autoscaling.PutScalingPolicy",
    "application-autoscaling.PutScalingPolicy",
    "cloudwatch.PutMetricAlarm",
]


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto for every AWS call, accepting the G5 instance types its InstanceType list lacks."""
    original = FakeEndpointConfig.validate_instance_type

    def validate_instance_type(self: FakeEndpointConfig, instance_type: str) -> None:
        if not instance_type.startswith("ml.g5."):
            original(self, instance_type)

    monkeypatch.setattr(FakeEndpointConfig, "validate_instance_type", validate_instance_type)
    with mock_aws():
        yield


@dataclass
class FakeUpdates:
    """UpdateEndpoint for moto, which has none: the calls it got, and whether the next one rolls back."""

    calls: list[dict[str, str]] = field(default_factory=list)
    roll_back_with: str | None = None  # a FailureReason: the new instances "fail" and the update is undone

    def update_endpoint(self, response: SageMakerResponse) -> ActionResult:
        """What SageMaker leaves behind once an update is over (moto's endpoints never wait)."""
        name = response._get_param("EndpointName")
        config_name = response._get_param("EndpointConfigName")
        backend = response.sagemaker_backend
        endpoint = backend.endpoints.get(name)
        if endpoint is None:
            raise ValidationError(message=f"Could not find endpoint '{name}'.")
        if endpoint.endpoint_status != "InService":
            raise ValidationError(message=f"Cannot update in-progress endpoint '{name}'.")
        new_config = backend.describe_endpoint_config(config_name)  # raises if there is none
        self.calls.append({"EndpointName": name, "EndpointConfigName": config_name})
        if self.roll_back_with is not None:  # back on the old config, InService, with the reason
            endpoint.failure_reason = self.roll_back_with
        else:
            endpoint.endpoint_config_name = config_name
            endpoint.production_variants = endpoint._process_production_variants(new_config["ProductionVariants"])
            endpoint.failure_reason = None
        return ActionResult({"EndpointArn": endpoint.arn})


@pytest.fixture
def updates(aws: None, monkeypatch: pytest.MonkeyPatch) -> FakeUpdates:
    fake = FakeUpdates()

    def update_endpoint(response: SageMakerResponse) -> ActionResult:  # moto dispatches to plain functions only
        return fake.update_endpoint(response)

    monkeypatch.setattr(SageMakerResponse, "update_endpoint", update_endpoint, raising=False)
    return fake


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every request the deployment's sessions send (`service.Operation`), in order; answered ones are not sent."""
    operations: list[str] = []
    build_session = deploy.build_session

    def recording(config: deploy.DeployConfig, dry_run: deploy.DryRun | None = None) -> boto3.session.Session:
        session = build_session(config, dry_run)
        # before-send: the last event before a request leaves (moto answers there; the dry run earlier).
        session.events.register(
            "before-send", lambda event_name, **_: operations.append(".".join(event_name.split(".")[1:]))
        )
        return session

    monkeypatch.setattr(deploy, "build_session", recording)
    return operations


def moto_endpoint(name: str = "blip2-endpoint") -> Any:
    """moto's own record of the endpoint, to put it in states moto never reaches by itself."""
    return sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION].endpoints[name]


@pytest.fixture
def no_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HTTP request can leave botocore (not even to the instance metadata service): any attempt fails."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an HTTP request was sent")

    monkeypatch.setattr(botocore.httpsession.URLLib3Session, "send", refuse)


@pytest.fixture
def offline(no_http: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """No HTTP, and no credentials, role or region in the environment either."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "SAGEMAKER_ROLE_ARN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = deploy.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def planned(out: str) -> list[tuple[str, dict[str, Any]]]:
    """Parse a dry run's plan: (service.Operation, params) per line, comment lines skipped."""
    calls = []
    for line in out.splitlines():
        if not line.startswith("#"):
            name, _, params = line.partition(" ")
            calls.append((name, json.loads(params)))
    return calls


def test_realtime_deploy_creates_model_config_and_endpoint(aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run([*BASE, "--instance-count", "2", "--env", "MODEL_DTYPE=float16"], capsys)

    assert status == 0
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    endpoint = sagemaker.describe_endpoint(EndpointName="blip2-endpoint")
    assert endpoint["EndpointStatus"] == "InService"
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    [variant] = config["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic"
    assert variant["InstanceType"] == "ml.g5.xlarge"
    assert variant["InitialInstanceCount"] == 2
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == deploy.CONTAINER_STARTUP_HEALTH_CHECK_TIMEOUT_S
    assert variant["ModelDataDownloadTimeoutInSeconds"] == deploy.MODEL_DATA_DOWNLOAD_TIMEOUT_S
    assert not config.get("AsyncInferenceConfig")
    assert not config.get("KmsKeyId")

    model = sagemaker.describe_model(ModelName=variant["ModelName"])
    assert model["ModelName"].startswith("blip2-endpoint-")
    assert model["ExecutionRoleArn"] == ROLE
    container = model["PrimaryContainer"]
    assert PYTORCH_GPU_IMAGE.match(container["Image"])
    assert container["ModelDataUrl"] == MODEL_DATA  # ours as it is: not a repacked copy
    environment = container["Environment"]
    assert environment["SAGEMAKER_PROGRAM"] == "inference.py"  # the SDK alone would send ""
    assert environment["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    assert environment["MODEL_NAME"] == "Salesforce/blip2-opt-2.7b"
    assert environment["SAGEMAKER_MODEL_SERVER_TIMEOUT"] == "60"
    assert environment["MODEL_DTYPE"] == "float16"

    # No code upload, no repack (which would first download our tarball: not in moto's S3, so it
    # would fail) and no SDK default bucket (which it creates): S3 is never touched.
    assert boto3.client("s3", region_name=REGION).list_buckets()["Buckets"] == []
    autoscaling = boto3.client("application-autoscaling", region_name=REGION)
    assert autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    summary = json.loads(out)
    assert summary["endpoint"] == "blip2-endpoint"
    assert summary["action"] == "created"
    assert summary["status"] == "InService"
    assert summary["model"] == model["ModelName"]
    assert summary["endpoint_config"] == endpoint["EndpointConfigName"]
    assert summary["replaced_endpoint_config"] is None
    assert summary["async"] is False


def test_kms_key_encrypts_the_endpoint_volume(aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*BASE, "--instance-type", "ml.p3.2xlarge", "--kms-key-id", "alias/blip2-endpoint"]

    assert run(argv, capsys)[0] == 0

    config = boto3.client("sagemaker", region_name=REGION).describe_endpoint_config(EndpointConfigName="blip2-endpoint")
    assert config["KmsKeyId"] == "alias/blip2-endpoint"
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.p3.2xlarge"


def test_async_deploy_scales_to_zero(aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    sns = boto3.client("sns", region_name=REGION)
    success = sns.create_topic(Name="blip2-async-success")["TopicArn"]
    error = sns.create_topic(Name="blip2-async-error")["TopicArn"]
    argv = [
        *BASE,
        "--async",
        "--output-path",
        "s3://blip2-async/results/",
        "--failure-path",
        "s3://blip2-async/failures",
        "--success-topic",
        success,
        "--error-topic",
        error,
        "--max-instances",
        "3",
        "--backlog-target",
        "4",
        "--max-concurrent-invocations-per-instance",
        "2",
    ]

    status, out, _ = run(argv, capsys)

    assert status == 0
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    config = sagemaker.describe_endpoint_config(EndpointConfigName="blip2-endpoint")
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.g5.xlarge"
    assert config["AsyncInferenceConfig"] == {
        "OutputConfig": {
            "S3OutputPath": "s3://blip2-async/results",
            "S3FailurePath": "s3://blip2-async/failures",
            "NotificationConfig": {"SuccessTopic": success, "ErrorTopic": error},
        },
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
    }

    resource_id = "endpoint/blip2-endpoint/variant/AllTraffic"
    autoscaling = boto3.client("application-autoscaling", region_name=REGION)
    [target] = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert target["ResourceId"] == resource_id
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 3)

    policies = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource_id)
    by_type = {policy["PolicyType"]: policy for policy in policies["ScalingPolicies"]}
    assert set(by_type) == {"TargetTrackingScaling", "StepScaling"}
    tracking = by_type["TargetTrackingScaling"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 4.0
    assert tracking["CustomizedMetricSpecification"] == {
        "MetricName": "ApproximateBacklogSizePerInstance",
        "Namespace": "AWS/SageMaker",
        "Dimensions": [{"Name": "EndpointName", "Value": "blip2-endpoint"}],
        "Statistic": "Average",
    }
    assert tracking["ScaleInCooldown"] > 0
    assert tracking["ScaleOutCooldown"] > 0
    step = by_type["StepScaling"]
    assert step["StepScalingPolicyConfiguration"]["AdjustmentType"] == "ChangeInCapacity"
    assert step["StepScalingPolicyConfiguration"]["StepAdjustments"] == [
        {"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}
    ]

    [alarm] = boto3.client("cloudwatch", region_name=REGION).describe_alarms()["MetricAlarms"]
    assert alarm["MetricName"] == "HasBacklogWithoutCapacity"
    assert alarm["Namespace"] == "AWS/SageMaker"
    assert alarm["Dimensions"] == [{"Name": "EndpointName", "Value": "blip2-endpoint"}]
    assert alarm["Statistic"] == "Average"
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["Threshold"] == 1.0
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["AlarmActions"] == [step["PolicyARN"]]

    summary = json.loads(out)
    assert summary["async"] is True
    assert summary["scaling_policies"] == [by_type["TargetTrackingScaling"]["PolicyARN"], step["PolicyARN"]]


def test_async_failure_path_defaults_under_the_output_path(aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*BASE, "--async", "--output-path", "s3://blip2-async/results"], capsys)[0] == 0

    config = boto3.client("sagemaker", region_name=REGION).describe_endpoint_config(EndpointConfigName="blip2-endpoint")
    output = config["AsyncInferenceConfig"]["OutputConfig"]
    assert output["S3FailurePath"] == "s3://blip2-async/results/failures"
    assert "NotificationConfig" not in output
    assert boto3.client("s3", region_name=REGION).list_buckets()["Buckets"] == []  # no SDK default bucket


def test_dry_run_prints_every_call_and_creates_nothing(
    aws: None, sent: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*BASE, "--dry-run", "--async", "--output-path", "s3://blip2-async/results"]

    status, out, _ = run(argv, capsys)

    assert status == 0
    header = (
        f"# dry run: {len(ASYNC_CALLS)} AWS calls in ca-central-1, none sent; read first: no endpoint blip2-endpoint\n"
    )
    assert out.startswith(header)
    assert sent == ["sagemaker.DescribeEndpoint"]  # the one read that picks the path
    calls = planned(out)
    assert [name for name, _ in calls] == ASYNC_CALLS
    params = dict(calls[:4])
    container = params["sagemaker.CreateModel"]["PrimaryContainer"]
    assert container["ModelDataUrl"] == MODEL_DATA
    assert PYTORCH_GPU_IMAGE.match(container["Image"])
    endpoint_config = params["sagemaker.CreateEndpointConfig"]
    assert endpoint_config["ProductionVariants"][0]["InstanceType"] == "ml.g5.xlarge"
    assert endpoint_config["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"] == "s3://blip2-async/results"
    step_policy, alarm = calls[7][1], calls[8][1]
    assert step_policy["PolicyType"] == "StepScaling"
    assert alarm["AlarmActions"][0].endswith(f":policyName/{step_policy['PolicyName']}")

    sagemaker = boto3.client("sagemaker", region_name=REGION)
    assert sagemaker.list_models()["Models"] == []
    assert sagemaker.list_endpoint_configs()["EndpointConfigs"] == []
    assert sagemaker.list_endpoints()["Endpoints"] == []
    autoscaling = boto3.client("application-autoscaling", region_name=REGION)
    assert autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert boto3.client("cloudwatch", region_name=REGION).describe_alarms()["MetricAlarms"] == []


def test_dry_run_needs_no_credentials_and_sends_nothing(
    offline: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAGEMAKER_ROLE_ARN", ROLE)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # a laptop: no instance role to find either

    status, out, _ = run(["--model-data", MODEL_DATA, "--dry-run", "--no-wait"], capsys)

    assert status == 0
    assert out.startswith(
        "# dry run: 4 AWS calls in us-east-1, none sent; blip2-endpoint not read (no AWS credentials): planned as new\n"
    )
    calls = planned(out)
    assert [name for name, _ in calls] == [
        "sagemaker.DescribeEndpoint",  # answered here: no such endpoint
        "sagemaker.CreateModel",
        "sagemaker.CreateEndpointConfig",
        "sagemaker.CreateEndpoint",
    ]
    create_model = calls[1][1]
    assert create_model["ExecutionRoleArn"] == ROLE
    assert (
        ".dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-gpu-py312"
        in create_model["PrimaryContainer"]["Image"]
    )


# --- a second deploy to the same endpoint: UpdateEndpoint -------------------------------------


def redeploy(*extra: str) -> list[str]:
    """The command line of the next release: a new tarball, the same endpoint."""
    return ["--model-data", NEW_MODEL_DATA, "--role", ROLE, *extra]


def test_second_deploy_updates_the_endpoint_in_place(
    updates: FakeUpdates, sent: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(BASE, capsys)[0] == 0
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    first = sagemaker.describe_endpoint(EndpointName="blip2-endpoint")
    [first_model] = sagemaker.list_models()["Models"]
    sent.clear()

    status, out, err = run(redeploy("--instance-count", "2", "--env", "MODEL_DTYPE=float16"), capsys)

    assert status == 0, err
    assert sent == UPDATE_CALLS  # no CreateEndpoint, which SageMaker refuses for an existing endpoint
    summary = json.loads(out)
    endpoint = sagemaker.describe_endpoint(EndpointName="blip2-endpoint")
    new_config = endpoint["EndpointConfigName"]
    assert updates.calls == [{"EndpointName": "blip2-endpoint", "EndpointConfigName": new_config}]
    assert first["EndpointConfigName"] == "blip2-endpoint"
    assert new_config == summary["model"]  # a new config, named like its new model
    assert endpoint["EndpointStatus"] == "InService"
    assert endpoint["CreationTime"] == first["CreationTime"]  # the same endpoint, updated

    config = sagemaker.describe_endpoint_config(EndpointConfigName=new_config)
    [variant] = config["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic"
    assert variant["ModelName"] == summary["model"]
    assert variant["InstanceType"] == "ml.g5.xlarge"
    assert variant["InitialInstanceCount"] == 2
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == deploy.CONTAINER_STARTUP_HEALTH_CHECK_TIMEOUT_S
    assert variant["ModelDataDownloadTimeoutInSeconds"] == deploy.MODEL_DATA_DOWNLOAD_TIMEOUT_S
    assert not config.get("AsyncInferenceConfig")
    assert not config.get("KmsKeyId")

    model = sagemaker.describe_model(ModelName=summary["model"])
    assert model["ModelName"].startswith("blip2-endpoint-")
    assert model["ModelName"] != first_model["ModelName"]
    assert model["ExecutionRoleArn"] == ROLE
    container = model["PrimaryContainer"]
    assert PYTORCH_GPU_IMAGE.match(container["Image"])
    assert container["ModelDataUrl"] == NEW_MODEL_DATA  # as it is: not repacked
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Environment"]["MODEL_DTYPE"] == "float16"
    assert boto3.client("s3", region_name=REGION).list_buckets()["Buckets"] == []  # no upload, no default bucket

    # Nothing deleted: the old config and model are what a rollback goes back to.
    configs = {c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]}
    assert configs == {"blip2-endpoint", new_config}
    assert {m["ModelName"] for m in sagemaker.list_models()["Models"]} == {first_model["ModelName"], summary["model"]}
    assert summary["action"] == "updated"
    assert summary["status"] == "InService"
    assert summary["endpoint_config"] == new_config
    assert summary["replaced_endpoint_config"] == "blip2-endpoint"

    # And again: each release gets its own model and config.
    assert run(redeploy(), capsys)[0] == 0
    third = sagemaker.describe_endpoint(EndpointName="blip2-endpoint")["EndpointConfigName"]
    assert third not in configs
    assert [call["EndpointConfigName"] for call in updates.calls] == [new_config, third]


def test_update_keeps_the_volume_kms_key(updates: FakeUpdates, capsys: pytest.CaptureFixture[str]) -> None:
    kms = ["--instance-type", "ml.p3.2xlarge", "--kms-key-id", "alias/blip2-endpoint"]
    assert run([*BASE, *kms], capsys)[0] == 0

    assert run(redeploy(*kms), capsys)[0] == 0

    [call] = updates.calls
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    config = sagemaker.describe_endpoint_config(EndpointConfigName=call["EndpointConfigName"])
    assert config["KmsKeyId"] == "alias/blip2-endpoint"
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.p3.2xlarge"


def test_async_redeploy_keeps_async_inference_and_registers_autoscaling_again(
    updates: FakeUpdates, sent: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run([*BASE, *ASYNC, "--max-instances", "2"], capsys)[0] == 0
    sent.clear()
    changed = ["--max-instances", "4", "--backlog-target", "3", "--max-concurrent-invocations-per-instance", "2"]

    status, out, err = run(redeploy(*ASYNC, *changed), capsys)

    assert status == 0, err
    assert sent == [
        *UPDATE_CALLS,
        "application-auto-scaling.RegisterScalableTarget",
        "application-auto-scaling.PutScalingPolicy",
        "application-auto-scaling.PutScalingPolicy",
        "cloudwatch.PutMetricAlarm",
    ]
    [call] = updates.calls
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    config = sagemaker.describe_endpoint_config(EndpointConfigName=call["EndpointConfigName"])
    assert config["AsyncInferenceConfig"] == {
        "OutputConfig": {
            "S3OutputPath": "s3://blip2-async/results",
            "S3FailurePath": "s3://blip2-async/results/failures",
        },
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
    }
    variant = config["ProductionVariants"][0]
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == deploy.CONTAINER_STARTUP_HEALTH_CHECK_TIMEOUT_S
    assert variant["ModelDataDownloadTimeoutInSeconds"] == deploy.MODEL_DATA_DOWNLOAD_TIMEOUT_S

    # Registered again with the new numbers: upserts, so still one target, two policies, one alarm.
    resource_id = "endpoint/blip2-endpoint/variant/AllTraffic"
    autoscaling = boto3.client("application-autoscaling", region_name=REGION)
    [target] = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 4)
    policies = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource_id)
    by_type = {policy["PolicyType"]: policy for policy in policies["ScalingPolicies"]}
    assert len(policies["ScalingPolicies"]) == len(by_type) == 2
    assert by_type["TargetTrackingScaling"]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 3.0
    [alarm] = boto3.client("cloudwatch", region_name=REGION).describe_alarms()["MetricAlarms"]
    assert alarm["AlarmActions"] == [by_type["StepScaling"]["PolicyARN"]]
    summary = json.loads(out)
    assert summary["action"] == "updated"
    assert summary["async"] is True


@pytest.mark.parametrize(
    ("state", "reason", "message"),
    [
        ("Creating", None, "endpoint blip2-endpoint is Creating: wait for it to be InService, then run again"),
        ("Updating", None, "endpoint blip2-endpoint is Updating: wait for it to be InService, then run again"),
        (
            "Failed",
            ROLLBACK_REASON,
            f"endpoint blip2-endpoint is Failed ({ROLLBACK_REASON}); SageMaker allows only DeleteEndpoint on a failed "
            "endpoint: delete it, then run again to create it",
        ),
    ],
    ids=["Creating", "Updating", "Failed"],
)
def test_refuses_an_endpoint_that_is_not_in_service(
    updates: FakeUpdates,
    sent: list[str],
    capsys: pytest.CaptureFixture[str],
    state: str,
    reason: str | None,
    message: str,
) -> None:
    assert run(BASE, capsys)[0] == 0
    moto_endpoint().endpoint_status = state
    moto_endpoint().failure_reason = reason
    sent.clear()

    status, out, err = run(redeploy(), capsys)

    assert status == 1
    assert out == ""
    assert err.splitlines()[-1] == f"python -m model.deploy: error: {message}"
    assert sent == ["sagemaker.DescribeEndpoint"]  # refused before anything was made
    assert len(boto3.client("sagemaker", region_name=REGION).list_models()["Models"]) == 1
    assert updates.calls == []


def test_rolled_back_update_is_an_error(updates: FakeUpdates, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(BASE, capsys)[0] == 0
    updates.roll_back_with = ROLLBACK_REASON

    status, out, err = run(redeploy(), capsys)

    assert status == 1
    assert out == ""
    [call] = updates.calls
    assert err.splitlines()[-1] == (
        "python -m model.deploy: error: endpoint blip2-endpoint rolled back to blip2-endpoint: the update to "
        f"{call['EndpointConfigName']} failed: {ROLLBACK_REASON}"
    )
    endpoint = boto3.client("sagemaker", region_name=REGION).describe_endpoint(EndpointName="blip2-endpoint")
    assert (endpoint["EndpointStatus"], endpoint["EndpointConfigName"]) == ("InService", "blip2-endpoint")


def test_dry_run_on_an_existing_endpoint_prints_the_update_calls(
    updates: FakeUpdates, sent: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run([*BASE, *ASYNC], capsys)[0] == 0
    sent.clear()

    status, out, _ = run(redeploy(*ASYNC, "--dry-run"), capsys)

    assert status == 0
    assert out.startswith(
        "# dry run: 9 AWS calls in ca-central-1, none sent; read first: blip2-endpoint is InService on blip2-endpoint\n"
    )
    calls = planned(out)
    assert [name for name, _ in calls] == [
        *UPDATE_CALLS,
        "application-autoscaling.RegisterScalableTarget",
        "application-autoscaling.PutScalingPolicy",
        "application-autoscaling.PutScalingPolicy",
        "cloudwatch.PutMetricAlarm",
    ]
    create_model, create_config, update = calls[1][1], calls[2][1], calls[3][1]
    assert create_model["PrimaryContainer"]["ModelDataUrl"] == NEW_MODEL_DATA
    assert create_config["ProductionVariants"][0]["ModelName"] == create_model["ModelName"]
    assert create_config["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"] == "s3://blip2-async/results"
    assert update == {"EndpointName": "blip2-endpoint", "EndpointConfigName": create_config["EndpointConfigName"]}

    assert sent == ["sagemaker.DescribeEndpoint"]  # the read; everything else was answered here
    assert updates.calls == []
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    assert len(sagemaker.list_models()["Models"]) == 1
    assert len(sagemaker.list_endpoint_configs()["EndpointConfigs"]) == 1


@pytest.mark.parametrize(
    ("settled", "message"),
    [
        (
            {"EndpointStatus": "InService", "EndpointConfigName": "blip2-endpoint", "FailureReason": ROLLBACK_REASON},
            f"rolled back to blip2-endpoint: the update to blip2-endpoint-new failed: {ROLLBACK_REASON}",
        ),
        # Both the update and its rollback failed: settled, so no hour of polling; not InService.
        (
            {"EndpointStatus": "UpdateRollbackFailed", "EndpointConfigName": "blip2-endpoint-new"},
            "did not come up: UpdateRollbackFailed",
        ),
    ],
    ids=["rolled-back", "rollback-failed"],
)
def test_wait_after_an_update_polls_until_settled_then_checks_the_config(
    monkeypatch: pytest.MonkeyPatch, settled: dict[str, str], message: str
) -> None:
    # Stubber: moto's endpoints never pass through Updating.
    monkeypatch.setattr(deploy, "WAIT_DELAY_S", 0)
    client = boto3.client("sagemaker", region_name=REGION)
    stubber = Stubber(client)
    stubber.add_response("describe_endpoint", {**DESCRIBED, "EndpointStatus": "Updating"})
    stubber.add_response("describe_endpoint", {**DESCRIBED, "EndpointStatus": "Updating"})
    stubber.add_response("describe_endpoint", {**DESCRIBED, **settled})

    with stubber, pytest.raises(deploy.DeployError, match=re.escape(message)):
        deploy.wait_in_service(client, "blip2-endpoint", "blip2-endpoint-new")
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model-data", "https://example.com/blip2-endpoint.tar.gz"], "--model-data must look like s3://"),
        (["--model-data", "s3://blip2-models/blip2.zip"], "--model-data must look like s3://"),
        (["--role", "blip2-sagemaker"], "--role must be an IAM role ARN"),
        (["--endpoint-name", "blip2_endpoint"], "--endpoint-name"),
        (["--region", "canada"], "--region must look like"),
        (["--instance-count", "0"], "--instance-count must be at least 1"),
        (["--env", "MODEL_DTYPE"], "--env must look like KEY=VALUE"),
        (["--kms-key-id", "alias/blip2"], "--kms-key-id cannot be used with ml.g5.xlarge"),
        (["--framework-version", "1.0.0"], "no PyTorch inference image"),
        (["--async"], "--async needs --output-path"),
        (["--async", "--output-path", "/tmp/results"], "--output-path must look like s3://"),
        (["--output-path", "s3://blip2-async/results"], "--output-path needs --async"),
        (["--max-concurrent-invocations-per-instance", "2"], "--max-concurrent-invocations-per-instance needs --async"),
        (
            ["--async", "--output-path", "s3://blip2-async/results", "--success-topic", "results"],
            "--success-topic must be an SNS",
        ),
        (["--async", "--output-path", "s3://blip2-async/results", "--min-instances", "3"], "--min-instances"),
        (["--async", "--output-path", "s3://blip2-async/results", "--no-wait"], "--async cannot use --no-wait"),
    ],
)
def test_refuses_bad_input_with_one_line_and_status_2(
    offline: None, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    status, out, err = run([*BASE, *extra], capsys)

    assert status == 2
    assert out == ""
    assert err.startswith(f"python -m model.deploy: error: {message}")
    assert err.count("\n") == 1


def test_refuses_without_a_role(offline: None, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(["--model-data", MODEL_DATA], capsys)

    assert status == 2
    assert "an execution role is required: --role ARN or SAGEMAKER_ROLE_ARN" in err


def test_aws_refusal_exits_1(
    no_http: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Stubber: moto accepts an endpoint config name that exists already; SageMaker refuses it.
    client = boto3.client("sagemaker", region_name=REGION)
    stubber = Stubber(client)
    not_found = f'Could not find endpoint "arn:aws:sagemaker:{REGION}:123456789012:endpoint/blip2-endpoint".'
    stubber.add_client_error("describe_endpoint", service_error_code="ValidationException", service_message=not_found)
    stubber.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:123456789012:model/m"})
    stubber.add_client_error(
        "create_endpoint_config",
        service_error_code="ValidationException",
        service_message="Cannot create already existing endpoint configuration",
    )
    monkeypatch.setattr(deploy, "sagemaker_client", lambda session, region: client)

    with stubber:
        status, _, err = run(BASE, capsys)

    assert status == 1
    last = err.splitlines()[-1]
    assert last.startswith("python -m model.deploy: error:")
    assert "Cannot create already existing endpoint configuration" in last


def test_failed_endpoint_raises_with_sagemakers_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    # Stubber: moto's endpoints are InService at once; a real one is Creating, then InService or Failed.
    monkeypatch.setattr(deploy, "WAIT_DELAY_S", 0)
    client = boto3.client("sagemaker", region_name=REGION)
    stubber = Stubber(client)
    stubber.add_response("describe_endpoint", {**DESCRIBED, "EndpointStatus": "Creating"})
    reason = "The primary container for production variant AllTraffic did not pass the ping health check."
    stubber.add_response("describe_endpoint", {**DESCRIBED, "EndpointStatus": "Failed", "FailureReason": reason})

    with stubber, pytest.raises(deploy.DeployError, match="did not pass the ping health check"):
        deploy.wait_in_service(client, "blip2-endpoint")
    stubber.assert_no_pending_responses()


def test_default_image_can_run_the_pinned_transformers() -> None:
    """The image's torch and Python satisfy what model/code/requirements.txt's transformers requires."""
    requirements = Path(deploy.__file__).parent / "code" / "requirements.txt"
    pinned = next(
        Requirement(line) for line in requirements.read_text().splitlines() if line.startswith("transformers")
    )
    installed = version("transformers")
    if installed not in pinned.specifier:
        pytest.skip(f"transformers {installed} is installed, not the pinned {pinned.specifier}: reinstall to check")
    torch = [
        Requirement(r) for r in requires("transformers") or [] if r.startswith("torch") and 'extra == "torch"' in r
    ]
    assert torch, "transformers no longer declares its torch requirement where this test looks"
    assert Version(deploy.DEFAULT_FRAMEWORK_VERSION) in torch[0].specifier
    python = Version(f"{deploy.DEFAULT_PY_VERSION[2]}.{deploy.DEFAULT_PY_VERSION[3:]}")
    assert python in SpecifierSet(metadata("transformers")["Requires-Python"])


def test_import_does_not_load_the_sagemaker_sdk() -> None:
    code = "import sys, model.deploy; print('sagemaker' in sys.modules)"
    root = Path(deploy.__file__).parent.parent
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert result.stdout.strip() == "False"
