"""A real PostgreSQL started for development and tests (the `pgserver` wheel).

Used only when DATABASE_URL is empty: production names its server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_servers: dict[str, Any] = {}


def start(data_dir: str | Path, throwaway: bool = False) -> str:
    """Starts (or reuses) a PostgreSQL 16 in data_dir; returns its URL. The
    server stops when the process exits; a throwaway one's data goes too."""
    if "XDG_RUNTIME_DIR" not in os.environ:
        runtime = Path(f"/tmp/runtime-{os.getuid()}")
        runtime.mkdir(mode=0o700, exist_ok=True)
        runtime.chmod(0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    import pgserver

    key = str(Path(data_dir).resolve())
    if key not in _servers:
        Path(key).mkdir(parents=True, exist_ok=True)
        _servers[key] = pgserver.get_server(key, cleanup_mode="delete" if throwaway else "stop")
    uri: str = _servers[key].get_uri()
    return uri
