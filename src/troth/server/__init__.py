"""The HTTP server (Starlette app, uvicorn runner)."""

from __future__ import annotations

from troth.server.app import create_app

__all__ = ["create_app"]
