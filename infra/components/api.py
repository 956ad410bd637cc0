"""The public front door: an API Gateway HTTP API whose VPC link reaches the internal ALB, and its domain."""

from __future__ import annotations

import json

import jsii
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as route53_targets
from constructs import Construct

from infra.config import DomainConfig
from infra.nag import acknowledge

# One JSON object per request (CloudWatch Logs Insights reads the fields without parsing).
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "requestTime": "$context.requestTime",
    "ip": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "httpMethod": "$context.httpMethod",
    "routeKey": "$context.routeKey",
    "path": "$context.path",
    "protocol": "$context.protocol",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationStatus": "$context.integrationStatus",
    "integrationLatency": "$context.integrationLatency",
    "integrationError": "$context.integrationErrorMessage",
    "error": "$context.error.message",
}
# Everything else the app serves (/healthz, /readyz, /docs, /v1/logs/edge, history) goes to the same ALB.
ROUTES = (("/analyze", apigwv2.HttpMethod.POST), ("/{proxy+}", apigwv2.HttpMethod.ANY))


@jsii.implements(apigwv2.IAccessLogSettings)
class _AccessLogSettings:
    """`IAccessLogSettings` is a jsii interface, not a struct: Python passes an object that implements it."""

    def __init__(self, destination: apigwv2.IAccessLogDestination, log_format: apigw.AccessLogFormat) -> None:
        self._destination = destination
        self._format = log_format

    @property
    def destination(self) -> apigwv2.IAccessLogDestination:
        return self._destination

    @property
    def format(self) -> apigw.AccessLogFormat:
        return self._format


class HttpApiFront(Construct):
    """`api` with routes `POST /analyze` and `ANY /{proxy+}` to `listener`, a throttled `$default` stage
    logging JSON to `access_log_group`, and, given `domain`, a certificate, a custom domain and a
    latency-routed alias record for `region` (each region of the stack set adds its own)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        vpc: ec2.IVpc,
        listener: elbv2.IApplicationListener,
        access_log_group: logs.ILogGroup,
        throttle_rate_limit: int,
        throttle_burst_limit: int,
        domain: DomainConfig | None,
        region: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.vpc_link_security_group = ec2.SecurityGroup(
            self,
            "VpcLinkSecurityGroup",
            vpc=vpc,
            description=f"{name} API Gateway VPC link: out to the internal load balancer only",
            allow_all_outbound=False,
        )
        self.vpc_link = apigwv2.VpcLink(
            self,
            "VpcLink",
            vpc=vpc,
            subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_groups=[self.vpc_link_security_group],
        )
        self.api = apigwv2.HttpApi(
            self,
            "HttpApi",
            api_name=name,
            description=f"{name}: POST /analyze and the rest of the API, to the service through a VPC link",
            create_default_stage=False,
            # With a custom domain, every client goes through it (one TLS policy, one URL).
            disable_execute_api_endpoint=domain is not None,
        )
        integration = integrations.HttpAlbIntegration("Alb", listener, vpc_link=self.vpc_link)
        self.routes = [
            route
            for path, method in ROUTES
            for route in self.api.add_routes(path=path, methods=[method], integration=integration)
        ]

        self.stage = apigwv2.HttpStage(
            self,
            "DefaultStage",
            http_api=self.api,
            stage_name="$default",
            auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(rate_limit=throttle_rate_limit, burst_limit=throttle_burst_limit),
            access_log_settings=_AccessLogSettings(
                apigwv2.LogGroupLogDestination(access_log_group),
                apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FORMAT, separators=(",", ":"))),
            ),
        )
        self.url: str = self.stage.url
        self.domain_name: apigwv2.DomainName | None = None
        self.certificate: acm.Certificate | None = None
        if domain is not None:
            zone = route53.HostedZone.from_hosted_zone_attributes(
                self, "Zone", hosted_zone_id=domain.hosted_zone_id, zone_name=domain.hosted_zone_name
            )
            self.certificate = acm.Certificate(
                self,
                "Certificate",
                domain_name=domain.domain_name,
                validation=acm.CertificateValidation.from_dns(zone),
            )
            self.domain_name = apigwv2.DomainName(
                self,
                "DomainName",
                domain_name=domain.domain_name,
                certificate=self.certificate,
                security_policy=apigwv2.SecurityPolicy.TLS_1_2,
            )
            apigwv2.ApiMapping(self, "ApiMapping", api=self.api, domain_name=self.domain_name, stage=self.stage)
            route53.ARecord(
                self,
                "AliasRecord",
                zone=zone,
                record_name=domain.domain_name,
                target=route53.RecordTarget.from_alias(
                    route53_targets.ApiGatewayv2DomainProperties(
                        self.domain_name.regional_domain_name, self.domain_name.regional_hosted_zone_id
                    )
                ),
                # Latency routing from the first region on, so adding a region adds a record.
                region=region,
                set_identifier=f"{name}-{region}",
            )
            self.url = f"https://{domain.domain_name}/"

        acknowledge(
            self.api,
            "AwsSolutions-APIG4",
            "The app authorizes every request itself: Supabase access tokens verified against the project's "
            "JWKS (ES256, which API Gateway JWT authorizers cannot verify) or its legacy HS256 secret; "
            "/v1/logs/edge takes a bearer token; /healthz, /readyz and /docs are public on purpose.",
        )
