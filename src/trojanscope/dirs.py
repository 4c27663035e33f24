"""Where TrojanScope keeps what it makes: the runs directory (jobs, the demo pair, the dashboard's outputs).

Kept apart and free of heavy imports (no torch): the job store, the demo builder and the dashboard's path checks
all read it here.
"""

from __future__ import annotations

import os
from pathlib import Path

RUNS_DIR_ENV = "TROJANSCOPE_RUNS_DIR"


def runs_dir() -> Path:
    """``$TROJANSCOPE_RUNS_DIR`` or ``runs`` (relative to the working directory)."""
    return Path(os.environ.get(RUNS_DIR_ENV, "runs"))
