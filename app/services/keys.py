"""Storage keys for normalized images: `uploads/{user}/{yyyy}/{mm}/{sha256}.jpg`.

The same key works for the local folder and for S3, so it must be one safe path segment per part
whatever a user id contains.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import quote

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# Well below the 255-byte file name limit of common filesystems, and S3's 1024-byte key limit.
_MAX_USER_SEGMENT = 200


def user_segment(user_id: str) -> str:
    """Return `user_id` as one path segment: percent-encoded, never empty, `.` or `..`."""
    # quote(safe="") encodes "/", "\\" and "%" too, so distinct user ids keep distinct segments.
    segment = quote(user_id, safe="")
    if segment in ("", ".", ".."):
        raise ValueError("user id cannot be used as a storage path segment")
    if len(segment) > _MAX_USER_SEGMENT:
        raise ValueError("user id is too long for a storage key")
    return segment


def image_key(user_id: str, sha256: str, now: datetime) -> str:
    """Build the storage key of an image from its owner, its SHA-256 hex digest and an aware `now` (UTC months)."""
    if not _SHA256_HEX.fullmatch(sha256):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    utc = now.astimezone(UTC)
    return f"uploads/{user_segment(user_id)}/{utc:%Y}/{utc:%m}/{sha256}.jpg"
