"""Deploy BLIP-2 to a SageMaker endpoint with the SageMaker Python SDK's `PyTorchModel`.

    python -m model.deploy --model-data s3://bucket/blip2-endpoint.tar.gz --role arn:aws:iam::…:role/…
        [--endpoint-name blip2-endpoint] [--instance-type ml.g5.xlarge] [--instance-count 1]
        [--region ca-central-1] [--env KEY=VALUE …] [--kms-key-id KEY] [--no-wait] [--dry-run]
        [--async --output-path s3://… [--failure-path s3://…] [--success-topic ARN] [--error-topic ARN]
         [--max-concurrent-invocations-per-instance 1] [--min-instances 0] [--max-instances 2]
         [--backlog-target 2]]

What gets created, in that order (SageMaker API names), when no endpoint of that name exists:
  Model           `blip2-endpoint-<timestamp>`: AWS's PyTorch inference GPU image and our tarball from
                  `python -m model.package` (weights at the root, `code/inference.py` and
                  `code/requirements.txt`); the container installs the requirements and imports the handler.
  EndpointConfig  named like the endpoint: one variant `AllTraffic` on `--instance-type`.
  Endpoint        `blip2-endpoint`, waited for until InService (unless --no-wait).

When the endpoint exists (DescribeEndpoint finds it: every deploy after the first, as the CD
pipeline runs this on each change to model/), it is updated in place, with no downtime:
  Model           a new `blip2-endpoint-<timestamp>`, made exactly as above.
  EndpointConfig  a new one, named like that model, with the same variant settings as above
                  (instance type and count, volume KMS key, start-up timeouts, the async config).
  UpdateEndpoint  SageMaker starts instances on the new config, moves traffic to them once they
                  pass the health check, then retires the old ones (blue/green). If the new ones
                  fail, it rolls back: the endpoint is InService again on the old config, with a
                  FailureReason; that is reported as a failure (exit 1) with SageMaker's reason.
  (--async)       autoscaling registered again, as for a new endpoint: every call is an upsert.
Only an InService endpoint is updated. One that is Creating, Updating, SystemUpdating or
RollingBack is refused (wait for it to settle, then run again), and so is a Failed one
(SageMaker allows nothing but DeleteEndpoint on it) or one in any other state.
Nothing is deleted: the replaced endpoint config and its model stay in the account (SageMaker
keeps both until someone deletes them; only instances are billed), because rolling back by hand
is `aws sagemaker update-endpoint --endpoint-name NAME --endpoint-config-name OLD`. The summary
names the replaced config. One left behind is named like the endpoint: if the endpoint is ever
deleted, delete that config too before creating the endpoint again, or CreateEndpointConfig fails.
An update cannot change the instance type of an async endpoint's variant while autoscaling is
registered on it (AWS refuses it): deregister the scalable target first.

Real-time (the default) answers `InvokeEndpoint` within SageMaker's 60 s limit and keeps its
instances running, and billed, around the clock: the right shape for the app's synchronous
`POST /analyze`. `--async` makes an asynchronous endpoint instead: requests are queued
(`InvokeEndpointAsync`, the payload read from S3), results are written to `--output-path`,
failures to `--failure-path`, and SNS topics are told of each. Async endpoints are the only
SageMaker endpoints that can scale to zero instances, so `--async` also registers Application
Auto Scaling on the variant, AWS's documented scale-to-zero pattern:
  - a scalable target with MinCapacity `--min-instances` (0) and MaxCapacity `--max-instances`;
  - target tracking on `ApproximateBacklogSizePerInstance` (queued requests per instance), which
    adds instances under load and removes them, down to zero, when the queue is empty;
  - a step policy (+1 instance) fired by a CloudWatch alarm on `HasBacklogWithoutCapacity`,
    because at zero instances a per-instance backlog has no value and target tracking cannot
    scale up from there.

`--dry-run` runs exactly the same code with every AWS call answered inside the process (a
botocore `before-call` handler, the hook `botocore.stub.Stubber` uses), then prints each call
the SDK and this module would have made, one `service.Operation {params}` line each. To plan the
path that applies, it first reads the endpoint for real (one DescribeEndpoint, with the caller's
credentials: sagemaker:DescribeEndpoint is all it needs) and answers the run's own DescribeEndpoint
calls from what it read; it sends nothing else. Without credentials it reads nothing and plans a
new endpoint, and its first line says so.

Exit status: 0 done, 1 AWS refused or the endpoint failed, 2 the arguments were refused.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

import boto3.session
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from botocore.model import OperationModel
    from mypy_boto3_application_autoscaling import ApplicationAutoScalingClient
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_sagemaker import SageMakerClient
    from mypy_boto3_sagemaker.type_defs import DescribeEndpointOutputTypeDef

PROG = "python -m model.deploy"
_T = TypeVar("_T")
log = logging.getLogger(__name__)

DEFAULT_ENDPOINT_NAME = "blip2-endpoint"
DEFAULT_INSTANCE_TYPE = "ml.g5.xlarge"  # one A10G (24 GB): BLIP-2 OPT-2.7B in fp16 takes about 8 GB
DEFAULT_REGION = "ca-central-1"
VARIANT_NAME = "AllTraffic"  # the SDK's name for the single variant it creates

# The image: the newest PyTorch *inference* GPU image that sagemaker 2.257's
# image_uri_config/pytorch.json lists for ca-central-1 is 2.6.0 (py312), which is also the only one
# our handler can run on: model/code/requirements.txt pins transformers 5.x, which needs
# torch >= 2.6 (it disables PyTorch below that) and Python >= 3.11. Earlier images pair torch
# <= 2.5.1 with py311 or older. Pinned here rather than "newest known" so that an SDK upgrade
# never changes the serving image behind our back.
DEFAULT_FRAMEWORK_VERSION = "2.6.0"
DEFAULT_PY_VERSION = "py312"

# Container environment. With no `entry_point` the SDK sends SAGEMAKER_PROGRAM="" (sagemaker/model.py,
# Model._script_mode_env_vars), and the inference toolkit reads that empty string as the module
# name (sagemaker_inference/environment.py takes the variable when set, `inference.py` only when
# unset) and fails on `find_spec("")`. So name the handler and its folder, as the SDK itself does
# for a repacked model: the toolkit puts /opt/ml/model/code on the path and imports inference.py.
SAGEMAKER_PROGRAM = "inference.py"
SAGEMAKER_SUBMIT_DIRECTORY = "/opt/ml/model/code"
# TorchServe restarts a worker (reloading BLIP-2: minutes) that takes longer than this to answer.
# Our latency goal is 10 s end to end (LATENCY_SLO_MS) and the app gives up on the model after
# 20 s (VISION_TIMEOUT_SECONDS), but a slow answer is no reason to kill a worker; nothing later
# than 60 s can be returned at all (InvokeEndpoint's hard limit), so past 60 s it is stuck.
MODEL_SERVER_TIMEOUT_S = 60
# One worker, one copy of the model: `model_fn` loads onto cuda:0, so a second worker would put
# a second copy on the same GPU (TorchServe's default is one worker per GPU; set it anyway, for
# instance types with several GPUs).
MODEL_SERVER_WORKERS = 1
DEFAULT_ENV: Mapping[str, str] = {
    "MODEL_NAME": "Salesforce/blip2-opt-2.7b",
    "SAGEMAKER_PROGRAM": SAGEMAKER_PROGRAM,
    "SAGEMAKER_SUBMIT_DIRECTORY": SAGEMAKER_SUBMIT_DIRECTORY,
    "SAGEMAKER_MODEL_SERVER_TIMEOUT": str(MODEL_SERVER_TIMEOUT_S),
    "SAGEMAKER_MODEL_SERVER_WORKERS": str(MODEL_SERVER_WORKERS),
}
# A multi-GB tarball: downloading and un-gzipping it, then installing code/requirements.txt and
# loading the weights onto the GPU, outlasts SageMaker's defaults for a first start. 3600 s is
# the most either allows.
MODEL_DATA_DOWNLOAD_TIMEOUT_S = 1200
CONTAINER_STARTUP_HEALTH_CHECK_TIMEOUT_S = 1200

# Instance families with local NVMe instance storage: it is hardware-encrypted, and
# CreateEndpointConfig rejects a KmsKeyId when any variant runs on one of them.
LOCAL_STORAGE_FAMILIES = ("ml.g4dn.", "ml.g5.", "ml.g6.", "ml.g6e.", "ml.p3dn.", "ml.p4d.", "ml.p4de.", "ml.p5.")

# Async: the container runs one worker that serves one request at a time; more in flight would
# only queue inside TorchServe, where the backlog metric that drives scaling cannot see them.
DEFAULT_MAX_CONCURRENT_INVOCATIONS = 1
DEFAULT_MAX_INSTANCES = 2
DEFAULT_BACKLOG_TARGET = 2.0
# A new G5 instance takes several minutes to download the model and start: add capacity at most
# every 5 minutes, remove it after 10 quiet minutes, as in AWS's async autoscaling example.
SCALE_OUT_COOLDOWN_S = 300
SCALE_IN_COOLDOWN_S = 600
# HasBacklogWithoutCapacity is published every minute; two breaching minutes start an instance.
ALARM_PERIOD_S = 60
ALARM_EVALUATION_PERIODS = 2
SCALABLE_DIMENSION: Final = "sagemaker:variant:DesiredInstanceCount"

# Control-plane calls are small; a stuck socket should fail in seconds, throttling be retried.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
MAX_ATTEMPTS = 5
# Waiting for InService: a look every 30 s (as botocore's sagemaker waiter); 120 looks is an hour.
WAIT_DELAY_S = 30
WAIT_MAX_ATTEMPTS = 120
# EndpointStatus values that change by themselves: wait through them; never update during them.
IN_PROGRESS_STATUSES = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack"})

_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<key>.*))?$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(?P<account>\d{12}):role/[\w+=,.@/-]{1,512}$")
_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[\w.-]{1,256}$")
_ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?$")
_PY_VERSION = re.compile(r"^py3\d+$")


class UsageError(Exception):
    """The arguments are refused, with a one-line reason. Exit status 2."""


class DeployError(Exception):
    """The endpoint did not come up, or the SDK is missing. Exit status 1."""


@dataclass(frozen=True)
class AsyncSettings:
    """What `--async` adds: where results go, who is told, and how the variant scales."""

    output_path: str
    failure_path: str
    success_topic: str | None = None
    error_topic: str | None = None
    max_concurrent_invocations: int = DEFAULT_MAX_CONCURRENT_INVOCATIONS
    min_instances: int = 0
    max_instances: int = DEFAULT_MAX_INSTANCES
    backlog_target: float = DEFAULT_BACKLOG_TARGET


@dataclass(frozen=True)
class DeployConfig:
    """Everything one deployment needs, checked; built from the command line by `from_args`."""

    model_data: str
    role: str
    endpoint_name: str = DEFAULT_ENDPOINT_NAME
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    region: str = DEFAULT_REGION
    framework_version: str = DEFAULT_FRAMEWORK_VERSION
    py_version: str = DEFAULT_PY_VERSION
    env: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ENV))
    kms_key_id: str | None = None
    async_inference: AsyncSettings | None = None
    dry_run: bool = False
    wait: bool = True

    @property
    def account(self) -> str:
        """Return the AWS account of the execution role."""
        match = _ROLE_ARN.match(self.role)
        assert match is not None  # checked in from_args
        return match["account"]

    @property
    def scaling_resource_id(self) -> str:
        """Return Application Auto Scaling's id of the endpoint's variant."""
        return f"endpoint/{self.endpoint_name}/variant/{VARIANT_NAME}"

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str]) -> DeployConfig:
        """Check the parsed command line; raise `UsageError` with one line on the first problem."""
        _s3_uri(args.model_data, "--model-data", tarball=True)
        role = args.role or environ.get("SAGEMAKER_ROLE_ARN", "")
        if not role:
            raise UsageError("an execution role is required: --role ARN or SAGEMAKER_ROLE_ARN")
        if not _ROLE_ARN.match(role):
            raise UsageError(f"--role must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME), got {role!r}")
        if not _ENDPOINT_NAME.match(args.endpoint_name):
            raise UsageError(f"--endpoint-name must be 1-63 letters, digits and hyphens, got {args.endpoint_name!r}")
        if not _INSTANCE_TYPE.match(args.instance_type):
            raise UsageError(f"--instance-type must look like ml.g5.xlarge, got {args.instance_type!r}")
        if args.instance_count < 1:
            raise UsageError("--instance-count must be at least 1")
        region = args.region or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
        if not _REGION.match(region):
            raise UsageError(f"--region must look like ca-central-1, got {region!r}")
        if not _VERSION.match(args.framework_version):
            raise UsageError(f"--framework-version must look like 2.6.0, got {args.framework_version!r}")
        if not _PY_VERSION.match(args.py_version):
            raise UsageError(f"--py-version must look like py312, got {args.py_version!r}")
        if args.kms_key_id and args.instance_type.startswith(LOCAL_STORAGE_FAMILIES):
            raise UsageError(
                f"--kms-key-id cannot be used with {args.instance_type}: its local NVMe storage is "
                "hardware-encrypted and SageMaker refuses a volume KMS key for it"
            )
        if not args.use_async:
            _refuse_async_options(args)
        return cls(
            model_data=args.model_data,
            role=role,
            endpoint_name=args.endpoint_name,
            instance_type=args.instance_type,
            instance_count=args.instance_count,
            region=region,
            framework_version=args.framework_version,
            py_version=args.py_version,
            env={**DEFAULT_ENV, **_parse_env(args.env)},
            kms_key_id=args.kms_key_id or None,
            async_inference=_async_settings(args) if args.use_async else None,
            dry_run=args.dry_run,
            wait=not args.no_wait,
        )


def _s3_uri(uri: str, option: str, *, tarball: bool = False) -> str:
    """Return `uri` if it is an s3:// URI (of a .tar.gz when `tarball`), else raise `UsageError`."""
    match = _S3_URI.match(uri)
    if match is None or (tarball and not (match["key"] or "").endswith(".tar.gz")):
        shape = "s3://bucket/path/blip2-endpoint.tar.gz" if tarball else "s3://bucket/prefix"
        raise UsageError(f"{option} must look like {shape}, got {uri!r}")
    return uri


