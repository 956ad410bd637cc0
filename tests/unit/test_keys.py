from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.services.keys import image_key, user_segment

SHA = "ab" * 32
NOW = datetime(2025, 3, 7, 12, 0, tzinfo=UTC)


def test_key_format() -> None:
    assert image_key("user-1", SHA, NOW) == f"uploads/user-1/2025/03/{SHA}.jpg"


def test_month_is_the_utc_month() -> None:
    evening_in_toronto = datetime(2025, 3, 31, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert image_key("u", SHA, evening_in_toronto) == f"uploads/u/2025/04/{SHA}.jpg"


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        image_key("u", SHA, datetime(2025, 3, 7))  # naive on purpose


@pytest.mark.parametrize("sha", ["", "AB" * 32, "ab" * 31, "zz" * 32, f"{SHA}/../x"])
def test_bad_digest_is_refused(sha: str) -> None:
    with pytest.raises(ValueError, match="sha256"):
        image_key("u", sha, NOW)


@pytest.mark.parametrize(
    ("user_id", "segment"),
    [
        ("0b6c7f2e-1c1a-4c5e-9d0e-6c2f3a1b2c3d", "0b6c7f2e-1c1a-4c5e-9d0e-6c2f3a1b2c3d"),
        ("a/b", "a%2Fb"),
        ("../../etc", "..%2F..%2Fetc"),
        ("a\\b", "a%5Cb"),
        ("a%2Fb", "a%252Fb"),  # distinct from "a/b"
        ("...", "..."),
        ("émile", "%C3%A9mile"),
    ],
)
def test_user_id_becomes_one_safe_segment(user_id: str, segment: str) -> None:
    assert user_segment(user_id) == segment
    parts = image_key(user_id, SHA, NOW).split("/")
    assert parts == ["uploads", segment, "2025", "03", f"{SHA}.jpg"]


@pytest.mark.parametrize("user_id", ["", ".", "..", "x" * 201])
def test_unusable_user_id_is_refused(user_id: str) -> None:
    with pytest.raises(ValueError, match="user id"):
        image_key(user_id, SHA, NOW)
