"""Small text helpers shared by the report writers."""

from __future__ import annotations


def truncate_words(text: str, limit: int) -> str:
    """Cut text at the last whole word that fits in `limit` characters."""
    if len(text) <= limit:
        return text
    cut = text[: limit + 1].rsplit(" ", 1)[0]
    return cut if cut and len(cut) <= limit else text[:limit]
