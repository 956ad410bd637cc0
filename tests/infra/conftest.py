"""The CDK app, synthesized once per session; tests assert on its templates.

One app holds both environments: staging as configured by default (ca-central-1, no domain) and
production in two regions with a custom domain, an alarm email and a Supabase URL. cdk-nag runs as
a validation plugin during that synthesis, so the fixture itself fails on an unacknowledged finding.
"""

from __future__ import annotations

import os

# Before jsii starts Node: jsii's end-of-life banner for this machine's Node 20 (which synthesizes fine)
# would print on every run; `python app.py` and the CLI still show it.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from pathlib import Path

import aws_cdk as cdk
import pytest

from infra.build import build
from tests.infra.synth import PRODUCTION_CONTEXT, STAGING_CONTEXT, Synthesis, config_from

_HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def synthesis(tmp_path_factory: pytest.TempPathFactory) -> Synthesis:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = cdk.App(outdir=str(outdir))
    deployment = build(app, [config_from(STAGING_CONTEXT), config_from(PRODUCTION_CONTEXT)], account=None)
    app.synth()
    return Synthesis(app=app, deployment=deployment, outdir=outdir)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "infra: the CDK app, its synthesized templates and their checks")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark this folder's tests `infra` and `slow` (the session's one synthesis takes seconds)."""
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker("infra")
            item.add_marker("slow")