def _topic_arn(arn: str | None, option: str) -> str | None:
    if arn is not None and not _TOPIC_ARN.match(arn):
        raise UsageError(f"{option} must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME), got {arn!r}")
    return arn


def _parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not _ENV_KEY.match(key):
            raise UsageError(f"--env must look like KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


_ASYNC_ONLY = {  # argparse dest: option
    "output_path": "--output-path",
    "failure_path": "--failure-path",
    "success_topic": "--success-topic",
    "error_topic": "--error-topic",
    "max_concurrent_invocations": "--max-concurrent-invocations-per-instance",
    "min_instances": "--min-instances",
    "max_instances": "--max-instances",
    "backlog_target": "--backlog-target",
}


def _refuse_async_options(args: argparse.Namespace) -> None:
    """Raise `UsageError` if an option that only async endpoints have was given."""
    given = [option for dest, option in _ASYNC_ONLY.items() if getattr(args, dest) is not None]
    if given:
        raise UsageError(f"{given[0]} needs --async")


def _async_settings(args: argparse.Namespace) -> AsyncSettings:
    if not args.output_path:
        raise UsageError("--async needs --output-path s3://bucket/prefix for the results")
    output_path = _s3_uri(args.output_path, "--output-path").rstrip("/")
    # Without a failure path the SDK would invent one in its default bucket (creating that bucket);
    # keep failures next to the results instead.
    failure_path = _s3_uri(args.failure_path or f"{output_path}/failures", "--failure-path").rstrip("/")
    settings = AsyncSettings(
        output_path=output_path,
        failure_path=failure_path,
        success_topic=_topic_arn(args.success_topic, "--success-topic"),
        error_topic=_topic_arn(args.error_topic, "--error-topic"),
        max_concurrent_invocations=_or(args.max_concurrent_invocations, DEFAULT_MAX_CONCURRENT_INVOCATIONS),
        min_instances=_or(args.min_instances, 0),
        max_instances=_or(args.max_instances, DEFAULT_MAX_INSTANCES),
        backlog_target=_or(args.backlog_target, DEFAULT_BACKLOG_TARGET),
    )
    if settings.max_concurrent_invocations < 1:
        raise UsageError("--max-concurrent-invocations-per-instance must be at least 1")
    if settings.max_instances < 1:
        raise UsageError("--max-instances must be at least 1")
    if not 0 <= settings.min_instances <= settings.max_instances:
        raise UsageError("--min-instances must lie between 0 and --max-instances")
    if not settings.min_instances <= args.instance_count <= settings.max_instances:
        raise UsageError("--instance-count must lie between --min-instances and --max-instances")
    if settings.backlog_target <= 0:
        raise UsageError("--backlog-target must be above 0")
    if args.no_wait:
        raise UsageError("--async cannot use --no-wait: autoscaling is registered once the endpoint is InService")
    return settings


def _or(value: _T | None, default: _T) -> _T:
    return default if value is None else value


# --- AWS sessions and clients ---------------------------------------------------------------


def client_config(region: str) -> Config:
    """Return the botocore config for control-plane clients: explicit timeouts, standard retries."""
    return Config(
        region_name=region,
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        # total_max_attempts counts the first try; botocore's `max_attempts` would count retries only.
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
    )


def build_session(config: DeployConfig, dry_run: DryRun | None = None) -> boto3.session.Session:
    """Build the boto3 session every client comes from; with `dry_run`, one that answers locally.

    The dry-run session gets static placeholder credentials, so that nothing looks for real ones,
    and its handlers are registered before any client exists: a client copies its session's
    event handlers when it is created.
    """
    if dry_run is None:
        return boto3.session.Session(region_name=config.region)
    session = boto3.session.Session(
        aws_access_key_id="DRYRUNACCESSKEY",
        aws_secret_access_key="dry-run-secret",  # noqa: S106  # a placeholder; nothing is signed or sent
        region_name=config.region,
    )
    dry_run.attach(session)
    return session


def sagemaker_client(session: boto3.session.Session, region: str) -> SageMakerClient:
    """Build the SageMaker control-plane client (the SDK is handed this one too)."""
    return session.client("sagemaker", config=client_config(region))


def autoscaling_client(session: boto3.session.Session, region: str) -> ApplicationAutoScalingClient:
    """Build the Application Auto Scaling client."""
    return session.client("application-autoscaling", config=client_config(region))


def cloudwatch_client(session: boto3.session.Session, region: str) -> CloudWatchClient:
    """Build the CloudWatch client."""
    return session.client("cloudwatch", config=client_config(region))


# --- dry run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AwsCall:
    """One API call as the caller made it: service, operation and parameters."""

    service: str
    operation: str
    params: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.service}.{self.operation} {json.dumps(self.params, default=str)}"


