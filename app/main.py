"""The ASGI entry point: `uvicorn app.main:app`. The only module uvicorn imports.

A configuration that cannot start the service exits with one line naming what to fix.
"""

from __future__ import annotations

import sys

from pydantic import ValidationError

from app.bootstrap import create_app
from app.config import ConfigError


def _one_line(exc: ValidationError) -> str:
    problems = [f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()]
    return "; ".join(problems)


try:
    app = create_app()
except ConfigError as exc:
    sys.exit(f"configuration error: {exc}")
except ValidationError as exc:
    sys.exit(f"configuration error: {_one_line(exc)}")
