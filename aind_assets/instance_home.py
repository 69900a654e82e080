"""The Dagster home the ``aind-assets`` commands use, with an instance profile in it.

``$DAGSTER_HOME`` when set, else ``<data dir>/dagster_home``. A home without ``dagster.yaml``
gets the local profile (dagster.yaml at the top of the project), as ``aind-assets dev`` would give it, so a
command run first (``hbcd discover --register``, ``release register``) neither warns that the
file is missing nor creates an instance that differs from the one the platform then runs on.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
#: The local instance profile, copied into a new Dagster home.
LOCAL_PROFILE = PROJECT_DIR / "dagster.yaml"


def dagster_home(data_dir: Path) -> Path:
    """The absolute Dagster home, created, with a ``dagster.yaml`` (the local profile if none)."""
    home = Path(os.environ.get("DAGSTER_HOME") or data_dir / "dagster_home").absolute()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists() and LOCAL_PROFILE.is_file():
        shutil.copy(LOCAL_PROFILE, home / "dagster.yaml")
    return home
