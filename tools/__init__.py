"""Reliability tools (history checker, crash harness, soak); see docs/reliability.md."""
