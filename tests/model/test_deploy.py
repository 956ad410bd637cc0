"""`python -m model.deploy` against moto: what a real-time and an async deployment create, what a
dry run prints (and that it sends nothing), and what it refuses.

moto (5.2) has every call used here and keeps every field asserted on, with two gaps:
- its CreateEndpointConfig checks InstanceType against an old list without ml.g5.*; the `aws`
  fixture lets G5 types through (AWS takes them; it is our default);
- its endpoints are InService at once and never fail, and it accepts an endpoint config name that
  already exists (AWS refuses). Those two paths use botocore's Stubber instead.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import metadata, requires, version
from pathlib import Path
from typing import Any

import boto3
import botocore.httpsession
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from moto.sagemaker.models import FakeEndpointConfig
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from model import deploy

REGION = "ca-central-1"
MODEL_DATA = "s3://blip2-models/releases/blip2-endpoint.tar.gz"
ROLE = "arn:aws:iam::123456789012:role/blip2-sagemaker"
BASE = ["--model-data", MODEL_DATA, "--role", ROLE]
PYTORCH_GPU_IMAGE = re.compile(r"^\d{12}\.dkr\.ecr\.ca-central-1\.amazonaws\.com/pytorch-inference:2\.6\.0-gpu-py312$")
ASYNC_CALLS = [
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
    assert summary["status"] == "InService"
    assert summary["model"] == model["ModelName"]
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


def test_dry_run_prints_every_call_and_creates_nothing(aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*BASE, "--dry-run", "--async", "--output-path", "s3://blip2-async/results"]

    status, out, _ = run(argv, capsys)

    assert status == 0
    assert out.startswith(f"# dry run: {len(ASYNC_CALLS)} AWS calls in ca-central-1, none sent\n")
    calls = planned(out)
    assert [name for name, _ in calls] == ASYNC_CALLS
    params = dict(calls[:4])
    container = params["sagemaker.CreateModel"]["PrimaryContainer"]
    assert container["ModelDataUrl"] == MODEL_DATA
    assert PYTORCH_GPU_IMAGE.match(container["Image"])
    endpoint_config = params["sagemaker.CreateEndpointConfig"]
    assert endpoint_config["ProductionVariants"][0]["InstanceType"] == "ml.g5.xlarge"
    assert endpoint_config["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"] == "s3://blip2-async/results"
    step_policy, alarm = calls[6][1], calls[7][1]
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

    status, out, _ = run(["--model-data", MODEL_DATA, "--dry-run", "--no-wait"], capsys)

    assert status == 0
    calls = planned(out)
    assert [name for name, _ in calls] == [
        "sagemaker.CreateModel",
        "sagemaker.CreateEndpointConfig",
        "sagemaker.CreateEndpoint",
    ]
    create_model = calls[0][1]
    assert create_model["ExecutionRoleArn"] == ROLE
    assert (
        ".dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-gpu-py312"
        in create_model["PrimaryContainer"]["Image"]
    )


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
    described = {
        "EndpointName": "blip2-endpoint",
        "EndpointArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/blip2-endpoint",
        "CreationTime": "2025-01-01T00:00:00Z",
        "LastModifiedTime": "2025-01-01T00:00:00Z",
    }
    stubber.add_response("describe_endpoint", {**described, "EndpointStatus": "Creating"})
    reason = "The primary container for production variant AllTraffic did not pass the ping health check."
    stubber.add_response("describe_endpoint", {**described, "EndpointStatus": "Failed", "FailureReason": reason})

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
