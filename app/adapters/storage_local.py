"""`ImageStore` on a local folder: atomic writes in a worker thread, keys confined to the root."""

from __future__ import annotations

import contextlib
import os
import tempfile
from functools import partial
from pathlib import Path, PurePosixPath

import anyio.to_thread

from app.errors import NotReady, UpstreamUnavailable


class LocalImageStore:
    """Store images as files `{root}/{key}`; readers never see a half-written file."""

    def __init__(self, root: Path) -> None:
        self._root = root.absolute()

    @property
    def root(self) -> Path:
        return self._root

    def path_for(self, key: str) -> Path:
        """Return the file path for `key`; raise `ValueError` when the key could leave the root."""
        # Keys are built by `app.services.keys`; this is a guard against a bug, not input validation.
        if not key or "\\" in key or "\x00" in key:
            raise ValueError("storage key is empty or has a backslash or NUL")
        pure = PurePosixPath(key)
        if pure.is_absolute() or any(part in ("", ".", "..") for part in key.split("/")):
            raise ValueError("storage key must be relative, without '.' or '..' segments")
        return self._root.joinpath(*pure.parts)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write `data` to the key's file atomically, replacing any previous content."""
        path = self.path_for(key)
        try:
            await anyio.to_thread.run_sync(_write_atomically, path, data)
        except OSError as exc:
            raise UpstreamUnavailable("The image store could not write the image.") from exc

    async def delete(self, key: str) -> None:
        """Remove the key's file; a missing file is fine (a retried delete)."""
        path = self.path_for(key)
        try:
            await anyio.to_thread.run_sync(partial(path.unlink, missing_ok=True))
        except OSError as exc:
            raise UpstreamUnavailable("The image store could not delete the image.") from exc

    async def check(self) -> None:
        """Return when the root exists (or can be created) and accepts a file; raise `NotReady` otherwise."""
        try:
            await anyio.to_thread.run_sync(_probe_writable, self._root, abandon_on_cancel=True)
        except OSError as exc:
            raise NotReady("The image store is not writable.") from exc


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temp file sits in the target's folder so that os.replace is a rename within one filesystem.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            # Flush to disk before the rename, so a crash cannot leave an empty file under the final name.
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def _probe_writable(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    # Create a file rather than trust os.access, which says yes to root whatever the mode bits are.
    with tempfile.TemporaryFile(dir=root):
        pass