class DryRun:
    """Record every API call made through a session and answer it locally, like botocore's Stubber.

    `before-parameter-build` sees the caller's parameters (recorded); `before-call` comes after
    they are serialized and before anything is signed or sent, and a handler that returns
    `(http_response, parsed)` there replaces the HTTP round trip.

    `endpoint` is the endpoint as it stands (DescribeEndpoint's answer, read beforehand), or None
    where there is none; CreateEndpoint and UpdateEndpoint change it as a successful call would,
    and DescribeEndpoint answers from it, so the run takes the path a real one would.
    """

    def __init__(self, region: str, account: str, endpoint: Mapping[str, Any] | None = None) -> None:
        self.region = region
        self.account = account
        self.endpoint = None if endpoint is None else {k: v for k, v in endpoint.items() if k != "ResponseMetadata"}
        self.calls: list[AwsCall] = []

    def attach(self, session: boto3.session.Session) -> None:
        """Register the recorder and the answerer on every client the session will create."""
        session.events.register("before-parameter-build", self._record)
        # botocore-stubs types every handler as returning None; before-call handlers may answer.
        session.events.register("before-call", self._answer)  # type: ignore[arg-type]

    def _record(self, params: dict[str, Any], model: OperationModel, **_: Any) -> None:
        self.calls.append(AwsCall(model.service_model.service_name, model.name, copy.deepcopy(params)))

    def _answer(self, model: OperationModel, **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        call = self.calls[-1]  # calls are made one at a time: the last one recorded is this one
        parsed = self.response(call)
        status = 400 if "Error" in parsed else 200  # botocore raises the ClientError for a 4xx
        parsed["ResponseMetadata"] = {"RequestId": "dry-run", "HTTPStatusCode": status, "HTTPHeaders": {}}
        return AWSResponse("https://dry-run.invalid/", status, HTTPHeaders(), None), parsed

    def _arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account}:{resource}"

    def _endpoint_in_service(self, name: str, endpoint_config_name: str) -> dict[str, Any]:
        now = datetime.now(UTC)
        created = self.endpoint["CreationTime"] if self.endpoint is not None else now
        return {
            "EndpointName": name,
            "EndpointArn": self._arn("sagemaker", f"endpoint/{name.lower()}"),
            "EndpointConfigName": endpoint_config_name,
            "EndpointStatus": "InService",
            "CreationTime": created,
            "LastModifiedTime": now,
        }

    def response(self, call: AwsCall) -> dict[str, Any]:
        """Return a plausible answer to `call`: what the next step reads, and no more."""
        params = call.params
        match (call.service, call.operation):
            case ("sagemaker", "CreateModel"):
                return {"ModelArn": self._arn("sagemaker", f"model/{params['ModelName'].lower()}")}
            case ("sagemaker", "CreateEndpointConfig"):
                name = params["EndpointConfigName"].lower()
                return {"EndpointConfigArn": self._arn("sagemaker", f"endpoint-config/{name}")}
            case ("sagemaker", "CreateEndpoint" | "UpdateEndpoint"):
                self.endpoint = self._endpoint_in_service(params["EndpointName"], params["EndpointConfigName"])
                return {"EndpointArn": self.endpoint["EndpointArn"]}
            case ("sagemaker", "DescribeEndpoint"):
                if self.endpoint is None:
                    arn = self._arn("sagemaker", f"endpoint/{params['EndpointName'].lower()}")
                    return {"Error": {"Code": "ValidationException", "Message": f'Could not find endpoint "{arn}".'}}
                return dict(self.endpoint)
            case ("application-autoscaling", "RegisterScalableTarget"):
                return {"ScalableTargetARN": self._arn("application-autoscaling", "scalable-target/dry-run")}
            case ("application-autoscaling", "PutScalingPolicy"):
                resource = f"resource/{params['ServiceNamespace']}/{params['ResourceId']}"
                policy_id = "00000000-0000-0000-0000-000000000000"
                policy = f"scalingPolicy:{policy_id}:{resource}:policyName/{params['PolicyName']}"
                return {"PolicyARN": self._arn("autoscaling", policy), "Alarms": []}
            case ("sts", "GetCallerIdentity"):
                return {"Account": self.account, "Arn": self._arn("iam", "user/dry-run"), "UserId": "DRYRUN"}
            case _:
                return {}


