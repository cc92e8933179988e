"""Entry point of the Pulumi program."""

from __future__ import annotations

import sys
from pathlib import Path

# Pulumi runs this directory as a script; the repo root makes `infra` and `service` importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.program import main  # noqa: E402

main()
