"""Build `blip2-endpoint.tar.gz` for SageMaker's PyTorch inference container; optionally upload it.

    python -m model.package --model-dir DIR --out blip2-endpoint.tar.gz
        [--upload s3://bucket/key.tar.gz] [--kms-key-id KEY] [--code-dir model/code] [--compresslevel 6]

Layout: the container extracts the archive into /opt/ml/model, loads the model from there and
imports the handler from its `code/` folder (after installing `code/requirements.txt`):

    code/                     explicit directory entry
    code/inference.py         from --code-dir (model/code): the one inference code path
    code/requirements.txt
    config.json               every file of --model-dir, at the root: weights (*.safetensors or
    generation_config.json    *.bin, shards and their index), configs, processor and tokenizer
    model.safetensors         files. Hidden files and folders (.cache, .git*) are skipped, and
    processor_config.json     so is any `code/` already in the model folder: ours wins.
    tokenizer.json ...

Reproducible: the same input bytes give the same archive bytes (with the same zlib), whatever
the files' mtimes, owners, permissions or the umask. Members are sorted by name (a folder
before its contents) and carry fixed metadata: mtime 0 (or SOURCE_DATE_EPOCH), owner 0:0 with
empty user and group names (numeric owner, as reproducible-builds.org recommends for tar),
mode 0644 for files and 0755 for folders, PAX format. The gzip header has mtime 0 and no file
name. Files are streamed, never read whole; symlinked files (a Hugging Face cache snapshot)
are stored as the files they point to. The archive is written beside --out and renamed into
place, so --out is either the old file or the complete new one.

On success one JSON line goes to stdout: {"path", "bytes", "sha256"} and, after an upload, "s3_uri".
The upload is always encrypted at rest (SSE-KMS with --kms-key-id, else SSE-S3) and carries the
archive's sha256 as object metadata (`x-amz-meta-sha256`).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PROG = "python -m model.package"
DEFAULT_CODE_DIR = Path(__file__).resolve().parent / "code"
DEFAULT_REGION = "ca-central-1"
FILE_MODE = 0o644
DIR_MODE = 0o755
WEIGHT_SUFFIXES = (".safetensors", ".bin")

# Upload: a multi-GB archive goes up in 64 MiB parts (S3 allows 10,000 parts: 640 GB), 8 at a time.
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNKSIZE = 64 * 1024 * 1024
MAX_CONCURRENCY = 8
S3_CONNECT_TIMEOUT_S = 10.0
S3_READ_TIMEOUT_S = 120.0  # one 64 MiB part on a slow uplink
S3_MAX_ATTEMPTS = 5


class PackageError(Exception):
    """A refusal the operator can fix: bad arguments or an unusable folder. Exit status 2."""


class Member(NamedTuple):
    """One archive member: its name in the archive and its source file (None for a folder)."""

    name: str
    source: Path | None


class Built(NamedTuple):
    """The archive written: where, how big, and its sha256 (hex)."""

    path: Path
    size: int
    sha256: str


class _HashingWriter:
    """Pass bytes through to a file while hashing them, so the archive is never read back."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split `s3://bucket/key.tar.gz` into bucket and key; raise `PackageError` on anything else."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket or not key or not key.endswith(".tar.gz"):
        raise PackageError(f"--upload must look like s3://bucket/path/model.tar.gz, got {uri!r}")
    return bucket, key


def source_date_epoch() -> int:
    """Return the mtime for every member: SOURCE_DATE_EPOCH when set, else 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return 0
    if not value.isdigit():
        raise PackageError(f"SOURCE_DATE_EPOCH must be a non-negative integer, got {value!r}")
    return int(value)


def _walk(root: Path, prefix: str) -> Iterator[Member]:
    """Yield the folders and regular files under `root`, leaving out hidden names and bytecode."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]
        relative = Path(dirpath).relative_to(root).as_posix()
        base = prefix if relative == "." else f"{prefix}{relative}/"
        for name in dirnames:
            yield Member(f"{base}{name}/", None)
        for name in filenames:
            path = Path(dirpath, name)
            if name.startswith(".") or name.endswith(".pyc"):
                continue
            if not path.exists():
                raise PackageError(f"{path} is a broken symlink")  # a hub snapshot missing a blob
            if path.is_file():  # follows symlinks; sockets and fifos are left out
                yield Member(f"{base}{name}", path)


def collect(model_dir: Path, code_dir: Path) -> list[Member]:
    """List the archive's members in order; raise `PackageError` if either folder is unusable."""
    if not (model_dir / "config.json").is_file():
        raise PackageError(f"{model_dir} has no config.json: not a saved model folder")
    if not (code_dir / "inference.py").is_file():
        raise PackageError(f"{code_dir} has no inference.py: --code-dir must be the model's code folder")
    model = [m for m in _walk(model_dir, "") if m.name.split("/")[0] != "code"]  # ours wins
    if not any("/" not in m.name and m.name.endswith(WEIGHT_SUFFIXES) for m in model):
        raise PackageError(f"{model_dir} has no weights (*.safetensors or *.bin) at its top level")
    code = [m for m in _walk(code_dir, "code/") if m.name != "code/__init__.py"]  # not a package there
    # Plain string order puts every folder ("code/") before its contents ("code/inference.py").
    return sorted([*model, Member("code/", None), *code], key=lambda member: member.name)


