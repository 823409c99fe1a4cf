"""A PostgreSQL server the fault tests own, may kill -9 and start again:
Debian's `initdb` and `pg_ctl` (where `pg_config --bindir` points), run as the
`postgres` user when the tests run as root (PostgreSQL refuses root)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import free_port


def _bindir() -> Path:
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=True)
        if (Path(out.stdout.strip()) / "initdb").exists():
            return Path(out.stdout.strip())
    candidates = sorted(p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not candidates:
        raise RuntimeError("no PostgreSQL binaries: install Debian's postgresql (initdb, pg_ctl)")
    return candidates[-1]


class PrivatePostgres:
    """One server in its own folder on a free port of 127.0.0.1, trust auth.

    The postmaster runs as a child of the test process (not daemonised by
    pg_ctl), so a kill -9 is reaped at once and a restart finds no live pid
    in its lock file.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.bindir = _bindir()
        self._user: dict[str, str] = {}
        if os.geteuid() == 0:
            pwd.getpwnam("postgres")
            self._user = {"user": "postgres", "group": "postgres"}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._user:
            shutil.chown(self.folder, "postgres", "postgres")
            self.folder.chmod(0o755)
        subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"],
            check=True,
            capture_output=True,
            timeout=120,
            cwd=self.folder,
            **self._user,  # type: ignore[call-overload]
        )

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - the server's own log, kept open by it
        self.proc = subprocess.Popen(
            [
                str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-k", str(self.data), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
            **self._user,  # type: ignore[call-overload]
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)], timeout=10
            )
            if ready.returncode == 0:
                return
            if self.proc.poll() is not None:
                tail = (self.folder / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"PostgreSQL exited with {self.proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError("PostgreSQL did not accept connections")
            time.sleep(0.1)

    def backends(self) -> list[int]:
        """The server processes under the postmaster."""
        if self.proc is None:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == self.proc.pid:
                    found.append(int(entry.name))
        return found

    def kill(self) -> None:
        """kill -9 of the whole server (a crashed machine or container): the
        postmaster and its backends, so nothing commits or answers after."""
        if self.proc is None:
            return
        backends = self.backends()
        self.proc.kill()
        for pid in backends:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in backends):
            if time.monotonic() > deadline:
                raise TimeoutError("PostgreSQL processes did not die")
            time.sleep(0.05)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
