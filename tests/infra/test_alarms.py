"""The alarms: which metric each watches, against what threshold, and where they notify."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match

from tests.infra.synth import ALARM_EMAIL, PRODUCTION, STAGING, Synthesis

APP_DIMENSIONS = [{"Name": "Route", "Value": "/analyze"}, {"Name": "Service", "Value": "product-analyzer"}]


def _alarms(synthesis: Synthesis, stack: str) -> dict[str, dict[str, Any]]:
    alarms = synthesis.resources(stack, "AWS::CloudWatch::Alarm").values()
    return {alarm["Properties"]["AlarmName"]: alarm["Properties"] for alarm in alarms}


def test_five_alarms_each_notifying_the_alarm_topic(synthesis: Synthesis) -> None:
    topic = {"Ref": synthesis.logical_id(synthesis.service(STAGING).alarms.topic)}
    alarms = _alarms(synthesis, STAGING)

    assert set(alarms) == {
        "product-analyzer-staging-5xx-rate",
        "product-analyzer-staging-api-5xx-rate",
        "product-analyzer-staging-latency-p95",
        "product-analyzer-staging-model-latency-p95",
        "product-analyzer-staging-async-backlog",
    }
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == [topic]
        assert alarm["OKActions"] == [topic]
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"


def test_app_5xx_rate_is_faults_over_requests_of_post_analyze(synthesis: Synthesis) -> None:
    alarm = _alarms(synthesis, STAGING)["product-analyzer-staging-5xx-rate"]

    assert alarm["Threshold"] == 5
    assert alarm["EvaluationPeriods"] == 2
    expression, *metrics = alarm["Metrics"]
    assert expression == {
        "Id": "expr_1",
        "Expression": "IF(requests >= 10, 100 * faults / requests, 0)",
        "Label": "POST /analyze 5xx rate (%)",
        "ReturnData": True,
    }
    assert {m["Id"]: m["MetricStat"] for m in metrics} == {
        name: {
            "Metric": {"Namespace": "ProductAnalyzer", "MetricName": metric, "Dimensions": APP_DIMENSIONS},
            "Period": 300,
            "Stat": "Sum",
        }
        for name, metric in [("faults", "Faults"), ("requests", "Requests")]
    }


def test_api_5xx_rate_is_api_gateways_own_count_for_the_stage(synthesis: Synthesis) -> None:
    api = {"Ref": synthesis.logical_id(synthesis.service(STAGING).api.api)}
    alarm = _alarms(synthesis, STAGING)["product-analyzer-staging-api-5xx-rate"]

    expression, *metrics = alarm["Metrics"]
    assert expression["Expression"] == "IF(requests >= 10, 100 * faults / requests, 0)"
    assert {m["Id"]: m["MetricStat"]["Metric"] for m in metrics} == {
        "faults": {
            "Namespace": "AWS/ApiGateway",
            "MetricName": "5xx",
            "Dimensions": [{"Name": "ApiId", "Value": api}, {"Name": "Stage", "Value": "$default"}],
        },
        "requests": {
            "Namespace": "AWS/ApiGateway",
            "MetricName": "Count",
            "Dimensions": [{"Name": "ApiId", "Value": api}, {"Name": "Stage", "Value": "$default"}],
        },
    }
    assert alarm["Threshold"] == 5


def test_p95_latency_over_the_slo(synthesis: Synthesis) -> None:
    alarm = _alarms(synthesis, STAGING)["product-analyzer-staging-latency-p95"]

    assert {k: alarm[k] for k in ("Namespace", "MetricName", "Dimensions", "ExtendedStatistic", "Period")} == {
        "Namespace": "ProductAnalyzer",
        "MetricName": "Latency",
        "Dimensions": APP_DIMENSIONS,
        "ExtendedStatistic": "p95",
        "Period": 300,
    }
    assert alarm["Threshold"] == 10_000  # LATENCY_SLO_MS
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (3, 3)


def test_model_latency_p95_in_microseconds(synthesis: Synthesis) -> None:
    alarm = _alarms(synthesis, STAGING)["product-analyzer-staging-model-latency-p95"]

    assert alarm["Namespace"] == "AWS/SageMaker"
    assert alarm["MetricName"] == "ModelLatency"
    assert alarm["Dimensions"] == [
        {"Name": "EndpointName", "Value": "blip2-endpoint-staging"},
        {"Name": "VariantName", "Value": "AllTraffic"},
    ]
    assert alarm["ExtendedStatistic"] == "p95"
    assert alarm["Threshold"] == 5_000_000  # 5 s


def test_async_backlog(synthesis: Synthesis) -> None:
    alarm = _alarms(synthesis, STAGING)["product-analyzer-staging-async-backlog"]

    assert alarm["Namespace"] == "AWS/SageMaker"
    assert alarm["MetricName"] == "ApproximateBacklogSize"
    assert alarm["Dimensions"] == [{"Name": "EndpointName", "Value": "blip2-endpoint-staging"}]
    assert alarm["Statistic"] == "Average"
    assert alarm["Threshold"] == 20
    assert alarm["EvaluationPeriods"] == 3


def test_alarm_topic_is_encrypted_tls_only_and_open_to_this_stacks_alarms(synthesis: Synthesis) -> None:
    stack = synthesis.service(STAGING)
    topic = synthesis.logical_id(stack.alarms.topic)
    template = synthesis.template(STAGING)

    template.has_resource_properties(
        "AWS::SNS::Topic",
        {
            "TopicName": "product-analyzer-staging-alarms",
            "KmsMasterKeyId": {"Fn::GetAtt": [synthesis.logical_id(stack.key), "Arn"]},
        },
    )
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [{"Ref": topic}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}),
                        Match.object_like(
                            {
                                "Sid": "AllowThisStacksAlarms",
                                "Effect": "Allow",
                                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                                "Action": "sns:Publish",
                            }
                        ),
                    ]
                )
            },
        },
    )
    # Encrypted topics need CloudWatch to be allowed the key.
    template.has_resource_properties(
        "AWS::KMS::Key",
        {
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Sid": "AllowCloudWatchAlarmsToPublish",
                                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                            }
                        )
                    ]
                )
            }
        },
    )


def test_email_subscription_only_when_an_address_is_configured(synthesis: Synthesis) -> None:
    synthesis.template(STAGING).resource_count_is("AWS::SNS::Subscription", 0)
    synthesis.template(PRODUCTION).has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": ALARM_EMAIL}
    )
