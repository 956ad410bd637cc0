"""Fixtures of the API tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.accounts import Supabase
from tests.supabase_fake import ec_signer, jwks_serving


@pytest.fixture(scope="module")
def supabase() -> Iterator[Supabase]:
    """A Supabase project with one signing key, its JWKS served on loopback for the module."""
    signer = ec_signer("project-key-1")
    with jwks_serving(signer) as server:
        yield Supabase(server, signer)