def plan_dry_run(config: DeployConfig) -> tuple[DryRun, str]:
    """Read the endpoint for real (the one call a dry run sends); return the `DryRun` and what was read.

    Without credentials nothing is read (nor sent), and the plan is the one for a new endpoint.
    """
    session = build_session(config)
    name = config.endpoint_name
    if session.get_credentials() is None:
        log.warning("dry run: no AWS credentials to read endpoint %s with; planning a new endpoint", name)
        return DryRun(config.region, config.account), f"{name} not read (no AWS credentials): planned as new"
    endpoint = find_endpoint(sagemaker_client(session, config.region), name)
    if endpoint is None:
        return DryRun(config.region, config.account), f"read first: no endpoint {name}"
    state = f"{endpoint['EndpointStatus']} on {endpoint.get('EndpointConfigName')}"
    return DryRun(config.region, config.account, endpoint), f"read first: {name} is {state}"


# --- the deployment ------------------------------------------------------------------------


@dataclass(frozen=True)
class Deployment:
    """What `deploy` did: the names it created and, for a dry run, every call it would have made."""

    endpoint_name: str
    model_name: str
    image_uri: str
    status: str
    action: str = "created"  # or "updated"
    endpoint_config_name: str = ""
    replaced_endpoint_config: str | None = None  # the update's old config: kept, for a rollback
    scaling_policy_arns: list[str] = field(default_factory=list)
    calls: list[AwsCall] = field(default_factory=list)
    dry_run_note: str = ""  # what a dry run read before planning


