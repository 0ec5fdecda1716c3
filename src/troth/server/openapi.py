"""OpenAPI 3.1 document of the HTTP API (placeholder until completed)."""

from __future__ import annotations

from typing import Any


def openapi_document() -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "troth", "version": "0.1.0"}, "paths": {}}
