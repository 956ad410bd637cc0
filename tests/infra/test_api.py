"""The HTTP API: routes through a VPC link to the ALB, the throttled stage, access logs, the custom domain."""

from __future__ import annotations

import json

from aws_cdk.assertions import Match

from tests.infra.synth import DOMAIN, PRODUCTION, PRODUCTION_US, STAGING, ZONE_ID, Synthesis


def test_routes_post_analyze_and_the_rest_of_the_api_to_the_load_balancer(synthesis: Synthesis) -> None:
    stack = synthesis.service(STAGING)
    routes = synthesis.resources(STAGING, "AWS::ApiGatewayV2::Route").values()
    (integration_id, integration), *others = synthesis.resources(STAGING, "AWS::ApiGatewayV2::Integration").items()

    assert not others
    assert sorted(r["Properties"]["RouteKey"] for r in routes) == ["ANY /{proxy+}", "POST /analyze"]
    for route in routes:
        assert route["Properties"]["Target"] == {"Fn::Join": ["", ["integrations/", {"Ref": integration_id}]]}
        assert route["Properties"]["AuthorizationType"] == "NONE"  # the app verifies Supabase tokens itself
    assert integration["Properties"] == {
        "ApiId": {"Ref": synthesis.logical_id(stack.api.api)},
        "ConnectionId": {"Ref": synthesis.logical_id(stack.api.vpc_link)},
        "ConnectionType": "VPC_LINK",
        "IntegrationMethod": "ANY",
        "IntegrationType": "HTTP_PROXY",
        "IntegrationUri": {"Ref": synthesis.logical_id(stack.service.listener)},
        "PayloadFormatVersion": "1.0",
    }


def test_vpc_link_sits_in_the_private_subnets_behind_its_own_security_group(synthesis: Synthesis) -> None:
    stack = synthesis.service(STAGING)
    synthesis.template(STAGING).has_resource_properties(
        "AWS::ApiGatewayV2::VpcLink",
        {
            "SecurityGroupIds": [{"Fn::GetAtt": [synthesis.logical_id(stack.api.vpc_link_security_group), "GroupId"]}],
            "SubnetIds": [
                {"Ref": synthesis.logical_id(subnet.node.find_child("Subnet"))}
                for subnet in stack.network.vpc.private_subnets
            ],
        },
    )


def test_default_stage_is_throttled_and_logs_json(synthesis: Synthesis) -> None:
    (stage,) = synthesis.resources(STAGING, "AWS::ApiGatewayV2::Stage").values()
    properties = stage["Properties"]

    assert properties["StageName"] == "$default"
    assert properties["AutoDeploy"] is True
    assert properties["DefaultRouteSettings"] == {"ThrottlingRateLimit": 20, "ThrottlingBurstLimit": 40}
    assert properties["AccessLogSettings"]["DestinationArn"] == {
        "Fn::GetAtt": [synthesis.logical_id(synthesis.service(STAGING).access_log_group), "Arn"]
    }
    log_format = json.loads(properties["AccessLogSettings"]["Format"])
    assert log_format["requestId"] == "$context.requestId"
    assert log_format["status"] == "$context.status"
    assert log_format["routeKey"] == "$context.routeKey"
    assert log_format["integrationLatency"] == "$context.integrationLatency"
    synthesis.template(PRODUCTION).has_resource_properties(
        "AWS::ApiGatewayV2::Stage", {"DefaultRouteSettings": {"ThrottlingRateLimit": 50, "ThrottlingBurstLimit": 100}}
    )
    synthesis.template(STAGING).has_resource_properties(
        "AWS::Logs::LogGroup", {"LogGroupName": "/product-analyzer/staging/api-access", "RetentionInDays": 30}
    )


def test_no_domain_resources_without_a_configured_domain(synthesis: Synthesis) -> None:
    template = synthesis.template(STAGING)

    for resource_type in (
        "AWS::CertificateManager::Certificate",
        "AWS::ApiGatewayV2::DomainName",
        "AWS::ApiGatewayV2::ApiMapping",
        "AWS::Route53::RecordSet",
    ):
        template.resource_count_is(resource_type, 0)
    template.has_resource_properties("AWS::ApiGatewayV2::Api", {"DisableExecuteApiEndpoint": False})


def test_a_configured_domain_gets_a_certificate_a_mapping_and_a_latency_record_per_region(synthesis: Synthesis) -> None:
    for name, region in [(PRODUCTION, "ca-central-1"), (PRODUCTION_US, "us-east-1")]:
        stack = synthesis.service(name)
        assert stack.api.domain_name is not None
        domain = synthesis.logical_id(stack.api.domain_name)
        template = synthesis.template(name)

        template.has_resource_properties(
            "AWS::CertificateManager::Certificate",
            {
                "DomainName": DOMAIN,
                "ValidationMethod": "DNS",
                "DomainValidationOptions": [{"DomainName": DOMAIN, "HostedZoneId": ZONE_ID}],
            },
        )
        template.has_resource_properties(
            "AWS::ApiGatewayV2::DomainName",
            {
                "DomainName": DOMAIN,
                "DomainNameConfigurations": [
                    Match.object_like({"EndpointType": "REGIONAL", "SecurityPolicy": "TLS_1_2"})
                ],
            },
        )
        template.has_resource_properties(
            "AWS::ApiGatewayV2::ApiMapping",
            {
                "ApiId": {"Ref": synthesis.logical_id(stack.api.api)},
                "DomainName": {"Ref": domain},
                "Stage": "$default",
            },
        )
        template.has_resource_properties(
            "AWS::Route53::RecordSet",
            {
                "Name": f"{DOMAIN}.",
                "Type": "A",
                "HostedZoneId": ZONE_ID,
                "Region": region,
                "SetIdentifier": f"product-analyzer-production-{region}",
                "AliasTarget": {
                    "DNSName": {"Fn::GetAtt": [domain, "RegionalDomainName"]},
                    "HostedZoneId": {"Fn::GetAtt": [domain, "RegionalHostedZoneId"]},
                },
            },
        )
        # Clients use the domain; the execute-api URL is off.
        template.has_resource_properties("AWS::ApiGatewayV2::Api", {"DisableExecuteApiEndpoint": True})