def _sdk(module: str) -> Any:
    """Import a module of the SageMaker SDK (v2), quietly; only deploying needs it, so not at import.

    Imported by name: the SDK ships `py.typed` but is mostly untyped, so its objects are `Any` here.
    """
    # The SDK warns on import that v2 is on its way out (v3 has no PyTorchModel), and logs where
    # it looked for config files straight to stdout, which would garble the dry-run plan.
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    config_logger = logging.getLogger("sagemaker.config")
    if config_logger.level == logging.NOTSET:
        config_logger.setLevel(logging.WARNING)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DeployError("the SageMaker SDK is not installed: pip install -e '.[deploy]'") from exc


def image_uri(config: DeployConfig) -> str:
    """Return the PyTorch inference image for the config's version, region and instance type."""
    try:
        uri: str = _sdk("sagemaker.image_uris").retrieve(
            "pytorch",
            region=config.region,
            version=config.framework_version,
            py_version=config.py_version,
            instance_type=config.instance_type,
            image_scope="inference",
        )
    except ValueError as exc:
        raise UsageError(f"no PyTorch inference image for this version and region: {exc}") from exc
    return uri


def find_endpoint(client: SageMakerClient, endpoint_name: str) -> DescribeEndpointOutputTypeDef | None:
    """Return DescribeEndpoint's answer for the endpoint, or None if there is no such endpoint."""
    try:
        return client.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as exc:
        # How SageMaker says "no such endpoint" (the SDK's own test, session._deployment_entity_exists).
        error = exc.response.get("Error", {})
        if error.get("Code") == "ValidationException" and "Could not find" in error.get("Message", ""):
            return None
        raise