def _tarinfo(name: str, *, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name.rstrip("/"))
    info.type = tarfile.DIRTYPE if name.endswith("/") else tarfile.REGTYPE
    info.mode = DIR_MODE if info.isdir() else FILE_MODE
    info.size = size
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build(model_dir: Path, out: Path, *, code_dir: Path = DEFAULT_CODE_DIR, compresslevel: int = 6) -> Built:
    """Write the reproducible archive to `out` (atomically) and return its path, size and sha256."""
    members = collect(model_dir, code_dir)
    mtime = source_date_epoch()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        # os.open, not mkstemp: the finished file gets the umask's usual mode, not 0600.
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as raw:
            hashing = _HashingWriter(raw)
            with (
                gzip.GzipFile(fileobj=hashing, mode="wb", mtime=0, filename="", compresslevel=compresslevel) as gz,
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
            ):
                for member in members:
                    if member.source is None:
                        tar.addfile(_tarinfo(member.name, size=0, mtime=mtime))
                        continue
                    with member.source.open("rb") as file:  # addfile copies in blocks
                        size = os.fstat(file.fileno()).st_size
                        tar.addfile(_tarinfo(member.name, size=size, mtime=mtime), file)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return Built(path=out, size=out.stat().st_size, sha256=hashing.digest.hexdigest())


def build_s3_client(region: str) -> S3Client:
    """Build an S3 client with explicit timeouts and botocore's standard retries."""
    import boto3.session
    from botocore.config import Config

    config = Config(
        region_name=region,
        connect_timeout=S3_CONNECT_TIMEOUT_S,
        read_timeout=S3_READ_TIMEOUT_S,
        retries={"mode": "standard", "total_max_attempts": S3_MAX_ATTEMPTS},
    )
    return boto3.session.Session().client("s3", config=config)


def upload(client: S3Client, built: Built, bucket: str, key: str, *, kms_key_id: str | None = None) -> str:
    """Upload the archive (multipart when large), encrypted at rest, with its sha256; return its URI."""
    from boto3.s3.transfer import TransferConfig

    extra: dict[str, object] = {
        "ContentType": "application/gzip",
        # Metadata, not ChecksumAlgorithm="SHA256": S3's SHA-256 of a multipart object is a
        # checksum of the parts' checksums, which matches no local `sha256sum`.
        "Metadata": {"sha256": built.sha256},
        "ServerSideEncryption": "AES256",
    }
    if kms_key_id:
        extra["ServerSideEncryption"] = "aws:kms"
        extra["SSEKMSKeyId"] = kms_key_id
    transfer = TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD,
        multipart_chunksize=MULTIPART_CHUNKSIZE,
        max_concurrency=MAX_CONCURRENCY,
    )
    client.upload_file(str(built.path), bucket, key, ExtraArgs=extra, Config=transfer)
    return f"s3://{bucket}/{key}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="saved model folder (config, weights, processor)")
    parser.add_argument("--out", type=Path, required=True, help="archive to write, e.g. blip2-endpoint.tar.gz")
    parser.add_argument("--upload", metavar="S3_URI", help="also upload to s3://bucket/key.tar.gz")
    parser.add_argument("--kms-key-id", help="encrypt the upload with this KMS key (default: SSE-S3, AES256)")
    parser.add_argument("--code-dir", type=Path, default=DEFAULT_CODE_DIR, help="handler folder (default: model/code)")
    parser.add_argument(
        "--compresslevel", type=int, choices=range(1, 10), default=6, metavar="1-9", help="gzip level (1: fastest)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return 0, 1 when the upload fails, or 2 when the inputs are refused."""
    args = _parser().parse_args(argv)
    try:
        if args.kms_key_id and not args.upload:
            raise PackageError("--kms-key-id needs --upload")
        destination = parse_s3_uri(args.upload) if args.upload else None
        model_dir = args.model_dir.resolve()
        if not model_dir.is_dir():
            raise PackageError(f"--model-dir {args.model_dir} is not a folder")
        if args.out.resolve().is_relative_to(model_dir):
            raise PackageError("--out must be outside --model-dir, or the archive would pack itself")
        if not args.code_dir.is_dir():
            raise PackageError(f"--code-dir {args.code_dir} is not a folder")
        built = build(model_dir, args.out, code_dir=args.code_dir, compresslevel=args.compresslevel)
    except PackageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    result: dict[str, object] = {"path": str(built.path), "bytes": built.size, "sha256": built.sha256}
    if destination is not None:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
        try:
            result["s3_uri"] = upload(build_s3_client(region), built, *destination, kms_key_id=args.kms_key_id)
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            print(json.dumps(result))  # the archive is built; say where, then why the upload failed
            print(f"{PROG}: error: upload to {args.upload} failed: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
