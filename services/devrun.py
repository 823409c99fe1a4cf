"""Starts the whole suite locally (`make run`) and for the end-to-end tests.

Each service runs as its own process (`python -m services.<name>`), talking
real gRPC over loopback sockets; the catalog uses a real PostgreSQL (the one
DATABASE_URL names, else an embedded one); the object store is a local
folder unless S3_ENDPOINT is set.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICES = ("validator", "processor", "catalog", "gateway")
GRPC_SERVICES = {
    "validator": "bgimages.validator.v1.ValidatorService",
    "processor": "bgimages.processor.v1.ProcessorService",
    "catalog": "bgimages.catalog.v1.CatalogService",
}
DEMO_RUN = "p2:60925201"  # p2 instance "p2", run id 60925201 (as p2 numbers runs)
DEMO_USER = "p2:demo"
DEV_JWT_KID = "dev"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# Restart back-off of a crashed service, as Kubernetes does (CrashLoopBackOff):
# doubling from the first delay up to the last; a service that ran this long
# before it crashed starts again from the first delay.
RESTART_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
RESTART_RESET_S = 60.0


class Suite:
    """The four services as processes sharing one environment.

    With `supervise`, a service that exits is started again after a back-off
    (and the restart is logged), as Kubernetes restarts a crashed container.
    """

    def __init__(self, workdir: Path, env: dict[str, str] | None = None, supervise: bool = False) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ports = {name: free_port() for name in SERVICES}
        self.jwt_secret = secrets.token_hex(32)
        self.env: dict[str, str] = {
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
            "BIND_HOST": "127.0.0.1",
            "SERVICE_TOKEN": secrets.token_hex(16),
            "STORE_DIR": str(self.workdir / "store"),
            "VALIDATOR_PORT": str(self.ports["validator"]),
            "PROCESSOR_PORT": str(self.ports["processor"]),
            "CATALOG_PORT": str(self.ports["catalog"]),
            "GATEWAY_PORT": str(self.ports["gateway"]),
            "VALIDATOR_ADDR": f"127.0.0.1:{self.ports['validator']}",
            "PROCESSOR_ADDR": f"127.0.0.1:{self.ports['processor']}",
            "CATALOG_ADDR": f"127.0.0.1:{self.ports['catalog']}",
            "DEV_MODE": "1",
            "JWT_ALGORITHM": "HS256",
            "JWT_KEYS": json.dumps({DEV_JWT_KID: self.jwt_secret}),
            "HIPS_SIGNING_KEY": secrets.token_hex(32),
            "SCRATCH_DIR": str(self.workdir / "scratch"),
        }
        self.env.update(env or {})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self.supervise = supervise
        self.restarts: dict[str, int] = dict.fromkeys(SERVICES, 0)
        self._started_at: dict[str, float] = {}
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def start(self, timeout: float = 120.0) -> None:
        Path(self.env["SCRATCH_DIR"]).mkdir(parents=True, exist_ok=True)
        self._stopping.clear()
        for name in SERVICES:
            self._spawn(name)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        if self.supervise:
            self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
            self._supervisor.start()

    def _spawn(self, name: str) -> None:
        if name not in self._logs:
            self._logs[name] = open(self.log_path(name), "ab")  # noqa: SIM115 - closed in stop()
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, **self.env},
            stdout=self._logs[name],
            stderr=subprocess.STDOUT,
        )
        self._started_at[name] = time.monotonic()

    def _say(self, name: str, message: str) -> None:
        """A supervisor line, on stdout and in the service's log."""
        line = f"supervisor: {name} {message}"
        print(line, flush=True)
        log = self._logs.get(name)
        if log is not None:
            log.write((line + "\n").encode())
            log.flush()

    def _supervise(self) -> None:
        attempt = dict.fromkeys(SERVICES, 0)
        while not self._stopping.wait(0.2):
            for name in SERVICES:
                with self._lock:
                    proc = self.procs[name]
                    code = proc.poll()
                    if code is None or self._stopping.is_set():
                        continue
                    if time.monotonic() - self._started_at[name] >= RESTART_RESET_S:
                        attempt[name] = 0
                    delay = RESTART_DELAYS_S[min(attempt[name], len(RESTART_DELAYS_S) - 1)]
                    attempt[name] += 1
                    self._say(name, f"exited with {code}; restarting in {delay:g} s (#{attempt[name]})")
                if self._stopping.wait(delay):
                    return
                with self._lock:
                    if self._stopping.is_set():
                        return
                    self._spawn(name)
                    self.restarts[name] += 1
                    self._say(name, f"started again (pid {self.procs[name].pid})")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kills one service (the fault tests): supervised, it starts again."""
        proc = self.procs[name]
        proc.send_signal(sig)
        proc.wait()

    def wait_serving(self, name: str, timeout: float = 60.0) -> None:
        """Waits until one service answers again (after a restart)."""
        self._wait((name,), timeout)

    def _serving(self, name: str) -> bool:
        if name == "gateway":
            try:
                with urllib.request.urlopen(self.gateway_url + "/healthz", timeout=1) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False
        with grpc.insecure_channel(self.address(name)) as ch:
            try:
                resp = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=GRPC_SERVICES[name]), timeout=1
                )
                return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
            except grpc.RpcError:
                return False

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = self.log_path(name).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def wait_ready(self, timeout: float) -> None:
        """Waits until every service answers; fails at once if one exited."""
        self._wait(SERVICES, timeout, check_alive=True)

    def _wait(self, names: tuple[str, ...], timeout: float, check_alive: bool = False) -> None:
        deadline = time.monotonic() + timeout
        for name in names:
            while not self._serving(name):
                if check_alive:
                    self._check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not serving after {timeout} s")
                time.sleep(0.1)

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
            self._supervisor = None
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self._logs.values():
            log.close()
        self._logs.clear()

    def token(self, user: str, scope: str = "", ttl: int = 12 * 3600, **claims: Any) -> str:
        """A JWT for `user` signed with the suite's development key."""
        import jwt

        payload: dict[str, Any] = {
            "sub": user,
            "iss": self.env.get("JWT_ISSUER", "https://www.eso.org/p2"),
            "aud": self.env.get("JWT_AUDIENCE", "bgimages"),
            "iat": int(time.time()),
            "exp": int(time.time()) + ttl,
        }
        if scope:
            payload["scope"] = scope
        payload.update(claims)
        return jwt.encode(payload, self.jwt_secret, algorithm="HS256", headers={"kid": DEV_JWT_KID})

    def set_run(self, run_id: str, owner_id: str, delegate_ids: list[str] | tuple[str, ...] = ()) -> None:
        """Pushes a run's owner and delegates to the catalog, as p2 does."""
        from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc

        with grpc.insecure_channel(self.address("catalog")) as ch:
            stub = catalog_pb2_grpc.CatalogServiceStub(ch)
            stub.SetRun(
                catalog_pb2.SetRunRequest(run_id=run_id, owner_id=owner_id, delegate_ids=list(delegate_ids)),
                metadata=(("x-service-token", self.env["SERVICE_TOKEN"]),),
                timeout=10,
            )


