"""The service: an ECS cluster, a Fargate service on port 8080 behind an internal ALB, and its autoscaling."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, Size
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

CONTAINER_NAME = "app"
CONTAINER_PORT = 8080
LISTENER_PORT = 80
HEALTH_CHECK_PATH = "/healthz"
# ECS sends SIGTERM, waits this long, then SIGKILL; uvicorn's graceful-shutdown timeout is below it.
STOP_TIMEOUT = Duration.seconds(30)
# In-flight requests get this long to finish once a task leaves the target group.
DEREGISTRATION_DELAY = Duration.seconds(15)


class ApiService(Construct):
    """The Fargate service `service` (container `app`) registered in `target_group` of the internal `load_balancer`.

    Creates the task role and the execution role with fixed names (the deploy role passes them to
    `ecs:RunTask` for migrations); what they may do is granted by the stack.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        vpc: ec2.IVpc,
        image: ecs.ContainerImage,
        environment: Mapping[str, str],
        secrets: Mapping[str, ecs.Secret],
        log_group: logs.ILogGroup,
        access_log_bucket: s3.IBucket,
        cpu: int,
        memory_mib: int,
        cpu_architecture: ecs.CpuArchitecture,
        desired_count: int,
        min_tasks: int,
        max_tasks: int,
        cpu_target_percent: int,
        requests_per_target_per_minute: int,
        role_suffix: str,
    ) -> None:
        super().__init__(scope, construct_id)
        private = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=vpc,
            cluster_name=name,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        self.task_role = iam.Role(
            self,
            "TaskRole",
            role_name=f"{name}-task-{role_suffix}",
            description=f"{name}: what the app itself may call",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
        )
        self.execution_role = iam.Role(
            self,
            "ExecutionRole",
            role_name=f"{name}-task-exec-{role_suffix}",
            description=f"{name}: what ECS needs to start the task (image pull, logs, secrets)",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
        )
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "TaskDefinition",
            family=name,
            cpu=cpu,
            memory_limit_mib=memory_mib,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=cpu_architecture, operating_system_family=ecs.OperatingSystemFamily.LINUX
            ),
            task_role=self.task_role,
            execution_role=self.execution_role,
        )
        self.container = self.task_definition.add_container(
            CONTAINER_NAME,
            container_name=CONTAINER_NAME,
            image=image,
            essential=True,
            port_mappings=[ecs.PortMapping(container_port=CONTAINER_PORT, name="http")],
            environment=dict(environment),
            secrets=dict(secrets),
            stop_timeout=STOP_TIMEOUT,
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix=CONTAINER_NAME,
                log_group=log_group,
                # A slow log API must not block the request path; 25 MiB of lines wait in memory.
                mode=ecs.AwsLogDriverMode.NON_BLOCKING,
                max_buffer_size=Size.mebibytes(25),
            ),
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "TaskSecurityGroup",
            vpc=vpc,
            description=f"{name} tasks: in from the load balancer only; out to AWS endpoints, OpenAI, Supabase",
            allow_all_outbound=True,
        )
        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=self.cluster,
            task_definition=self.task_definition,
            desired_count=desired_count,
            min_healthy_percent=100,
            max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            health_check_grace_period=Duration.seconds(60),
            vpc_subnets=private,
            security_groups=[self.security_group],
            assign_public_ip=False,
            platform_version=ecs.FargatePlatformVersion.LATEST,
            propagate_tags=ecs.PropagatedTagSource.SERVICE,
            enable_ecs_managed_tags=True,
        )

        self.load_balancer_security_group = ec2.SecurityGroup(
            self,
            "LoadBalancerSecurityGroup",
            vpc=vpc,
            description=f"{name} internal load balancer: in from the API Gateway VPC link only",
            allow_all_outbound=False,
        )
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self,
            "LoadBalancer",
            vpc=vpc,
            internet_facing=False,
            vpc_subnets=private,
            security_group=self.load_balancer_security_group,
            drop_invalid_header_fields=True,
        )
        self.load_balancer.log_access_logs(access_log_bucket, prefix="alb")
        self.target_group = elbv2.ApplicationTargetGroup(
            self,
            "TargetGroup",
            vpc=vpc,
            port=CONTAINER_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP,
            deregistration_delay=DEREGISTRATION_DELAY,
            health_check=elbv2.HealthCheck(
                path=HEALTH_CHECK_PATH,
                healthy_http_codes="200",
                interval=Duration.seconds(15),
                timeout=Duration.seconds(5),
                healthy_threshold_count=2,
                unhealthy_threshold_count=3,
            ),
            targets=[self.service.load_balancer_target(container_name=CONTAINER_NAME, container_port=CONTAINER_PORT)],
        )
        self.listener = self.load_balancer.add_listener(
            "Http",
            port=LISTENER_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            open=False,
            default_target_groups=[self.target_group],
        )

        scaling = self.service.auto_scale_task_count(min_capacity=min_tasks, max_capacity=max_tasks)
        scaling.scale_on_cpu_utilization(
            "CpuScaling",
            target_utilization_percent=cpu_target_percent,
            scale_out_cooldown=Duration.seconds(60),
            scale_in_cooldown=Duration.seconds(300),
        )
        scaling.scale_on_request_count(
            "RequestScaling",
            requests_per_target=requests_per_target_per_minute,
            target_group=self.target_group,
            scale_out_cooldown=Duration.seconds(60),
            scale_in_cooldown=Duration.seconds(300),
        )
