"""KMS-encrypted CloudWatch log groups with a retention, and the key policy that lets Logs use the key."""

from __future__ import annotations

from aws_cdk import Aws, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

# The values CloudWatch Logs accepts for RetentionInDays.
_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
}


def retention(days: int) -> logs.RetentionDays:
    """Return the retention of `days`; raise `ValueError` for a value CloudWatch Logs does not offer."""
    try:
        return _RETENTION[days]
    except KeyError:
        raise ValueError(f"log retention of {days} days: choose one of {sorted(_RETENTION)}") from None


def allow_logs_to_use_key(key: kms.Key, *, log_group_prefix: str) -> None:
    """Let CloudWatch Logs encrypt and decrypt with `key`, only for log groups under `log_group_prefix`."""
    key.add_to_resource_policy(
        iam.PolicyStatement(
            sid="AllowCloudWatchLogs",
            principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
            actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
            resources=["*"],
            conditions={
                "ArnLike": {
                    "kms:EncryptionContext:aws:logs:arn": (
                        f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:{log_group_prefix}*"
                    )
                }
            },
        )
    )


def encrypted_log_group(
    scope: Construct, construct_id: str, *, name: str, key: kms.IKey, retention_days: int, retain: bool
) -> logs.LogGroup:
    """A log group named `name`, encrypted with `key`, kept `retention_days`; `retain`: outlives the stack."""
    return logs.LogGroup(
        scope,
        construct_id,
        log_group_name=name,
        encryption_key=key,
        retention=retention(retention_days),
        removal_policy=RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY,
    )
