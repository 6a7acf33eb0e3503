"""Defaults of the fraud model that the command line shows without loading the model's
libraries."""

from __future__ import annotations

from pathlib import Path

ARTIFACTS_DIR = Path(__file__).parent / "artifacts"
DEFAULT_ENSEMBLE = 5