def write_sample(
    path: Path, ra: float = 150.0, dec: float = 2.0, size: int = 1024, scale_arcsec: float = 0.5
) -> Path:
    """A TAN image with a FILTER keyword, centred on (ra, dec), for the curl line."""
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(size + 1) / 2, (size + 1) / 2]
    w.wcs.cd = np.array([[-scale_arcsec / 3600, 0.0], [0.0, scale_arcsec / 3600]])
    rng = np.random.default_rng(0)
    data = rng.normal(100.0, 5.0, (size, size)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(60):
        x, y, f = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(200, 5000)
        data += (f * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.0)).astype(np.float32)
    header = w.to_header()
    header["FILTER"] = "R"
    header["OBJECT"] = "Demo field"
    fits.PrimaryHDU(data, header).writeto(path, overwrite=True)
    return path


def build_demo_survey(workdir: Path) -> Path:
    """A local stand-in for the default survey (there may be no internet): a
    1.7-degree field around the demo target, made into a HiPS by our own
    processor's command."""
    out = workdir / "default-survey"
    if not (out / "properties").exists():
        wide = write_sample(workdir / "survey-field.fits", size=1024, scale_arcsec=6.0)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "services.processor",
                "hips",
                str(wide),
                str(out),
                "--order",
                "6",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the suite locally on embedded defaults.")
    parser.add_argument("--workdir", default="var", help="folder for the store, database and logs")
    parser.add_argument("--gateway-port", type=int, default=int(os.environ.get("GATEWAY_PORT", "8080")))
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    env: dict[str, str] = {}
    if not os.environ.get("DATABASE_URL"):
        from services.shared import embedded_pg

        env["DATABASE_URL"] = embedded_pg.start(workdir / "pg")
    suite = Suite(workdir, env, supervise=True)
    suite.ports["gateway"] = args.gateway_port
    suite.env["GATEWAY_PORT"] = str(args.gateway_port)
    if not os.environ.get("DEFAULT_SURVEY_URL"):
        suite.env["DEFAULT_SURVEY_DIR"] = str(build_demo_survey(workdir))
        suite.env["DEFAULT_SURVEY_NAME"] = "Demo survey (local)"
    for key in (
        "S3_ENDPOINT",
        "S3_ACCESS_KEY",
        "S3_SECRET_KEY",
        "S3_BUCKET",
        "DATABASE_URL",
        "DEFAULT_SURVEY_URL",
    ):
        if os.environ.get(key):
            suite.env[key] = os.environ[key]
    print(f"Starting the suite (logs in {workdir}/*.log) ...", flush=True)
    suite.start()
    suite.set_run(DEMO_RUN, DEMO_USER)
    sample = write_sample(workdir / "sample.fits")
    token = suite.token(DEMO_USER)
    admin = suite.token(DEMO_USER, scope="bgimages:admin")
    print(
        f"""
The suite is up.
  Gateway:            {suite.gateway_url}/   (the Background-image page)
  Demo user / run:    {DEMO_USER} / {DEMO_RUN}
  Development token:  {token}
  Admin token:        {admin}

Upload the sample image (target inside it) for OB 1001:
  curl -sS -H 'Authorization: Bearer {token}' \\
    -F 'file=@{sample}' -F 'run_id={DEMO_RUN}' -F target_ra=150.0 -F target_dec=2.0 \\
    {suite.gateway_url}/api/v1/obs/1001/background-images

List what fits OB 1001:
  curl -sS -H 'Authorization: Bearer {token}' \\
    '{suite.gateway_url}/api/v1/obs/1001/background-images?run_id={DEMO_RUN}&target_ra=150&target_dec=2'

Ctrl-C stops everything.""",
        flush=True,
    )
    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop:  # the supervisor restarts a service that crashes
            time.sleep(0.5)
    finally:
        print("Stopping ...", flush=True)
        suite.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
