"""Pure pieces of the users-and-data feature: the GCRA limiter, history cursors, quota refill, option digests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.domain.models import AnalysisOptions
from app.errors import InvalidField, NotFound
from app.services.analysis import seconds_to_midnight
from app.services.history import decode_cursor, encode_cursor, parse_id
from app.services.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_limiter_allows_a_burst_then_one_request_per_interval() -> None:
    clock = Clock()
    limiter = RateLimiter(6, clock=clock)  # a burst of 6, then one every 10 s
    assert [limiter.acquire("alice") for _ in range(6)] == [0.0] * 6
    assert limiter.acquire("alice") == pytest.approx(10.0)
    clock.now += 4
    assert limiter.acquire("alice") == pytest.approx(6.0)  # refused calls do not push the wait further
    clock.now += 6
    assert limiter.acquire("alice") == 0.0
    assert limiter.acquire("alice") == pytest.approx(10.0)
    assert limiter.acquire("bob") == 0.0  # a bucket per user


def test_the_limiter_refills_fully_after_a_quiet_minute() -> None:
    clock = Clock()
    limiter = RateLimiter(3, clock=clock)
    for _ in range(3):
        limiter.acquire("alice")
    clock.now += 60
    assert [limiter.acquire("alice") for _ in range(3)] == [0.0] * 3
    assert limiter.acquire("alice") > 0


def test_the_limiter_forgets_users_whose_bucket_is_full_again() -> None:
    clock = Clock()
    limiter = RateLimiter(60, clock=clock)
    for index in range(1023):
        limiter.acquire(f"user-{index}")
    assert len(limiter) == 1023
    clock.now += 2  # every bucket refilled (1 s per request at 60 a minute)
    limiter.acquire("one-more")  # the 1024th call prunes
    assert len(limiter) == 1


def test_the_limiter_refuses_a_zero_rate() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RateLimiter(0)


def test_a_cursor_round_trips() -> None:
    created = datetime(2026, 11, 21, 12, 30, 5, 123456, tzinfo=UTC)
    analysis_id = uuid.uuid4()
    cursor = encode_cursor(created, analysis_id)
    assert "=" not in cursor
    assert decode_cursor(cursor) == (created, analysis_id)


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!",
        "bm90IGEgY3Vyc29y",  # "not a cursor"
        encode_cursor(datetime(2026, 1, 1, tzinfo=UTC), uuid.uuid4())[:-4],
        "MjAyNi0wMS0wMVQwMDowMDowMHwxMjM",  # "2026-01-01T00:00:00|123": naive time, bad id
    ],
)
def test_a_cursor_the_api_did_not_make_is_invalid(cursor: str) -> None:
    with pytest.raises(InvalidField):
        decode_cursor(cursor)


def test_ids_parse_in_both_spellings_and_anything_else_is_not_found() -> None:
    analysis_id = uuid.uuid4()
    assert parse_id(analysis_id.hex) == parse_id(str(analysis_id)) == analysis_id
    for bad in ("", "123", "../etc/passwd", "z" * 32):
        with pytest.raises(NotFound):
            parse_id(bad)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 11, 21, 23, 59, 59, tzinfo=UTC), 1),
        (datetime(2026, 11, 21, 0, 0, 0, tzinfo=UTC), 86_400),
        (datetime(2026, 11, 21, 12, 0, 0, 500_000, tzinfo=UTC), 43_200),
        # 19:00 in Toronto is midnight UTC: the quota day is UTC whatever the server's zone.
        (datetime(2026, 11, 21, 18, 0, 0, tzinfo=timezone(timedelta(hours=-5))), 3_600),
    ],
)
def test_the_quota_refills_at_midnight_utc(now: datetime, expected: int) -> None:
    assert seconds_to_midnight(now) == expected


def test_option_digests_are_equal_exactly_when_the_options_are() -> None:
    base = AnalysisOptions(questions=("Is it new?",), locale="en", hints=None)
    assert base.digest() == AnalysisOptions(questions=("Is it new?",), locale="en").digest()
    others = [
        AnalysisOptions(questions=("Is it old?",)),
        AnalysisOptions(questions=("Is it new?",), locale="fr"),
        AnalysisOptions(questions=("Is it new?",), hints="box"),
        AnalysisOptions(questions=("Is it new?", "Is it new?")),
        AnalysisOptions(questions=()),
    ]
    assert len({base.digest(), *(other.digest() for other in others)}) == 6
    assert AnalysisOptions.from_json(base.to_json()) == base
