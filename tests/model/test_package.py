"""`python -m model.package`: the archive's layout, its reproducibility, that it really serves, and the upload."""

from __future__ import annotations

import base64
import filecmp
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import boto3
import pytest
from moto import mock_aws

from model import package
from tests.imagegen import product_jpeg

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION: Final = "ca-central-1"
BUCKET = "product-analyzer-models-test"
CODE_DIR = Path(package.__file__).parent / "code"
ERROR_PREFIX = "python -m model.package: error: "


def fake_model_dir(root: Path, *, weights: bytes = b"weights") -> Path:
    """A folder that passes the checks without being a real model: enough for layout and upload tests."""
    root.mkdir(parents=True)
    (root / "config.json").write_text('{"model_type": "blip-2"}')
    (root / "model.safetensors").write_bytes(weights)
    return root


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any] | None, str]:
    """Run the CLI; return its status, its stdout parsed as JSON (None when empty), and stderr."""
    status = package.main(argv)
    out, err = capsys.readouterr()
    return status, (json.loads(out) if out.strip() else None), err


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def members(archive: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(archive, "r:gz") as tar:
        return tar.getmembers()


# -- layout ------------------------------------------------------------------------------------


def test_layout_is_model_files_at_the_root_and_our_code_under_code(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "blip2-endpoint.tar.gz"
    status, printed, _ = run(["--model-dir", str(tiny_model_dir), "--out", str(out)], capsys)

    assert status == 0
    assert printed == {"path": str(out), "bytes": out.stat().st_size, "sha256": sha256_of(out)}
    infos = members(out)
    model_files = sorted(p.name for p in tiny_model_dir.iterdir())
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= set(model_files)
    assert [i.name for i in infos] == ["code", "code/inference.py", "code/requirements.txt", *model_files]
    assert infos[0].isdir()
    for info in infos:
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (0, 0, 0, "", "")
        assert info.mode == (0o755 if info.isdir() else 0o644)
        assert info.isdir() or info.isreg()
    with tarfile.open(out, "r:gz") as tar:
        packed = tar.extractfile("code/inference.py")
        assert packed is not None
        assert packed.read() == (CODE_DIR / "inference.py").read_bytes()
    header = out.read_bytes()[:10]
    assert header[3] == 0  # FLG: no embedded file name, no comment
    assert header[4:8] == b"\0\0\0\0"  # MTIME 0


def test_hidden_files_bytecode_and_a_foreign_code_folder_are_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = fake_model_dir(tmp_path / "model")
    (model_dir / ".cache" / "huggingface").mkdir(parents=True)
    (model_dir / ".cache" / "huggingface" / "download.lock").write_text("x")
    (model_dir / ".gitattributes").write_text("*.safetensors filter=lfs")
    (model_dir / "code").mkdir()
    (model_dir / "code" / "inference.py").write_text("raise SystemExit('not ours')")
    (model_dir / "extra").mkdir()
    (model_dir / "extra" / "notes.txt").write_text("kept")
    (model_dir / "weights.bin").symlink_to(model_dir / "model.safetensors")  # as in a hub cache snapshot
    code_dir = tmp_path / "code"
    shutil.copytree(CODE_DIR, code_dir, ignore=shutil.ignore_patterns("__pycache__"))
    (code_dir / "__pycache__").mkdir()
    (code_dir / "__pycache__" / "inference.cpython-311.pyc").write_bytes(b"\0")
    (code_dir / "stale.pyc").write_bytes(b"\0")
    (code_dir / ".DS_Store").write_bytes(b"\0")
    out = tmp_path / "out" / "m.tar.gz"

    status, _, _ = run(["--model-dir", str(model_dir), "--out", str(out), "--code-dir", str(code_dir)], capsys)

    assert status == 0
    assert [i.name for i in members(out)] == [
        "code",
        "code/inference.py",
        "code/requirements.txt",
        "config.json",
        "extra",
        "extra/notes.txt",
        "model.safetensors",
        "weights.bin",
    ]
    with tarfile.open(out, "r:gz") as tar:
        ours, link = tar.extractfile("code/inference.py"), tar.extractfile("weights.bin")
        assert ours is not None
        assert link is not None
        assert ours.read() == (CODE_DIR / "inference.py").read_bytes()
        assert link.read() == b"weights"


# -- reproducibility ---------------------------------------------------------------------------


@pytest.fixture
def umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def scrambled_copy(source: Path, target: Path) -> Path:
    """Copy `source` with its files created in reverse order, other mtimes, modes and (as root) owners."""
    target.mkdir()
    for index, path in enumerate(sorted(source.iterdir(), reverse=True)):
        copy = target / path.name
        shutil.copyfile(path, copy)
        os.chmod(copy, 0o600 if index % 2 else 0o755)
        os.utime(copy, (1_000_000 + index * 7_777, 1_000_000 + index * 7_777))
        if os.geteuid() == 0:
            os.chown(copy, 1234, 5678)
    return target


@pytest.mark.usefixtures("umask")
def test_same_bytes_give_the_same_archive_whatever_the_metadata(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first = package.build(shutil.copytree(tiny_model_dir, tmp_path / "a"), tmp_path / "a.tar.gz")
    os.umask(0o077)  # the fixture puts the process's own back
    copy = scrambled_copy(tiny_model_dir, tmp_path / "b")
    second = package.build(copy, tmp_path / "elsewhere" / "b.tar.gz")

    assert first.sha256 == second.sha256 == sha256_of(first.path) == sha256_of(second.path)
    assert first.size == second.size == first.path.stat().st_size

    weights = bytearray((copy / "model.safetensors").read_bytes())
    weights[-1] ^= 0x01
    (copy / "model.safetensors").write_bytes(weights)
    changed = package.build(copy, tmp_path / "c.tar.gz")
    assert changed.sha256 != first.sha256
    assert changed.sha256 == sha256_of(changed.path)


def test_source_date_epoch_sets_every_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    built = package.build(fake_model_dir(tmp_path / "m"), tmp_path / "m.tar.gz")
    assert {i.mtime for i in members(built.path)} == {1_700_000_000}
    assert built.path.read_bytes()[4:8] == b"\0\0\0\0"  # the gzip header stays at 0


def test_a_failed_build_leaves_the_previous_archive_and_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = fake_model_dir(tmp_path / "m")
    out = tmp_path / "out" / "m.tar.gz"
    out.parent.mkdir()
    out.write_bytes(b"previous archive")
    real = package._tarinfo

    def failing(name: str, **kwargs: int) -> tarfile.TarInfo:
        if name == "model.safetensors":
            raise OSError("disk full")
        return real(name, **kwargs)

    monkeypatch.setattr(package, "_tarinfo", failing)
    with pytest.raises(OSError, match="disk full"):
        package.build(model_dir, out)
    assert out.read_bytes() == b"previous archive"
    assert list(out.parent.iterdir()) == [out]


# -- the archive really serves -----------------------------------------------------------------


def test_the_extracted_archive_loads_and_answers_with_its_own_handler(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = package.build(tiny_model_dir, tmp_path / "blip2-endpoint.tar.gz")
    model_dir = tmp_path / "opt-ml-model"
    with tarfile.open(built.path, "r:gz") as tar:
        tar.extractall(model_dir, filter="data")  # refuses unsafe members; ours must pass
    for path in tiny_model_dir.iterdir():
        assert filecmp.cmp(path, model_dir / path.name, shallow=False)

    # As SageMaker's container does: import the handler from the archive's code/ folder.
    spec = importlib.util.spec_from_file_location("packaged_inference", model_dir / "code" / "inference.py")
    assert spec is not None
    assert spec.loader is not None
    handler = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, handler)  # dataclasses look their module up
    spec.loader.exec_module(handler)

    loaded = handler.model_fn(str(model_dir))
    questions = ["What brand is it?", "What color is it?"]
    body = json.dumps(
        {
            "image": base64.b64encode(product_jpeg((320, 240))).decode(),
            "questions": questions,
            "max_new_tokens": {"caption": 6, "answer": 3},
        }
    )
    payload, content_type = handler.output_fn(
        handler.predict_fn(handler.input_fn(body, "application/json"), loaded), "application/json"
    )

    response = json.loads(payload)
    assert content_type == "application/json"
    assert response["model"] == "opt-ml-model"
    assert response["caption"].strip()
    assert [a["question"] for a in response["answers"]] == questions


# -- refusals ----------------------------------------------------------------------------------


def _no_config(root: Path) -> Path:
    (root / "model.safetensors").write_bytes(b"w")
    return root


def _no_weights(root: Path) -> Path:
    (root / "config.json").write_text("{}")
    (root / "tokenizer.json").write_text("{}")
    (root / "sub").mkdir()
    (root / "sub" / "model.safetensors").write_bytes(b"w")  # not at the top: transformers would not find it
    return root


def _broken_link(root: Path) -> Path:
    (root / "config.json").write_text("{}")
    (root / "model.safetensors").symlink_to(root / "blobs" / "0123abcd")  # a hub snapshot missing its blob
    return root


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_no_config, "has no config.json"),
        (_no_weights, "has no weights (*.safetensors or *.bin)"),
        (_broken_link, "model.safetensors is a broken symlink"),
    ],
    ids=["no-config", "no-weights", "broken-link"],
)
def test_an_unusable_model_folder_is_refused(
    make: Callable[[Path], Path], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    make(model_dir)
    out_dir = tmp_path / "out"

    status, printed, err = run(["--model-dir", str(model_dir), "--out", str(out_dir / "m.tar.gz")], capsys)

    assert status == 2
    assert printed is None
    assert err.startswith(ERROR_PREFIX)
    assert message in err
    assert err.count("\n") == 1
    assert not out_dir.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--upload", "https://bucket/model.tar.gz"], "--upload must look like s3://bucket/"),
        (["--upload", "s3://bucket"], "--upload must look like s3://bucket/"),
        (["--upload", "s3://bucket/"], "--upload must look like s3://bucket/"),
        (["--upload", "s3:///model.tar.gz"], "--upload must look like s3://bucket/"),
        (["--upload", "s3://bucket/model.zip"], "--upload must look like s3://bucket/"),
        (["--kms-key-id", "alias/models"], "--kms-key-id needs --upload"),
        (["--model-dir", "/nonexistent/model"], "--model-dir /nonexistent/model is not a folder"),
        (["--code-dir", "/nonexistent/code"], "--code-dir /nonexistent/code is not a folder"),
        (["--code-dir", "."], "has no inference.py"),
    ],
    ids=[
        "https",
        "no-key",
        "empty-key",
        "no-bucket",
        "not-tar-gz",
        "kms-alone",
        "no-model-dir",
        "no-code-dir",
        "no-handler",
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = fake_model_dir(tmp_path / "model")
    out_dir = tmp_path / "out"

    status, printed, err = run(["--model-dir", str(model_dir), "--out", str(out_dir / "m.tar.gz"), *extra], capsys)

    assert status == 2
    assert printed is None
    assert err.startswith(ERROR_PREFIX)
    assert message in err
    assert not out_dir.exists()


def test_an_archive_inside_the_model_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = fake_model_dir(tmp_path / "model")

    status, _, err = run(["--model-dir", str(model_dir), "--out", str(model_dir / "m.tar.gz")], capsys)

    assert status == 2
    assert "--out must be outside --model-dir" in err
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.safetensors"]


def test_source_date_epoch_must_be_an_integer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    model_dir = fake_model_dir(tmp_path / "model")

    status, _, err = run(["--model-dir", str(model_dir), "--out", str(tmp_path / "m.tar.gz")], capsys)

    assert status == 2
    assert "SOURCE_DATE_EPOCH must be a non-negative integer" in err
    assert not (tmp_path / "m.tar.gz").exists()


# -- upload ------------------------------------------------------------------------------------


@pytest.fixture
def s3() -> Iterator[S3Client]:
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield client


def test_upload_is_sse_s3_by_default_and_carries_the_sha256(
    s3: S3Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "blip2-endpoint.tar.gz"
    uri = f"s3://{BUCKET}/models/blip2/blip2-endpoint.tar.gz"

    status, printed, _ = run(
        ["--model-dir", str(fake_model_dir(tmp_path / "m")), "--out", str(out), "--upload", uri], capsys
    )

    assert status == 0
    assert printed is not None
    assert printed["s3_uri"] == uri
    assert printed["sha256"] == sha256_of(out)
    head = s3.head_object(Bucket=BUCKET, Key="models/blip2/blip2-endpoint.tar.gz")
    assert head["ServerSideEncryption"] == "AES256"
    assert "SSEKMSKeyId" not in head
    assert head["Metadata"] == {"sha256": printed["sha256"]}
    body = s3.get_object(Bucket=BUCKET, Key="models/blip2/blip2-endpoint.tar.gz")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == printed["sha256"]


def test_upload_with_a_kms_key_is_sse_kms_with_that_key(
    s3: S3Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_id = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"]
    uri = f"s3://{BUCKET}/m.tar.gz"
    argv = ["--model-dir", str(fake_model_dir(tmp_path / "m")), "--out", str(tmp_path / "m.tar.gz")]

    status, printed, _ = run([*argv, "--upload", uri, "--kms-key-id", key_id], capsys)

    assert status == 0
    assert printed is not None
    head = s3.head_object(Bucket=BUCKET, Key="m.tar.gz")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith(key_id)  # AWS answers with the key's ARN
    assert head["Metadata"]["sha256"] == printed["sha256"]


def test_a_large_archive_goes_up_in_parts_keeping_encryption_and_sha256(
    s3: S3Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(package, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)  # S3's smallest part
    monkeypatch.setattr(package, "MULTIPART_CHUNKSIZE", 5 * 1024 * 1024)
    model_dir = fake_model_dir(tmp_path / "m", weights=os.urandom(11 * 1024 * 1024))  # random: gzip cannot shrink it
    built = package.build(model_dir, tmp_path / "m.tar.gz", compresslevel=1)

    package.upload(package.build_s3_client(REGION), built, BUCKET, "big.tar.gz")

    head = s3.head_object(Bucket=BUCKET, Key="big.tar.gz")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload of three parts
    assert head["ContentLength"] == built.size
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"]["sha256"] == built.sha256 == sha256_of(built.path)


def test_a_failed_upload_exits_1_and_keeps_the_archive(
    s3: S3Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.tar.gz"
    argv = ["--model-dir", str(fake_model_dir(tmp_path / "m")), "--out", str(out)]

    status, printed, err = run([*argv, "--upload", "s3://no-such-bucket-here/m.tar.gz"], capsys)

    assert status == 1
    assert printed is not None
    assert printed["sha256"] == sha256_of(out)
    assert "s3_uri" not in printed
    assert err.startswith(f"{ERROR_PREFIX}upload to s3://no-such-bucket-here/m.tar.gz failed")


@pytest.mark.parametrize(
    ("env", "region"),
    [({"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "us-east-1"}, "eu-west-1"), ({}, "ca-central-1")],
    ids=["aws-region-first", "default"],
)
def test_the_client_has_the_region_timeouts_and_retries(
    env: dict[str, str], region: str, s3: S3Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    clients: list[Any] = []
    build_s3_client = package.build_s3_client

    def recording(region: str) -> S3Client:
        client = build_s3_client(region)
        clients.append(client)
        return client

    monkeypatch.setattr(package, "build_s3_client", recording)
    argv = ["--model-dir", str(fake_model_dir(tmp_path / "m")), "--out", str(tmp_path / "m.tar.gz")]

    assert package.main([*argv, "--upload", f"s3://{BUCKET}/m.tar.gz"]) == 0

    [client] = clients
    assert client.meta.region_name == region
    assert client.meta.config.connect_timeout == package.S3_CONNECT_TIMEOUT_S
    assert client.meta.config.read_timeout == package.S3_READ_TIMEOUT_S
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": package.S3_MAX_ATTEMPTS}
