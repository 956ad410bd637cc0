"""Fixtures of the model tests: the tiny BLIP-2 loaded once per module, and a vision-tower pass counter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from model.code import inference
from model.code.inference import LoadedModel
from tests.model.helpers import PassCounter


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path) -> LoadedModel:
    return inference.model_fn(str(tiny_model_dir))


@pytest.fixture
def vision_passes(loaded: LoadedModel) -> Iterator[PassCounter]:
    counter = PassCounter()
    handle = loaded.model.vision_model.register_forward_hook(counter)
    yield counter
    handle.remove()
