"""What the BLIP-2 endpoint (deployed by `python -m model.deploy`, not by CloudFormation) runs with:
its execution role and the SNS topics an asynchronous endpoint reports to."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

# Where AWS's Deep Learning Containers (pytorch-inference) live: one account in most commercial regions,
# its own in each opt-in region. From the SageMaker SDK's image_uri_config/pytorch.json (2.6.0 inference).
DLC_ACCOUNT = "763104351884"
DLC_ACCOUNTS = {
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-east-2": "975050140332",
    "ap-northeast-3": "364406365360",
    "ap-south-2": "772153158452",
    "ap-southeast-3": "907027046896",
    "ap-southeast-4": "457447274322",
    "ap-southeast-5": "550225433462",
    "ap-southeast-6": "633930458069",
    "ap-southeast-7": "590183813437",
    "ca-west-1": "204538143572",
    "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807",
    "eu-central-2": "380420809688",
    "eu-south-1": "692866216735",
    "eu-south-2": "503227376785",
    "il-central-1": "780543022126",
    "me-central-1": "914824155844",
    "me-south-1": "217643126080",
    "mx-central-1": "637423239942",
    "us-gov-east-1": "446045086412",
    "us-gov-west-1": "442386744353",
}
DLC_REPOSITORY = "pytorch-inference"


def dlc_account(region: str) -> str:
    """The account that serves AWS's Deep Learning Container images in `region`."""
    return DLC_ACCOUNTS.get(region, DLC_ACCOUNT)


class ModelInference(Construct):
    """`execution_role` (assumed by SageMaker, named so the deploy role may pass it), and the KMS-encrypted,
    TLS-only `success_topic` and `error_topic`; the stack grants the role what the endpoint reads and writes."""

    def __init__(self, scope: Construct, construct_id: str, *, name: str, key: kms.IKey, role_suffix: str) -> None:
        super().__init__(scope, construct_id)
        self.execution_role = iam.Role(
            self,
            "ExecutionRole",
            role_name=f"{name}-sagemaker-{role_suffix}",
            description=f"{name}: the BLIP-2 SageMaker endpoint's execution role",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
        )
        self.success_topic = sns.Topic(
            self,
            "AsyncSuccessTopic",
            topic_name=f"{name}-async-success",
            display_name=f"{name}: asynchronous inference results",
            master_key=key,
            enforce_ssl=True,
        )
        self.error_topic = sns.Topic(
            self,
            "AsyncErrorTopic",
            topic_name=f"{name}-async-error",
            display_name=f"{name}: asynchronous inference failures",
            master_key=key,
            enforce_ssl=True,
        )
