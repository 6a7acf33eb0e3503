"""The benchmark's modules import each other by their bare names (`python bench/run.py` puts
bench/ first on the path): the tests here see them the same way."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = str(Path(__file__).resolve().parents[2] / "bench")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)
