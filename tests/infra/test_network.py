"""The VPC: two AZs, one NAT gateway, VPC endpoints open to the tasks only, flow logs."""

from __future__ import annotations

from aws_cdk.assertions import Match

from tests.infra.synth import STAGING, Synthesis

INTERFACE_SERVICES = {
    "com.amazonaws.ca-central-1.ecr.api",
    "com.amazonaws.ca-central-1.ecr.dkr",
    "com.amazonaws.ca-central-1.logs",
    "com.amazonaws.ca-central-1.secretsmanager",
    "com.amazonaws.ca-central-1.sagemaker.runtime",
    "com.amazonaws.ca-central-1.sagemaker.api",
}


def test_two_azs_public_and_private_subnets_and_one_nat_gateway(synthesis: Synthesis) -> None:
    template = synthesis.template(STAGING)

    template.resource_count_is("AWS::EC2::VPC", 1)
    template.resource_count_is("AWS::EC2::Subnet", 4)
    template.resource_count_is("AWS::EC2::NatGateway", 1)
    template.has_resource_properties("AWS::EC2::Subnet", {"MapPublicIpOnLaunch": True})
    template.has_resource_properties("AWS::EC2::Subnet", {"MapPublicIpOnLaunch": False})


def test_s3_is_a_gateway_endpoint_on_every_route_table(synthesis: Synthesis) -> None:
    endpoints = synthesis.resources(STAGING, "AWS::EC2::VPCEndpoint").values()
    gateways = [e["Properties"] for e in endpoints if e["Properties"]["VpcEndpointType"] == "Gateway"]

    assert len(gateways) == 1
    assert gateways[0]["ServiceName"] == {"Fn::Join": ["", ["com.amazonaws.", {"Ref": "AWS::Region"}, ".s3"]]}
    assert len(gateways[0]["RouteTableIds"]) == 4


def test_interface_endpoints_for_what_the_tasks_call_reachable_from_the_tasks_only(synthesis: Synthesis) -> None:
    stack = synthesis.service(STAGING)
    task_sg = synthesis.logical_id(stack.service.security_group)
    endpoints = [
        e["Properties"]
        for e in synthesis.resources(STAGING, "AWS::EC2::VPCEndpoint").values()
        if e["Properties"]["VpcEndpointType"] == "Interface"
    ]

    assert {e["ServiceName"] for e in endpoints} == INTERFACE_SERVICES
    assert all(e["PrivateDnsEnabled"] for e in endpoints)
    endpoint_groups = {e["SecurityGroupIds"][0]["Fn::GetAtt"][0] for e in endpoints}
    ingress = [
        rule["Properties"]
        for rule in synthesis.resources(STAGING, "AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["GroupId"]["Fn::GetAtt"][0] in endpoint_groups
    ]
    # One rule per endpoint, HTTPS from the tasks' security group; no CIDR anywhere.
    assert len(ingress) == len(INTERFACE_SERVICES)
    for rule in ingress:
        assert rule["SourceSecurityGroupId"] == {"Fn::GetAtt": [task_sg, "GroupId"]}
        assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 443, 443)


def test_flow_logs_go_to_an_encrypted_log_group_with_retention(synthesis: Synthesis) -> None:
    template = synthesis.template(STAGING)

    template.has_resource_properties(
        "AWS::EC2::FlowLog",
        {"ResourceType": "VPC", "TrafficType": "ALL", "LogDestinationType": "cloud-watch-logs"},
    )
    template.has_resource_properties(
        "AWS::Logs::LogGroup",
        {
            "LogGroupName": "/product-analyzer/staging/vpc-flow-logs",
            "RetentionInDays": 30,
            "KmsKeyId": {"Fn::GetAtt": [Match.string_like_regexp("^DataKey"), "Arn"]},
        },
    )
