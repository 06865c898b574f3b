"""Where the shared reference data lives: ``../shared/golden`` beside the repository.

CI clones the repository with ``shared/`` beside it, so tests locate the golden files
relative to this checkout, never by an absolute path.
"""

from pathlib import Path

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "shared" / "golden"
SPARSITY_JSON = GOLDEN_DIR / "baseline_sparsity.json"
INTEROP_DIR = GOLDEN_DIR / "interop"
