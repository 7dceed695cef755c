"""Where the repository's files are."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "lrpaudit"
SAMPLES = REPO / "sample_models"
