"""`ProductAnalyzer-<Env>-<region>`: everything one environment runs in one region.

    client ─▶ HTTP API ($default stage, throttled, JSON access logs) ─▶ VPC link
           ─▶ internal ALB :80 ─▶ Fargate tasks :8080 ─▶ S3 (uploads/, SSE-KMS)
                                                    ├──▶ SageMaker runtime (blip2-endpoint)
                                                    ├──▶ CloudWatch Logs (app log, Edge Function logs)
                                                    └──▶ NAT ─▶ OpenAI, Supabase, PostHog

Constructs make resources; this stack wires them: who may use the key, what each role may do,
which security group reaches which, what the container is told.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Aws, CfnOutput, Fn, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.components.alarms import Alarms
from infra.components.api import HttpApiFront
from infra.components.compute import CONTAINER_NAME, LISTENER_PORT, ApiService
from infra.components.inference import DLC_REPOSITORY, ModelInference, dlc_account
from infra.components.logs import allow_logs_to_use_key, encrypted_log_group
from infra.components.network import Network
from infra.components.secrets import AppSecrets
from infra.components.storage import ASYNC_PREFIX, MODELS_PREFIX, UPLOADS_PREFIX, Storage
from infra.config import MAX_UPLOAD_BYTES, METRICS_NAMESPACE, REPOSITORY_NAME, SERVICE, EnvironmentConfig
from infra.nag import acknowledge, grant


class ServiceStack(Stack):
    """One environment in one region; `config` says how big and where, `image_tag` which build runs."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: EnvironmentConfig, image_tag: str, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        region = self.region  # concrete: every stack of the set is pinned to its region
        name = f"{SERVICE}-{config.name}"
        log_prefix = f"/{SERVICE}/{config.name}/"
        endpoint_arn = f"arn:{Aws.PARTITION}:sagemaker:{region}:{Aws.ACCOUNT_ID}:endpoint/{config.sagemaker_endpoint}"

        # One customer managed key for this environment's data at rest: bucket, logs, topics, secrets.
        self.key = kms.Key(
            self,
            "DataKey",
            alias=f"alias/{name}",
            description=f"{name}: uploads, logs, topics and secrets",
            enable_key_rotation=True,
        )
        allow_logs_to_use_key(self.key, log_group_prefix=log_prefix)
        # Alarms publish to the encrypted alarm topic as CloudWatch, which needs the key for that.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
            )
        )

        self.storage = Storage(
            self, "Storage", environment=config.name, key=self.key, retention_days=config.image_retention_days
        )
        bucket = self.storage.bucket

        def log_group(construct_id: str, suffix: str) -> logs.LogGroup:
            return encrypted_log_group(
                self,
                construct_id,
                name=f"{log_prefix}{suffix}",
                key=self.key,
                retention_days=config.log_retention_days,
                retain=config.retain_logs,
            )

        self.app_log_group = log_group("AppLogGroup", "app")
        self.edge_log_group = log_group("EdgeLogGroup", "edge-functions")
        self.access_log_group = log_group("ApiAccessLogGroup", "api-access")
        self.flow_log_group = log_group("FlowLogGroup", "vpc-flow-logs")

        self.network = Network(self, "Network", nat_gateways=config.nat_gateways, flow_log_group=self.flow_log_group)
        vpc = self.network.vpc
        self.secrets = AppSecrets(self, "Secrets", environment=config.name, key=self.key)
        self.inference = ModelInference(self, "Inference", name=name, key=self.key, role_suffix=region)

        repository = ecr.Repository.from_repository_name(self, "Repository", REPOSITORY_NAME)
        environment = {
            # The app's production mode (refuses AUTH_MODE=disabled) in every deployed environment, staging too.
            "ENVIRONMENT": "production",
            "STORAGE_BACKEND": "s3",
            "S3_BUCKET": bucket.bucket_name,
            "S3_PREFIX": UPLOADS_PREFIX,
            "S3_KMS_KEY_ID": self.key.key_arn,
            "AWS_REGION": region,
            "VISION_BACKEND": "sagemaker",
            "SAGEMAKER_ENDPOINT": config.sagemaker_endpoint,
            "REPORT_WRITER": "openai",
            "OPENAI_MODEL": config.openai_model,
            "AUTH_MODE": "supabase",
            "LOG_FORMAT": "json",
            "LATENCY_SLO_MS": str(config.latency_slo_ms),
            "METRICS_NAMESPACE": METRICS_NAMESPACE,
            "EDGE_LOG_GROUP": self.edge_log_group.log_group_name,
            # API Gateway's HTTP API refuses bodies over 10 MB with its own non-JSON 413; below that,
            # the app's cap answers first, with our `image_too_large` body (the form around the image is small).
            "MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
            # uvicorn --proxy-headers trusts X-Forwarded-* only from these: the ALB's addresses in the VPC.
            "FORWARDED_ALLOW_IPS": vpc.vpc_cidr_block,
        }
        if config.supabase_url:
            environment["SUPABASE_URL"] = config.supabase_url
        self.service = ApiService(
            self,
            "Service",
            name=name,
            vpc=vpc,
            image=ecs.ContainerImage.from_ecr_repository(repository, image_tag),
            environment=environment,
            secrets={
                variable: ecs.Secret.from_secrets_manager(secret) for variable, secret in self.secrets.secrets.items()
            },
            log_group=self.app_log_group,
            access_log_bucket=self.storage.log_bucket,
            cpu=config.cpu,
            memory_mib=config.memory_mib,
            cpu_architecture=ecs.CpuArchitecture.of(config.cpu_architecture),
            desired_count=config.desired_count,
            min_tasks=config.min_tasks,
            max_tasks=config.max_tasks,
            cpu_target_percent=config.cpu_target_percent,
            requests_per_target_per_minute=config.requests_per_target_per_minute,
            role_suffix=region,
        )
        self.api = HttpApiFront(
            self,
            "Api",
            name=name,
            vpc=vpc,
            listener=self.service.listener,
            access_log_group=self.access_log_group,
            throttle_rate_limit=config.throttle_rate_limit,
            throttle_burst_limit=config.throttle_burst_limit,
            domain=config.domain,
            region=region,
        )
        self.service.load_balancer.connections.allow_from(
            self.api.vpc_link_security_group, ec2.Port.tcp(LISTENER_PORT), "API Gateway VPC link"
        )
        for endpoint in self.network.endpoints.values():
            endpoint.connections.allow_default_port_from(self.service.security_group, "tasks (and ECS on their behalf)")
        self.alarms = Alarms(
            self,
            "Alarms",
            name=name,
            key=self.key,
            alarm_email=config.alarm_email,
            stage=self.api.stage,
            latency_slo_ms=config.latency_slo_ms,
            fault_rate_percent=config.fault_rate_percent,
            fault_rate_min_requests=config.fault_rate_min_requests,
            endpoint_name=config.sagemaker_endpoint,
            model_latency_p95_ms=config.model_latency_p95_ms,
            async_backlog_threshold=config.async_backlog_threshold,
        )

        self._grant_task_role(endpoint_arn=endpoint_arn)
        self._grant_model_role(config=config, region=region)
        self._acknowledge()

        private_subnets = vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS).subnet_ids
        outputs = {
            "ApiUrl": (self.api.url, "base URL of the API"),
            "BucketName": (bucket.bucket_name, "uploads, model artifacts, async results"),
            "ClusterName": (self.service.cluster.cluster_name, "ECS cluster"),
            "ServiceName": (self.service.service.service_name, "ECS service"),
            "TaskDefinitionArn": (self.service.task_definition.task_definition_arn, "run-task this for migrations"),
            "ContainerName": (CONTAINER_NAME, "container to override in run-task"),
            "TaskSecurityGroupId": (self.service.security_group.security_group_id, "run-task security group"),
            "PrivateSubnetIds": (Fn.join(",", private_subnets), "run-task subnets"),
            "ModelExecutionRoleArn": (self.inference.execution_role.role_arn, "model.deploy --role"),
            "ModelDataPrefix": (bucket.s3_url_for_object(MODELS_PREFIX), "model.package --upload under here"),
            "AsyncOutputPath": (bucket.s3_url_for_object(f"{ASYNC_PREFIX}results"), "model.deploy --output-path"),
            "AsyncFailurePath": (bucket.s3_url_for_object(f"{ASYNC_PREFIX}failures"), "model.deploy --failure-path"),
            "AsyncSuccessTopicArn": (self.inference.success_topic.topic_arn, "model.deploy --success-topic"),
            "AsyncErrorTopicArn": (self.inference.error_topic.topic_arn, "model.deploy --error-topic"),
            "AlarmTopicArn": (self.alarms.topic.topic_arn, "alarm notifications"),
            "EdgeLogGroupName": (self.edge_log_group.log_group_name, "EDGE_LOG_GROUP"),
            "EndpointName": (config.sagemaker_endpoint, "model.deploy --endpoint-name: the endpoint the service calls"),
            "DataKeyArn": (self.key.key_arn, "model.package --kms-key-id"),
            "SecretNamePrefix": (f"{SERVICE}/{config.name}/", "put-secret-value on each secret under here"),
        }
        for output_id, (value, description) in outputs.items():
            CfnOutput(self, output_id, value=value, description=description)

    def _grant_task_role(self, *, endpoint_arn: str) -> None:
        """The app may touch its uploads, call its model endpoint and forward Edge logs; nothing else."""
        bucket = self.storage.bucket
        role = self.service.task_role
        uploads = bucket.arn_for_objects(f"{UPLOADS_PREFIX}*")
        grant(
            role,
            iam.PolicyStatement(
                sid="StoreUploads",
                actions=["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
                resources=[uploads],
            ),
            wildcard_reason="Object keys are content hashes chosen per request: the app may put, get and delete "
            "any object under uploads/ and nothing outside it.",
        )
        # /readyz asks HeadBucket, which S3 authorizes as ListBucket.
        grant(role, iam.PolicyStatement(sid="CheckBucket", actions=["s3:ListBucket"], resources=[bucket.bucket_arn]))
        grant(
            role,
            iam.PolicyStatement(
                sid="EncryptUploads",
                actions=["kms:GenerateDataKey", "kms:Decrypt"],
                resources=[self.key.key_arn],
                conditions={
                    "StringEquals": {"kms:ViaService": f"s3.{self.region}.amazonaws.com"},
                    # With an S3 Bucket Key the context is the bucket's ARN; without, the object's.
                    "StringLike": {"kms:EncryptionContext:aws:s3:arn": [bucket.bucket_arn, uploads]},
                },
            ),
        )
        grant(
            role,
            iam.PolicyStatement(
                sid="InvokeVisionModel",
                actions=["sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointAsync"],
                resources=[endpoint_arn],
            ),
        )
        # /readyz asks whether the endpoint is InService.
        grant(
            role,
            iam.PolicyStatement(
                sid="CheckVisionModel", actions=["sagemaker:DescribeEndpoint"], resources=[endpoint_arn]
            ),
        )
        grant(
            role,
            iam.PolicyStatement(
                sid="ForwardEdgeLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.edge_log_group.log_group_arn],
            ),
        )
        acknowledge(
            self.service.execution_role,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken, which ECS needs to pull the image, takes no resource but '*'; the pull "
            "itself is limited to the product-analyzer repository.",
        )

    def _grant_model_role(self, *, config: EnvironmentConfig, region: str) -> None:
        """The endpoint reads its artifacts, pulls AWS's PyTorch image, logs, and reports async results."""
        bucket = self.storage.bucket
        role = self.inference.execution_role
        endpoint_logs = (
            f"arn:{Aws.PARTITION}:logs:{region}:{Aws.ACCOUNT_ID}:log-group:/aws/sagemaker/Endpoints/"
            f"{config.sagemaker_endpoint}"
        )
        grant(
            role,
            iam.PolicyStatement(
                sid="ReadModelArtifacts",
                actions=["s3:GetObject"],
                resources=[bucket.arn_for_objects(f"{MODELS_PREFIX}*")],
            ),
            wildcard_reason="Each model version is a new tarball under models/; the endpoint reads only that prefix.",
        )
        grant(
            role,
            iam.PolicyStatement(
                sid="WriteAsyncResults",
                actions=["s3:PutObject"],
                resources=[bucket.arn_for_objects(f"{ASYNC_PREFIX}*")],
            ),
            wildcard_reason="SageMaker names each asynchronous result and failure object itself, under the "
            "output and failure paths, both inside async-inference/.",
        )
        grant(
            role,
            iam.PolicyStatement(
                sid="UseDataKeyThroughS3AndSns",
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=[self.key.key_arn],
                conditions={
                    "StringEquals": {"kms:ViaService": [f"s3.{region}.amazonaws.com", f"sns.{region}.amazonaws.com"]}
                },
            ),
        )
        grant(
            role,
            iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            wildcard_reason="ecr:GetAuthorizationToken takes no resource but '*'; the pulls are limited to AWS's "
            "pytorch-inference repository, and metrics to the /aws/sagemaker/ namespaces.",
        )
        grant(
            role,
            iam.PolicyStatement(
                sid="PullDeepLearningContainer",
                actions=["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                resources=[f"arn:{Aws.PARTITION}:ecr:{region}:{dlc_account(region)}:repository/{DLC_REPOSITORY}"],
            ),
        )
        grant(
            role,
            iam.PolicyStatement(
                sid="WriteEndpointLogs",
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[endpoint_logs, f"{endpoint_logs}:log-stream:*"],
            ),
            wildcard_reason="SageMaker names a log stream per instance and container of the endpoint, inside the "
            "endpoint's own log group.",
        )
        grant(
            role,
            iam.PolicyStatement(
                sid="PutEndpointMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
            ),
            wildcard_reason="cloudwatch:PutMetricData takes no resource but '*'; the namespace condition limits it "
            "to SageMaker's own endpoint namespaces.",
        )
        grant(
            role,
            iam.PolicyStatement(
                sid="NotifyAsyncResults",
                actions=["sns:Publish"],
                resources=[self.inference.success_topic.topic_arn, self.inference.error_topic.topic_arn],
            ),
        )

    def _acknowledge(self) -> None:
        """cdk-nag findings here that are decisions, not defects."""
        acknowledge(
            self.service.task_definition,
            "AwsSolutions-ECS2",
            "The environment holds configuration only (backend names, bucket, key ARN, endpoint, log group, "
            "SLO); every secret reaches the container through the task definition's Secrets from Secrets Manager.",
        )
