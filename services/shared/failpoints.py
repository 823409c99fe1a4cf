"""Failpoints: named steps of an upload where the fault tests stop a process,
so that a kill lands exactly at that step (not after a guessed sleep).

Off unless both DEV_MODE=1 and FAILPOINTS_DIR (a folder) are set; then each
point costs one `stat`. A test arms point P by creating `<dir>/P.arm`; the
process reaching P writes `<dir>/P.reached` (its pid) and waits until the
arm file is removed (at most FAILPOINT_HOLD_S), then goes on. The test waits
for `P.reached`, kills whatever it wants, and removes `P.arm`.

The points: `upload.staging` (gateway, the first block staged),
`upload.validate` (validator, inside Validate), `upload.process` (processor,
objects written under the output prefix), `upload.complete` (catalog, inside
CompleteUpload's transaction, before its commit).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

FAILPOINT_HOLD_S = 60.0
_POLL_S = 0.02


def _folder() -> Path | None:
    folder = os.environ.get("FAILPOINTS_DIR", "")
    if folder and os.environ.get("DEV_MODE", "").lower() in ("1", "true", "yes"):
        return Path(folder)
    return None


_FOLDER = _folder()


def _reached(name: str) -> Path | None:
    if _FOLDER is None:
        return None
    arm = _FOLDER / f"{name}.arm"
    if not arm.exists():
        return None
    tmp = _FOLDER / f".{name}.{os.getpid()}"
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, _FOLDER / f"{name}.reached")
    return arm


async def failpoint(name: str) -> None:
    """Holds here while `name` is armed (see the module's docstring)."""
    arm = _reached(name)
    deadline = time.monotonic() + FAILPOINT_HOLD_S
    while arm is not None and arm.exists() and time.monotonic() < deadline:  # noqa: ASYNC110 - a file, not an event
        await asyncio.sleep(_POLL_S)


def failpoint_sync(name: str) -> None:
    """The same, for code running in a thread."""
    arm = _reached(name)
    deadline = time.monotonic() + FAILPOINT_HOLD_S
    while arm is not None and arm.exists() and time.monotonic() < deadline:
        time.sleep(_POLL_S)
