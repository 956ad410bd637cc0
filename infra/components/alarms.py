"""CloudWatch alarms on what users feel and what the model does, all to one SNS alarm topic.

| alarm                       | metric (namespace, dimensions)                                   | fires when          |
|-----------------------------|------------------------------------------------------------------|---------------------|
| `<name>-5xx-rate`           | app EMF `Faults` / `Requests` (ProductAnalyzer; Service, Route)  | > N % of /analyze   |
| `<name>-api-5xx-rate`       | `5xx` / `Count` (AWS/ApiGateway; ApiId, Stage)                   | > N % of all calls, |
|                             |                                                                  | even with no task   |
| `<name>-latency-p95`        | app EMF `Latency` p95 (ProductAnalyzer; Service, Route)          | > LATENCY_SLO_MS    |
| `<name>-model-latency-p95`  | `ModelLatency` p95 (AWS/SageMaker; EndpointName, VariantName)    | > the model budget  |
| `<name>-async-backlog`      | `ApproximateBacklogSize` (AWS/SageMaker; EndpointName)           | backlog keeps high  |

The fault rates read 0 below a minimum of requests per period (one failure is not a rate).
Missing data is "not breaching" everywhere: no traffic, or a real-time endpoint (no backlog metric),
is not an incident.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.config import METRICS_NAMESPACE, SERVICE

PERIOD = Duration.minutes(5)
ANALYZE_ROUTE = "/analyze"
# The SageMaker SDK's name for the one production variant `model.deploy` creates.
VARIANT_NAME = "AllTraffic"


def app_metric(metric_name: str, statistic: str, *, route: str = ANALYZE_ROUTE) -> cloudwatch.Metric:
    """A metric of the app's embedded-metric-format log line."""
    return cloudwatch.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=metric_name,
        dimensions_map={"Service": SERVICE, "Route": route},
        statistic=statistic,
        period=PERIOD,
    )


class Alarms(Construct):
    """`topic` (KMS-encrypted, TLS only, optionally an email subscription) and the alarms in the table above."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        key: kms.IKey,
        alarm_email: str | None,
        stage: apigwv2.HttpStage,
        latency_slo_ms: int,
        fault_rate_percent: float,
        fault_rate_min_requests: int,
        endpoint_name: str,
        model_latency_p95_ms: int,
        async_backlog_threshold: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(
            self,
            "AlarmTopic",
            topic_name=f"{name}-alarms",
            display_name=f"{name} alarms",
            master_key=key,
            enforce_ssl=True,
        )
        # The TLS-only topic policy replaces SNS's default one: CloudWatch needs its own allow, for these alarms only.
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowThisStacksAlarms",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{Aws.PARTITION}:cloudwatch:{Aws.REGION}:{Aws.ACCOUNT_ID}:alarm:{name}-*"
                    },
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                },
            )
        )
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))

        # Below the minimum of requests a period, one failure is not a rate: the expression reads 0.
        rate = f"IF(requests >= {fault_rate_min_requests}, 100 * faults / requests, 0)"
        self.fault_rate = self._alarm(
            "FaultRateAlarm",
            cloudwatch.MathExpression(
                expression=rate,
                using_metrics={"faults": app_metric("Faults", "Sum"), "requests": app_metric("Requests", "Sum")},
                label="POST /analyze 5xx rate (%)",
                period=PERIOD,
            ),
            alarm_name=f"{name}-5xx-rate",
            description=f"More than {fault_rate_percent}% of POST /analyze answered 5xx (the app's own count).",
            threshold=fault_rate_percent,
            evaluation_periods=2,
        )
        self.api_fault_rate = self._alarm(
            "ApiFaultRateAlarm",
            cloudwatch.MathExpression(
                expression=rate,
                using_metrics={
                    "faults": stage.metric_server_error(statistic="Sum", period=PERIOD),
                    "requests": stage.metric_count(statistic="Sum", period=PERIOD),
                },
                label="API 5xx rate (%)",
                period=PERIOD,
            ),
            alarm_name=f"{name}-api-5xx-rate",
            description=(
                f"More than {fault_rate_percent}% of requests answered 5xx at API Gateway, including "
                "those no task answered (VPC link, load balancer, no healthy target)."
            ),
            threshold=fault_rate_percent,
            evaluation_periods=2,
        )
        self.latency = self._alarm(
            "LatencyAlarm",
            app_metric("Latency", "p95"),
            alarm_name=f"{name}-latency-p95",
            description=f"POST /analyze p95 latency is over the SLO of {latency_slo_ms} ms (LATENCY_SLO_MS).",
            threshold=latency_slo_ms,
            evaluation_periods=3,
        )
        endpoint = {"EndpointName": endpoint_name}
        self.model_latency = self._alarm(
            "ModelLatencyAlarm",
            cloudwatch.Metric(
                namespace="AWS/SageMaker",
                metric_name="ModelLatency",
                dimensions_map={**endpoint, "VariantName": VARIANT_NAME},
                statistic="p95",
                period=PERIOD,
            ),
            alarm_name=f"{name}-model-latency-p95",
            description=f"{endpoint_name} p95 ModelLatency is over {model_latency_p95_ms} ms.",
            # ModelLatency is in microseconds.
            threshold=model_latency_p95_ms * 1000,
            evaluation_periods=3,
        )
        self.async_backlog = self._alarm(
            "AsyncBacklogAlarm",
            cloudwatch.Metric(
                namespace="AWS/SageMaker",
                metric_name="ApproximateBacklogSize",
                dimensions_map=endpoint,
                statistic="Average",
                period=PERIOD,
            ),
            alarm_name=f"{name}-async-backlog",
            description=(
                f"{endpoint_name} (asynchronous) has held more than {async_backlog_threshold} queued requests "
                "for 15 minutes: scaling is not keeping up, or instances fail to start."
            ),
            threshold=async_backlog_threshold,
            evaluation_periods=3,
        )

    def _alarm(
        self,
        construct_id: str,
        metric: cloudwatch.IMetric,
        *,
        alarm_name: str,
        description: str,
        threshold: float,
        evaluation_periods: int,
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            metric=metric,
            alarm_name=alarm_name,
            alarm_description=description,
            threshold=threshold,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=evaluation_periods,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        action = cloudwatch_actions.SnsAction(self.topic)
        alarm.add_alarm_action(action)
        alarm.add_ok_action(action)
        return alarm
