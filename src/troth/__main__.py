from __future__ import annotations

from troth.cli import main

main()
