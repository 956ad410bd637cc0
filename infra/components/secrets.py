"""One Secrets Manager secret per secret setting of the app, created for the operator to fill."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.nag import acknowledge

# Environment variable -> what the operator puts there. Each starts as a random string (CloudFormation
# cannot create an empty secret); the ones marked generated are meant to stay random.
SECRETS: dict[str, str] = {
    "OPENAI_API_KEY": "OpenAI API key (sk-...)",
    "SUPABASE_JWT_SECRET": "Supabase legacy JWT secret (HS256); leave the random value when only JWKS is used",
    "DATABASE_URL": "postgresql+asyncpg://USER:PASSWORD@HOST:5432/postgres (Supabase Postgres, TLS)",
    "POSTHOG_API_KEY": "PostHog project API key (phc_...)",
    "POSTHOG_ID_SALT": "generated: key of the HMAC that hashes user ids for PostHog",
    "EDGE_LOG_TOKEN": "generated: bearer token Supabase Edge Functions send to POST /v1/logs/edge",
}


def secret_name(environment: str, variable: str) -> str:
    """`product-analyzer/<env>/<VARIABLE>`."""
    return f"product-analyzer/{environment}/{variable}"


class AppSecrets(Construct):
    """`secrets[VARIABLE]` for every name in `SECRETS`, encrypted with `key`."""

    def __init__(self, scope: Construct, construct_id: str, *, environment: str, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.secrets: dict[str, secretsmanager.Secret] = {}
        for variable, meaning in SECRETS.items():
            secret = secretsmanager.Secret(
                self,
                variable,
                secret_name=secret_name(environment, variable),
                description=f"{variable} of product-analyzer ({environment}): {meaning}",
                encryption_key=key,
                generate_secret_string=secretsmanager.SecretStringGenerator(
                    password_length=48, exclude_punctuation=True
                ),
                removal_policy=RemovalPolicy.DESTROY,
            )
            self.secrets[variable] = secret
        acknowledge(
            self,
            "AwsSolutions-SMG4",
            "No rotation Lambda can rotate these: they are keys issued by third parties (OpenAI, Supabase, "
            "PostHog) or shared with them (the Edge Function token); the operator rotates them with "
            "put-secret-value and a service redeploy.",
        )
