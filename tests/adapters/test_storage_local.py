import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.adapters.storage_local import LocalImageStore
from app.errors import NotReady, UpstreamUnavailable
from app.services.keys import image_key

KEY = "uploads/user-1/2025/03/photo.jpg"


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_put_writes_the_bytes_creating_folders(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "uploads-root")

    await store.put(KEY, b"first", "image/jpeg")
    assert (tmp_path / "uploads-root" / KEY).read_bytes() == b"first"

    await store.put(KEY, b"second", "image/jpeg")
    assert (tmp_path / "uploads-root" / KEY).read_bytes() == b"second"
    assert files_under(tmp_path / "uploads-root") == [KEY]  # no temp files left behind


async def test_put_renames_a_temp_file_from_the_same_folder_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replaces: list[tuple[Path, Path, int]] = []
    real_replace = os.replace

    def spy(src: str, dst: Path) -> None:
        replaces.append((Path(src), Path(dst), threading.get_ident()))
        assert Path(dst).read_bytes() == b"old"  # readers still see the old image until the rename
        real_replace(src, dst)

    store = LocalImageStore(tmp_path)
    await store.put(KEY, b"old", "image/jpeg")
    monkeypatch.setattr(os, "replace", spy)

    await store.put(KEY, b"new", "image/jpeg")

    [(src, dst, thread)] = replaces
    assert dst == tmp_path / KEY
    assert src.parent == dst.parent
    assert src != dst
    assert thread != threading.get_ident()
    assert dst.read_bytes() == b"new"


async def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalImageStore(tmp_path)
    await store.put(KEY, b"old", "image/jpeg")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(UpstreamUnavailable) as caught:
        await store.put(KEY, b"new", "image/jpeg")

    assert caught.value.status_code == 503
    assert str(tmp_path) not in caught.value.detail
    assert (tmp_path / KEY).read_bytes() == b"old"
    assert files_under(tmp_path) == [KEY]


@pytest.mark.parametrize(
    "key",
    ["", "../escape.jpg", "/etc/passwd", "uploads/../../escape.jpg", "uploads/./x.jpg", "a//b.jpg", "a/", "..\\x.jpg"],
)
async def test_keys_that_could_leave_the_root_are_refused(tmp_path: Path, key: str) -> None:
    root = tmp_path / "root"
    store = LocalImageStore(root)

    with pytest.raises(ValueError, match="storage key"):
        await store.put(key, b"data", "image/jpeg")

    assert files_under(tmp_path) == []


async def test_keys_from_hostile_user_ids_stay_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = LocalImageStore(root)
    key = image_key("../../etc", "ab" * 32, datetime(2025, 3, 7, tzinfo=UTC))

    await store.put(key, b"data", "image/jpeg")

    [written] = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written.resolve().is_relative_to(root.resolve())


async def test_check_creates_a_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "not" / "yet"
    await LocalImageStore(root).check()
    assert root.is_dir()
    assert files_under(root) == []  # the write probe leaves nothing


@pytest.mark.parametrize("root_name", ["a-file", "a-file/below"])
async def test_check_fails_when_the_root_cannot_be_a_writable_folder(tmp_path: Path, root_name: str) -> None:
    (tmp_path / "a-file").write_bytes(b"in the way")

    with pytest.raises(NotReady):
        await LocalImageStore(tmp_path / root_name).check()


async def test_delete_removes_the_file_and_a_missing_one_is_fine(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    await store.put("uploads/u/a.jpg", b"a", "image/jpeg")
    await store.put("uploads/u/b.jpg", b"b", "image/jpeg")

    await store.delete("uploads/u/a.jpg")
    await store.delete("uploads/u/a.jpg")  # a retried delete

    assert sorted(p.name for p in (tmp_path / "uploads" / "u").iterdir()) == ["b.jpg"]


async def test_delete_refuses_keys_that_could_leave_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"keep")
    with pytest.raises(ValueError, match="must be relative"):
        await LocalImageStore(tmp_path / "root").delete("../outside.jpg")
    assert outside.exists()
