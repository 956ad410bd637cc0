"""The ECS service: cluster, task definition, container, roles, load balancer and autoscaling."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match

from infra.components.secrets import SECRETS
from tests.infra.synth import PRODUCTION, STAGING, SUPABASE_URL, Synthesis


def _container(synthesis: Synthesis, stack: str) -> dict[str, Any]:
    (task_definition,) = synthesis.resources(stack, "AWS::ECS::TaskDefinition").values()
    (container,) = task_definition["Properties"]["ContainerDefinitions"]
    return dict(container)


def test_cluster_has_container_insights(synthesis: Synthesis) -> None:
    synthesis.template(STAGING).has_resource_properties(
        "AWS::ECS::Cluster",
        {
            "ClusterName": "product-analyzer-staging",
            "ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}],
        },
    )


def test_task_definition_is_fargate_arm64_with_its_two_roles(synthesis: Synthesis) -> None:
    stack = synthesis.service(STAGING)
    synthesis.template(STAGING).has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "Family": "product-analyzer-staging",
            "RequiresCompatibilities": ["FARGATE"],
            "NetworkMode": "awsvpc",
            "Cpu": "512",
            "Memory": "1024",
            "RuntimePlatform": {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"},
            "TaskRoleArn": {"Fn::GetAtt": [synthesis.logical_id(stack.service.task_role), "Arn"]},
            "ExecutionRoleArn": {"Fn::GetAtt": [synthesis.logical_id(stack.service.execution_role), "Arn"]},
        },
    )


def test_container_listens_on_8080_stops_within_30_s_and_logs_without_blocking(synthesis: Synthesis) -> None:
    stack = synthesis.service(STAGING)
    container = _container(synthesis, STAGING)

    assert container["Name"] == "app"
    assert container["Essential"] is True
    assert container["PortMappings"] == [{"ContainerPort": 8080, "Name": "http", "Protocol": "tcp"}]
    assert container["StopTimeout"] == 30
    assert container["LogConfiguration"] == {
        "LogDriver": "awslogs",
        "Options": {
            "awslogs-group": {"Ref": synthesis.logical_id(stack.app_log_group)},
            "awslogs-stream-prefix": "app",
            "awslogs-region": "ca-central-1",
            "mode": "non-blocking",
            "max-buffer-size": "26214400b",
        },
    }


def test_container_environment_selects_the_production_backends(synthesis: Synthesis) -> None:
    stack = synthesis.service(STAGING)
    environment = {item["Name"]: item["Value"] for item in _container(synthesis, STAGING)["Environment"]}

    assert environment == {
        "ENVIRONMENT": "production",
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": {"Ref": synthesis.logical_id(stack.storage.bucket)},
        "S3_PREFIX": "uploads/",
        "S3_KMS_KEY_ID": {"Fn::GetAtt": [synthesis.logical_id(stack.key), "Arn"]},
        "AWS_REGION": "ca-central-1",
        "VISION_BACKEND": "sagemaker",
        "SAGEMAKER_ENDPOINT": "blip2-endpoint-staging",
        "REPORT_WRITER": "openai",
        "OPENAI_MODEL": "gpt-5-mini",
        "AUTH_MODE": "supabase",
        "LOG_FORMAT": "json",
        "LATENCY_SLO_MS": "10000",
        "METRICS_NAMESPACE": "ProductAnalyzer",
        "EDGE_LOG_GROUP": {"Ref": synthesis.logical_id(stack.edge_log_group)},
        "MAX_UPLOAD_BYTES": "9500000",
        "FORWARDED_ALLOW_IPS": {"Fn::GetAtt": [synthesis.logical_id(stack.network.vpc), "CidrBlock"]},
    }
    # No secret value, nor a secret's name, in the plain environment.
    assert not set(environment) & set(SECRETS)


def test_supabase_url_is_set_when_configured(synthesis: Synthesis) -> None:
    environment = {item["Name"]: item["Value"] for item in _container(synthesis, PRODUCTION)["Environment"]}

    assert environment["SUPABASE_URL"] == SUPABASE_URL


def test_secrets_reach_the_container_from_secrets_manager(synthesis: Synthesis) -> None:
    stack = synthesis.service(STAGING)
    secrets = {item["Name"]: item["ValueFrom"] for item in _container(synthesis, STAGING)["Secrets"]}

    assert set(secrets) == {
        "OPENAI_API_KEY",
        "SUPABASE_JWT_SECRET",
        "DATABASE_URL",
        "POSTHOG_API_KEY",
        "POSTHOG_ID_SALT",
        "EDGE_LOG_TOKEN",
    }
    for variable, value_from in secrets.items():
        assert value_from == {"Ref": synthesis.logical_id(stack.secrets.secrets[variable])}


def test_each_secret_is_created_named_and_encrypted_for_the_operator_to_fill(synthesis: Synthesis) -> None:
    stack = synthesis.service(STAGING)
    template = synthesis.template(STAGING)

    template.resource_count_is("AWS::SecretsManager::Secret", len(SECRETS))
    for variable in SECRETS:
        template.has_resource_properties(
            "AWS::SecretsManager::Secret",
            {
                "Name": f"product-analyzer/staging/{variable}",
                "KmsKeyId": {"Fn::GetAtt": [synthesis.logical_id(stack.key), "Arn"]},
                "GenerateSecretString": Match.object_like({"PasswordLength": 48}),
            },
        )


def test_execution_role_reads_exactly_the_six_secrets(synthesis: Synthesis) -> None:
    stack = synthesis.service(STAGING)
    role = synthesis.logical_id(stack.service.execution_role)
    (policy,) = [
        p["Properties"]
        for p in synthesis.resources(STAGING, "AWS::IAM::Policy").values()
        if p["Properties"]["Roles"] == [{"Ref": role}]
    ]
    read = [
        s["Resource"]
        for s in policy["PolicyDocument"]["Statement"]
        if s["Action"] == ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    ]

    assert sorted(r["Ref"] for r in read) == sorted(synthesis.logical_id(s) for s in stack.secrets.secrets.values())


def test_task_role_may_only_touch_uploads_call_the_endpoint_and_forward_edge_logs(synthesis: Synthesis) -> None:
    stack = synthesis.service(STAGING)
    bucket = synthesis.logical_id(stack.storage.bucket)
    uploads = {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/uploads/*"]]}
    endpoint = {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":sagemaker:ca-central-1:",
                {"Ref": "AWS::AccountId"},
                ":endpoint/blip2-endpoint-staging",
            ],
        ]
    }
    role = synthesis.logical_id(stack.service.task_role)
    (policy,) = [
        p["Properties"]
        for p in synthesis.resources(STAGING, "AWS::IAM::Policy").values()
        if p["Properties"]["Roles"] == [{"Ref": role}]
    ]

    assert policy["PolicyDocument"]["Statement"] == [
        {
            "Sid": "StoreUploads",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
            "Resource": uploads,
        },
        {
            "Sid": "CheckBucket",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": {"Fn::GetAtt": [bucket, "Arn"]},
        },
        {
            "Sid": "EncryptUploads",
            "Effect": "Allow",
            "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
            "Resource": {"Fn::GetAtt": [synthesis.logical_id(stack.key), "Arn"]},
            "Condition": {
                "StringEquals": {"kms:ViaService": "s3.ca-central-1.amazonaws.com"},
                "StringLike": {"kms:EncryptionContext:aws:s3:arn": [{"Fn::GetAtt": [bucket, "Arn"]}, uploads]},
            },
        },
        {
            "Sid": "InvokeVisionModel",
            "Effect": "Allow",
            "Action": ["sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointAsync"],
            "Resource": endpoint,
        },
        {"Sid": "CheckVisionModel", "Effect": "Allow", "Action": "sagemaker:DescribeEndpoint", "Resource": endpoint},
        {
            "Sid": "ForwardEdgeLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": {"Fn::GetAtt": [synthesis.logical_id(stack.edge_log_group), "Arn"]},
        },
    ]
    # Nothing else is attached to the task role.
    synthesis.template(STAGING).has_resource_properties(
        "AWS::IAM::Role",
        {"RoleName": "product-analyzer-staging-task-ca-central-1", "ManagedPolicyArns": Match.absent()},
    )


def test_edge_log_group_is_encrypted_with_retention(synthesis: Synthesis) -> None:
    stack = synthesis.service(STAGING)
    synthesis.template(STAGING).has_resource(
        "AWS::Logs::LogGroup",
        {
            "Properties": Match.object_like(
                {
                    "LogGroupName": "/product-analyzer/staging/edge-functions",
                    "RetentionInDays": 30,
                    "KmsKeyId": {"Fn::GetAtt": [synthesis.logical_id(stack.key), "Arn"]},
                }
            ),
            # Staging's logs go with the stack; production keeps them.
            "DeletionPolicy": "Delete",
        },
    )
    synthesis.template(PRODUCTION).has_resource(
        "AWS::Logs::LogGroup",
        {
            "Properties": Match.object_like(
                {"LogGroupName": "/product-analyzer/production/edge-functions", "RetentionInDays": 90}
            ),
            "DeletionPolicy": "Retain",
        },
    )


def test_service_rolls_back_a_failed_deployment_and_runs_in_private_subnets(synthesis: Synthesis) -> None:
    stack = synthesis.service(STAGING)
    synthesis.template(STAGING).has_resource_properties(
        "AWS::ECS::Service",
        {
            "LaunchType": "FARGATE",
            "DesiredCount": 1,
            "DeploymentConfiguration": Match.object_like(
                {
                    "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True},
                    "MinimumHealthyPercent": 100,
                    "MaximumPercent": 200,
                }
            ),
            "HealthCheckGracePeriodSeconds": 60,
            "NetworkConfiguration": {
                "AwsvpcConfiguration": {
                    "AssignPublicIp": "DISABLED",
                    "SecurityGroups": [{"Fn::GetAtt": [synthesis.logical_id(stack.service.security_group), "GroupId"]}],
                    "Subnets": Match.any_value(),
                }
            },
            "LoadBalancers": [
                {
                    "ContainerName": "app",
                    "ContainerPort": 8080,
                    "TargetGroupArn": {"Ref": synthesis.logical_id(stack.service.target_group)},
                }
            ],
        },
    )
    synthesis.template(PRODUCTION).has_resource_properties("AWS::ECS::Service", {"DesiredCount": 2})


def test_internal_load_balancer_checks_healthz_and_drains_in_15_s(synthesis: Synthesis) -> None:
    stack = synthesis.service(STAGING)
    template = synthesis.template(STAGING)

    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        {
            "Scheme": "internal",
            "Type": "application",
            "LoadBalancerAttributes": Match.array_with(
                [
                    {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"},
                    {"Key": "access_logs.s3.enabled", "Value": "true"},
                    {"Key": "access_logs.s3.bucket", "Value": {"Ref": synthesis.logical_id(stack.storage.log_bucket)}},
                ]
            ),
        },
    )
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        {
            "Port": 8080,
            "Protocol": "HTTP",
            "TargetType": "ip",
            "HealthCheckPath": "/healthz",
            "Matcher": {"HttpCode": "200"},
            "TargetGroupAttributes": Match.array_with([{"Key": "deregistration_delay.timeout_seconds", "Value": "15"}]),
        },
    )
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {
            "Port": 80,
            "Protocol": "HTTP",
            "DefaultActions": [
                {"Type": "forward", "TargetGroupArn": {"Ref": synthesis.logical_id(stack.service.target_group)}}
            ],
        },
    )


def test_only_the_vpc_link_reaches_the_load_balancer_and_only_the_load_balancer_the_tasks(
    synthesis: Synthesis,
) -> None:
    stack = synthesis.service(STAGING)
    group = synthesis.logical_id
    ingress = [r["Properties"] for r in synthesis.resources(STAGING, "AWS::EC2::SecurityGroupIngress").values()]

    def sources(target: str) -> list[tuple[object, int]]:
        return [
            (rule["SourceSecurityGroupId"], rule["FromPort"])
            for rule in ingress
            if rule["GroupId"] == {"Fn::GetAtt": [target, "GroupId"]}
        ]

    lb = group(stack.service.load_balancer_security_group)
    assert sources(lb) == [({"Fn::GetAtt": [group(stack.api.vpc_link_security_group), "GroupId"]}, 80)]
    assert sources(group(stack.service.security_group)) == [({"Fn::GetAtt": [lb, "GroupId"]}, 8080)]
    assert not any("CidrIp" in rule for rule in ingress)


def test_service_scales_on_cpu_and_on_requests_per_target(synthesis: Synthesis) -> None:
    template = synthesis.template(STAGING)

    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget",
        {"MinCapacity": 1, "MaxCapacity": 2, "ScalableDimension": "ecs:service:DesiredCount"},
    )
    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": Match.object_like(
                {
                    "TargetValue": 60,
                    "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
                }
            ),
        },
    )
    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": Match.object_like(
                {
                    "TargetValue": 120,
                    "PredefinedMetricSpecification": Match.object_like(
                        {"PredefinedMetricType": "ALBRequestCountPerTarget"}
                    ),
                }
            ),
        },
    )
    synthesis.template(PRODUCTION).has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget", {"MinCapacity": 2, "MaxCapacity": 6}
    )
