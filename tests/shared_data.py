"""Where the real data files for tests and benchmarks are: ``$OFFER_ENGINE_DATA_DIR`` when set,
else the first ``shared/data`` folder found beside the repository or any folder above it (so the
same tests find it from a clone at ``/work/main`` and from one nested deeper)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "OFFER_ENGINE_DATA_DIR"


def shared_data_dir() -> Path:
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured)
    repository = Path(__file__).resolve().parents[1]
    for folder in repository.parents:
        candidate = folder / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return repository.parent / "shared" / "data"  # absent: callers skip, naming this path