def check_updatable(endpoint: DescribeEndpointOutputTypeDef) -> None:
    """Raise `DeployError`, saying what to do, unless the existing endpoint can be updated now (InService)."""
    name, status = endpoint["EndpointName"], endpoint["EndpointStatus"]
    if status == "InService":
        return
    if status in IN_PROGRESS_STATUSES:
        raise DeployError(f"endpoint {name} is {status}: wait for it to be InService, then run again")
    if status == "Deleting":
        raise DeployError(f"endpoint {name} is being deleted: wait until it is gone, then run again to create it")
    if status == "Failed":
        reason = endpoint.get("FailureReason") or "no reason given"
        raise DeployError(
            f"endpoint {name} is Failed ({reason}); SageMaker allows only DeleteEndpoint on a failed "
            "endpoint: delete it, then run again to create it"
        )
    raise DeployError(f"endpoint {name} is {status}: it needs fixing by hand before it can be updated")


def pytorch_model(config: DeployConfig, image: str, session: boto3.session.Session, client: SageMakerClient) -> Any:
    """Return the `PyTorchModel` both paths deploy, named `<endpoint>-<timestamp>`; it calls nothing yet.

    No `entry_point` and no `source_dir`: the handler is already in the tarball's `code/`.
    Given either, the SDK would download the multi-GB tarball, repack it with the code and
    upload the copy (sagemaker/model.py, Model._upload_code, repack=True for every PyTorch
    version from 1.2). Without them it uploads and repacks nothing and points the model at
    our tarball as it is.
    """
    bucket = _S3_URI.match(config.model_data)
    assert bucket is not None  # checked in from_args
    return _sdk("sagemaker.pytorch").PyTorchModel(
        model_data=config.model_data,
        role=config.role,
        framework_version=config.framework_version,
        py_version=config.py_version,
        image_uri=image,
        env=dict(config.env),
        name=_sdk("sagemaker.utils").name_from_base(config.endpoint_name),
        # Nothing is uploaded, but `_upload_code` resolves a bucket first and, given none, calls
        # Session.default_bucket(): STS, then S3 ListBuckets/HeadBucket/CreateBucket of
        # sagemaker-REGION-ACCOUNT. Naming the model's own bucket skips all of that.
        code_location=f"s3://{bucket['bucket']}",
        sagemaker_session=_sdk("sagemaker").Session(boto_session=session, sagemaker_client=client),
    )


def async_inference_config(config: DeployConfig) -> Any:
    """Return the SDK's `AsyncInferenceConfig` for `--async`, or None for a real-time endpoint."""
    settings = config.async_inference
    if settings is None:
        return None
    notifications = {"SuccessTopic": settings.success_topic, "ErrorTopic": settings.error_topic}
    return _sdk("sagemaker.async_inference").AsyncInferenceConfig(
        output_path=settings.output_path,
        failure_path=settings.failure_path,
        max_concurrent_invocations_per_instance=settings.max_concurrent_invocations,
        notification_config={key: arn for key, arn in notifications.items() if arn} or None,
    )


def create_endpoint(config: DeployConfig, model: Any) -> str:
    """Create the model, endpoint config and endpoint with `PyTorchModel.deploy`; return the config's name."""
    model.deploy(
        initial_instance_count=config.instance_count,
        instance_type=config.instance_type,
        endpoint_name=config.endpoint_name,
        kms_key=config.kms_key_id,
        async_inference_config=async_inference_config(config),
        model_data_download_timeout=MODEL_DATA_DOWNLOAD_TIMEOUT_S,
        container_startup_health_check_timeout=CONTAINER_STARTUP_HEALTH_CHECK_TIMEOUT_S,
        # The SDK's own wait sleeps 30 s before its first look; ours (`wait_in_service`) looks first.
        wait=False,
    )
    return config.endpoint_name  # Session.endpoint_from_production_variants names the config like the endpoint


def update_endpoint(config: DeployConfig, model: Any, client: SageMakerClient) -> str:
    """Create the model and a new endpoint config, then UpdateEndpoint to them; return the config's name.

    The SDK makes both exactly as `PyTorchModel.deploy` does for a new endpoint: `Model.create`
    is the CreateModel half of `deploy`, and `Session.create_endpoint_config` builds the variant
    with the same `sagemaker.production_variant` and applies the KMS key and async config the
    same way. Not `PyTorchModel.deploy(update_endpoint=True)`: it always waits, with the SDK's
    wait (30 s before the first look, progress dots on stdout), and counts a rolled-back update
    as InService. Not `Predictor.update_endpoint`: it copies the old config and builds a bare
    variant, losing the start-up timeouts and keeping the old async and KMS settings.
    """
    model.create(instance_type=config.instance_type)
    async_config = async_inference_config(config)
    endpoint_config: str = model.sagemaker_session.create_endpoint_config(
        # Unique (a millisecond timestamp), and it pairs the config with its model, as the SDK's
        # own update does.
        name=model.name,
        model_name=model.name,
        initial_instance_count=config.instance_count,
        instance_type=config.instance_type,
        kms_key=config.kms_key_id,
        model_data_download_timeout=MODEL_DATA_DOWNLOAD_TIMEOUT_S,
        container_startup_health_check_timeout=CONTAINER_STARTUP_HEALTH_CHECK_TIMEOUT_S,
        # The request dict `Model.deploy` makes of the same object.
        async_inference_config_dict=None if async_config is None else async_config._to_request_dict(),
    )
    # boto3's own call: the SDK's Session.update_endpoint(wait=False) adds only a second
    # DescribeEndpoint, and turns an endpoint deleted in between into a ValueError.
    client.update_endpoint(EndpointName=config.endpoint_name, EndpointConfigName=endpoint_config)
    return endpoint_config


