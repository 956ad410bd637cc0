"""The VPC: two AZs, private subnets for the tasks, VPC endpoints for the AWS APIs they call, flow logs."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

# What the tasks (and the ECS agent on their behalf) call, so that none of it crosses the NAT gateway:
# image pulls (ECR API and registry; layers come from S3), the awslogs driver and the Edge log
# forwarder, the secrets injected at start, InvokeEndpoint(Async) and /readyz's DescribeEndpoint.
INTERFACE_ENDPOINTS: dict[str, ec2.InterfaceVpcEndpointAwsService] = {
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "SageMakerRuntime": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_RUNTIME,
    "SageMakerApi": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_API,
}


class Network(Construct):
    """`vpc` with public subnets (the NAT gateways) and private subnets with egress (tasks, ALB, endpoints)."""

    def __init__(
        self, scope: Construct, construct_id: str, *, nat_gateways: int, flow_log_group: logs.ILogGroup
    ) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.40.0.0/16"),
            max_azs=2,
            nat_gateways=nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20),
            ],
            gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)},
            flow_logs={
                "FlowLog": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
        )
        private = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.endpoints = {
            # Closed: the stack opens each to the tasks' security group only.
            name: self.vpc.add_interface_endpoint(
                name, service=service, subnets=private, private_dns_enabled=True, open=False
            )
            for name, service in INTERFACE_ENDPOINTS.items()
        }
