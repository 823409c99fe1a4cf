"""`make run` (services.devrun) survives a crashed service: the supervisor
says so and starts it again with a back-off, and the suite answers again,
as Kubernetes would restart a crashed container."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.conftest import _create_database, free_port

ROOT = Path(__file__).resolve().parents[2]


def child_running(parent: int, module: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if ppid == parent and module.encode() in cmdline:
            return int(entry.name)
    return None


def test_a_crashed_service_is_restarted_and_the_suite_answers_again(pg_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": _create_database(pg_url), "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "devrun.out"
    with out.open("wb") as sink:
        devrun = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.devrun",
                "--workdir",
                str(tmp_path),
                "--gateway-port",
                f"{port}",
                "--p2-port",
                "0",  # any free port
                "--sign-in-port",
                "0",
            ],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while b"The suite is up" not in out.read_bytes():
            assert devrun.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        for victim in ("services.validator", "services.catalog"):
            pid = child_running(devrun.pid, victim)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while child_running(devrun.pid, victim) in (None, pid):
                assert devrun.poll() is None, "make run stopped with the service:\n" + out.read_text()
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.2)
            name = victim.split(".")[1]
            text = out.read_text()
            assert f"supervisor: {name} exited with -9; restarting in" in text
            # Ready again: /readyz follows the restarted service.
            deadline = time.monotonic() + 30
            while requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, "the suite did not become ready again"
                time.sleep(0.3)
        assert devrun.poll() is None
    finally:
        devrun.send_signal(signal.SIGINT)
        devrun.wait(timeout=60)
    assert "Stopping" in out.read_text()
