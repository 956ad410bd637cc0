"""docker/model.Dockerfile still matches the tree and the CLI it runs (Docker cannot run here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from model.serve import parse_args
from tests.dockerfile import copy_sources, instructions

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "docker" / "model.Dockerfile").read_text()


def test_every_copied_file_exists() -> None:
    sources = [src for copy in instructions(DOCKERFILE, "COPY") for src in copy_sources(copy)]
    assert sources
    missing = [src for src in sources if not (ROOT / src).is_file()]
    assert missing == []


def model_files_needed_by(path: str) -> set[str]:
    """Return `path` and every file of model/ it imports, directly or not."""
    needed, todo = set(), [path]
    while todo:
        current = todo.pop()
        if current in needed:
            continue
        needed.add(current)
        for package, name in re.findall(r"^from (model[\w.]*) import (\w+)", (ROOT / current).read_text(), re.M):
            folder = package.replace(".", "/")
            if (ROOT / folder / f"{name}.py").is_file():  # `from model.code import inference`
                needed.add(f"{folder}/__init__.py")
                todo.append(f"{folder}/{name}.py")
            else:
                todo.append(f"{folder}.py")
    return needed


def test_the_server_module_and_everything_it_imports_from_model_are_copied() -> None:
    copied = {src for copy in instructions(DOCKERFILE, "COPY") for src in copy_sources(copy)}
    needed = model_files_needed_by("model/serve.py")
    assert {"model/batching.py", "model/thread.py", "model/code/inference.py"} <= needed
    assert needed - copied == set()


def test_cmd_is_a_valid_model_serve_command_line() -> None:
    (cmd,) = instructions(DOCKERFILE, "CMD")
    argv = json.loads(cmd)
    assert argv[:3] == ["python", "-m", "model.serve"]
    args = parse_args(argv[3:])
    assert (args.host, args.port, args.model_dir) == ("0.0.0.0", 8080, "/opt/ml/model")
    assert instructions(DOCKERFILE, "EXPOSE") == ["8080"]


def test_torch_is_pinned_to_the_version_the_makefile_installs() -> None:
    makefile = (ROOT / "Makefile").read_text()
    pinned = set(re.findall(r"torch==([\d.]+)", DOCKERFILE))
    assert pinned
    assert pinned == set(re.findall(r"torch==([\d.]+)", makefile))