def wait_in_service(client: SageMakerClient, endpoint_name: str, endpoint_config_name: str | None = None) -> str:
    """Wait until the endpoint is InService (on `endpoint_config_name`, when given); else raise `DeployError`.

    Looks first, then every WAIT_DELAY_S while the endpoint is Creating or Updating. An update
    that fails is rolled back: the endpoint settles InService on its old config, the reason in
    FailureReason; the config it settles on tells that from success. (botocore's
    `endpoint_in_service` waiter returns no answer to check, and would keep polling an endpoint
    in UpdateRollbackFailed for the full hour.)
    """
    endpoint = client.describe_endpoint(EndpointName=endpoint_name)
    looks = 1
    while endpoint["EndpointStatus"] in IN_PROGRESS_STATUSES:
        if looks == WAIT_MAX_ATTEMPTS:
            minutes = WAIT_DELAY_S * WAIT_MAX_ATTEMPTS // 60
            raise DeployError(f"endpoint {endpoint_name} is still {endpoint['EndpointStatus']} after {minutes} minutes")
        time.sleep(WAIT_DELAY_S)
        endpoint = client.describe_endpoint(EndpointName=endpoint_name)
        looks += 1
    status, reason = endpoint["EndpointStatus"], endpoint.get("FailureReason")
    if status != "InService":
        raise DeployError(f"endpoint {endpoint_name} did not come up: {reason or status}")
    serving = endpoint.get("EndpointConfigName")
    if endpoint_config_name is not None and serving != endpoint_config_name:
        raise DeployError(
            f"endpoint {endpoint_name} rolled back to {serving}: the update to {endpoint_config_name} failed: "
            f"{reason or 'SageMaker gave no reason'}"
        )
    return status


def register_autoscaling(config: DeployConfig, session: boto3.session.Session) -> list[str]:
    """Register scale-to-zero autoscaling on the async endpoint's variant; return the policy ARNs.

    Every call is an upsert (same names), so running the deployment again updates them.
    """
    settings = config.async_inference
    assert settings is not None
    autoscaling = autoscaling_client(session, config.region)
    cloudwatch = cloudwatch_client(session, config.region)
    autoscaling.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=config.scaling_resource_id,
        ScalableDimension=SCALABLE_DIMENSION,
        MinCapacity=settings.min_instances,
        MaxCapacity=settings.max_instances,
    )
    tracking = autoscaling.put_scaling_policy(
        PolicyName=f"{config.endpoint_name}-backlog-per-instance",
        ServiceNamespace="sagemaker",
        ResourceId=config.scaling_resource_id,
        ScalableDimension=SCALABLE_DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": settings.backlog_target,
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance",
                "Namespace": "AWS/SageMaker",
                "Dimensions": [{"Name": "EndpointName", "Value": config.endpoint_name}],
                "Statistic": "Average",
            },
            "ScaleOutCooldown": SCALE_OUT_COOLDOWN_S,
            "ScaleInCooldown": SCALE_IN_COOLDOWN_S,
        },
    )
    from_zero = autoscaling.put_scaling_policy(
        PolicyName=f"{config.endpoint_name}-scale-from-zero",
        ServiceNamespace="sagemaker",
        ResourceId=config.scaling_resource_id,
        ScalableDimension=SCALABLE_DIMENSION,
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity",
            "MetricAggregationType": "Average",
            "Cooldown": SCALE_OUT_COOLDOWN_S,
            # The alarm fires at metric >= 1; the step's bounds are relative to that threshold.
            "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
        },
    )
    cloudwatch.put_metric_alarm(
        AlarmName=f"{config.endpoint_name}-has-backlog-without-capacity",
        AlarmDescription=f"Start an instance of {config.endpoint_name} when requests wait and none runs",
        Namespace="AWS/SageMaker",
        MetricName="HasBacklogWithoutCapacity",
        Dimensions=[{"Name": "EndpointName", "Value": config.endpoint_name}],
        Statistic="Average",
        Period=ALARM_PERIOD_S,
        EvaluationPeriods=ALARM_EVALUATION_PERIODS,
        DatapointsToAlarm=ALARM_EVALUATION_PERIODS,
        Threshold=1.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        # No data while the endpoint is idle or has instances: that is not a backlog.
        TreatMissingData="notBreaching",
        AlarmActions=[from_zero["PolicyARN"]],
    )
    log.info(
        "autoscaling %s: %d..%d instances", config.scaling_resource_id, settings.min_instances, settings.max_instances
    )
    return [tracking["PolicyARN"], from_zero["PolicyARN"]]


