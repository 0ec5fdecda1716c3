"""A linearizability checker for troth: record a history over HTTP, then check it.

``python -m tools.linearize run --url http://127.0.0.1:8001`` records and checks a history;
``python -m tools.linearize check history.json`` checks a saved one. See docs/reliability.md.
"""
