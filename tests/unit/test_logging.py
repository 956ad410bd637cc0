"""The redaction processor: no secret-looking key reaches a log line, at any depth."""

from __future__ import annotations

from app.logging import redact_secrets


def test_secret_keys_are_redacted_at_any_depth() -> None:
    event = {
        "event": "call",
        "authorization": "Bearer abc",
        "headers": {"X-Api-Key": "k1", "accept": "json"},
        "items": [{"refresh_token": "t"}, "plain"],
        "OPENAI_API_KEY": "sk-1",
        "status": 200,
    }
    assert redact_secrets(None, "info", event) == {
        "event": "call",
        "authorization": "[redacted]",
        "headers": {"X-Api-Key": "[redacted]", "accept": "json"},
        "items": [{"refresh_token": "[redacted]"}, "plain"],
        "OPENAI_API_KEY": "[redacted]",
        "status": 200,
    }