def deploy(config: DeployConfig) -> Deployment:
    """Create the endpoint, or update it if it exists (and, for async, register its autoscaling).

    With `dry_run`, only pretend to.
    """
    image = image_uri(config)  # first: an unknown version or region is refused before any client exists
    dry_run, note = plan_dry_run(config) if config.dry_run else (None, "")
    session = build_session(config, dry_run)
    client = sagemaker_client(session, config.region)
    current = find_endpoint(client, config.endpoint_name)
    if current is not None:
        check_updatable(current)  # before anything is created
    model = pytorch_model(config, image, session, client)
    replaced: str | None = None  # the config an update replaces: kept, for a rollback
    if current is None:
        endpoint_config = create_endpoint(config, model)
    else:
        endpoint_config = update_endpoint(config, model, client)
        replaced = current["EndpointConfigName"]
    status = "Creating" if current is None else "Updating"
    if config.wait:
        # A new endpoint cannot roll back; an update can, to `replaced`.
        status = wait_in_service(client, config.endpoint_name, endpoint_config if replaced else None)
    if replaced:
        log.info(
            "left in place for a rollback: endpoint config %s and its model (roll back with aws sagemaker "
            "update-endpoint --endpoint-name %s --endpoint-config-name %s)",
            replaced,
            config.endpoint_name,
            replaced,
        )
    policies = register_autoscaling(config, session) if config.async_inference is not None else []
    return Deployment(
        endpoint_name=config.endpoint_name,
        model_name=str(model.name),
        image_uri=image,
        status=status,
        action="created" if current is None else "updated",
        endpoint_config_name=endpoint_config,
        replaced_endpoint_config=replaced,
        scaling_policy_arns=policies,
        calls=list(dry_run.calls) if dry_run is not None else [],
        dry_run_note=note,
    )


# --- command line --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser (every default is the module constant of the same meaning)."""
    parser = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--model-data", required=True, metavar="S3_URI", help="the tarball from python -m model.package"
    )
    parser.add_argument("--role", metavar="ARN", help="SageMaker execution role (default: $SAGEMAKER_ROLE_ARN)")
    parser.add_argument("--endpoint-name", default=DEFAULT_ENDPOINT_NAME, metavar="NAME", help="default: %(default)s")
    parser.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE, metavar="TYPE", help="default: %(default)s")
    parser.add_argument(
        "--instance-count", type=int, default=1, metavar="N", help="instances to start with (default: 1)"
    )
    parser.add_argument("--region", help=f"default: $AWS_REGION, $AWS_DEFAULT_REGION or {DEFAULT_REGION}")
    parser.add_argument(
        "--framework-version", default=DEFAULT_FRAMEWORK_VERSION, metavar="X.Y.Z", help="PyTorch (default: %(default)s)"
    )
    parser.add_argument("--py-version", default=DEFAULT_PY_VERSION, metavar="pyXY", help="default: %(default)s")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="container environment, repeatable; overrides the defaults ("
        + ", ".join(f"{key}={value}" for key, value in DEFAULT_ENV.items())
        + ")",
    )
    parser.add_argument(
        "--kms-key-id",
        metavar="KEY",
        help="KMS key for the instances' storage volume (not for types with local NVMe, e.g. ml.g5)",
    )
    parser.add_argument("--no-wait", action="store_true", help="return once the endpoint is being created or updated")
    parser.add_argument("--dry-run", action="store_true", help="print every AWS call it would make; send none")
    group = parser.add_argument_group("asynchronous endpoint (scales to zero)")
    group.add_argument("--async", dest="use_async", action="store_true", help="deploy an async endpoint")
    group.add_argument("--output-path", metavar="S3_URI", help="where results are written (required with --async)")
    group.add_argument("--failure-path", metavar="S3_URI", help="where errors are written (default: OUTPUT/failures)")
    group.add_argument("--success-topic", metavar="ARN", help="SNS topic told of each result")
    group.add_argument("--error-topic", metavar="ARN", help="SNS topic told of each failure")
    group.add_argument(
        "--max-concurrent-invocations-per-instance",
        dest="max_concurrent_invocations",
        type=int,
        metavar="N",
        help=f"requests handed to one instance at a time (default: {DEFAULT_MAX_CONCURRENT_INVOCATIONS})",
    )
    group.add_argument("--min-instances", type=int, metavar="N", help="autoscaling floor (default: 0)")
    group.add_argument(
        "--max-instances", type=int, metavar="N", help=f"autoscaling ceiling (default: {DEFAULT_MAX_INSTANCES})"
    )
    group.add_argument(
        "--backlog-target",
        type=float,
        metavar="N",
        help=f"queued requests per instance to aim for (default: {DEFAULT_BACKLOG_TARGET:g})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return 0, 1 when AWS refuses or the endpoint fails, 2 on refused input."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        config = DeployConfig.from_args(args, os.environ)
        deployment = deploy(config)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except (DeployError, BotoCoreError, ClientError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    if config.dry_run:
        print(f"# dry run: {len(deployment.calls)} AWS calls in {config.region}, none sent; {deployment.dry_run_note}")
        for call in deployment.calls:
            print(call)
        return 0
    print(
        json.dumps(
            {
                "endpoint": deployment.endpoint_name,
                "action": deployment.action,
                "status": deployment.status,
                "model": deployment.model_name,
                "image": deployment.image_uri,
                "endpoint_config": deployment.endpoint_config_name,
                "replaced_endpoint_config": deployment.replaced_endpoint_config,
                "async": config.async_inference is not None,
                "scaling_policies": deployment.scaling_policy_arns,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
