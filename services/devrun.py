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
        # Development servers stand in for ESA's Gaia archive and ESO's science archive
        # unless the environment names real ones.
        self._dev_ports: dict[str, int] = {}
        if "GAIA_TAP_URL" not in self.env:
            port = self._dev_ports["tap"] = free_port()
            self.env["GAIA_TAP_URL"] = f"http://127.0.0.1:{port}/tap"
        if "ARCHIVE_TAP_URL" not in self.env:
            port = self._dev_ports["archive"] = free_port()
            self.env["ARCHIVE_TAP_URL"] = f"http://127.0.0.1:{port}/tap_obs"
            self.env["ARCHIVE_FILE_BASE"] = f"http://127.0.0.1:{port}/files/"
        self.dev_servers: dict[str, Any] = {}
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
        self._start_dev_servers()
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

    def restart(self, name: str, timeout: float = 60.0) -> None:
        """Kills one service and has it serving again (started here unless supervised)."""
        self.kill(name)
        if not self.supervise:
            self._spawn(name)
        self.wait_serving(name, timeout)

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
        for server in self.dev_servers.values():
            server.stop()
        self.dev_servers.clear()

    def _start_dev_servers(self) -> None:
        from services import devworld
        from services.devarchive import DevArchive
        from services.devtap import DevTap

        for name, port in self._dev_ports.items():
            if name not in self.dev_servers:
                server = (
                    DevTap(devworld.gaia_catalogue(), port=port) if name == "tap" else DevArchive(port=port)
                )
                server.start()
                self.dev_servers[name] = server

    def token(self, user: str, scope: str = "", ttl: int = 12 * 3600, **claims: Any) -> str:
        """A JWT for `user` signed with the suite's development key."""
        return mint_token(self.jwt_secret, self.env, user, scope, ttl, **claims)

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


def mint_token(
    secret: str, env: dict[str, str], user: str, scope: str = "", ttl: int = 12 * 3600, **claims: Any
) -> str:
    """A JWT for `user` signed with a development key (HS256, kid "dev"): what p2's
    identity provider issues in production, minted here for local use only."""
    import jwt

    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": user,
        "iss": env.get("JWT_ISSUER", "https://www.eso.org/p2"),
        "aud": env.get("JWT_AUDIENCE", "bgimages"),
        "iat": now,
        "exp": now + ttl,
    }
    if scope:
        payload["scope"] = scope
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256", headers={"kid": DEV_JWT_KID})


def build_survey(
    out: Path, filter_name: str, seed: int = 0, size: int = 1024, scale_arcsec: float = 6.0, order: int = 6
) -> Path:
    """A local survey HiPS (there may be no internet): a field of `size` pixels around the
    demo target, made into a HiPS (FITS and PNG tiles) by our own processor's command."""
    if not (out / "properties").exists():
        from services import devworld

        out.parent.mkdir(parents=True, exist_ok=True)
        wide = devworld.write_field(
            out.parent / f"{out.name}-field.fits", devworld.FIELD, size, scale_arcsec, filter_name, seed=seed
        )
        subprocess.run(
            [sys.executable, "-m", "services.processor", "hips", str(wide), str(out), "--order", str(order)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return out


def build_demo_survey(workdir: Path) -> Path:
    """The local stand-in for the default survey: a 1.7-degree R-band field."""
    return build_survey(workdir / "default-survey", "R")


# The named surveys of a local run: the demo survey under a name of its own, and an
# infrared-like one (another sky, band Ks), both local folders the gateway serves.
DEMO_SURVEYS = (("DEMO-R", "R"), ("DEMO-K", "Ks"))


def local_surveys(workdir: Path, default_survey: Path, **field: Any) -> str:
    """SURVEYS for a run without internet: DEMO-R (the default survey's folder) and DEMO-K
    (built here; `field` sizes it, see build_survey)."""
    k_survey = build_survey(workdir / "demo-k-survey", "Ks", seed=1, **field)
    folders = {"DEMO-R": default_survey, "DEMO-K": k_survey}
    return ",".join(f"{name}={folders[name]};fits;band={band}" for name, band in DEMO_SURVEYS)


SECRETS_FILE = "dev-secrets.json"  # in the work folder: what `token` needs of the running suite


def _secrets_path(workdir: Path) -> Path:
    return workdir / SECRETS_FILE


def write_secrets(workdir: Path, suite: Suite, p2_tokens: dict[str, str], sign_in_url: str) -> None:
    """What `python -m services.devrun token` needs, readable by this user only."""
    path = _secrets_path(workdir)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(
        json.dumps(
            {
                "jwt_secret": suite.jwt_secret,
                "jwt_issuer": suite.env.get("JWT_ISSUER", "https://www.eso.org/p2"),
                "jwt_audience": suite.env.get("JWT_AUDIENCE", "bgimages"),
                "gateway_url": suite.gateway_url,
                "sign_in_url": sign_in_url,
                "p2_tokens": p2_tokens,
            }
        )
    )


def token_for(workdir: Path, name: str, admin: bool = False, ttl: int = 12 * 3600) -> str:
    """A development JWT for a demo user (or any `instance:id` subject) of the running suite."""
    from services import devworld

    path = _secrets_path(workdir)
    if not path.exists():
        raise SystemExit(f"no running suite's secrets in {path}: start it first with `make run`")
    saved = json.loads(path.read_text())
    user = devworld.BY_NAME.get(name)
    if user is None and ":" not in name:
        known = ", ".join(devworld.BY_NAME)
        raise SystemExit(f"unknown demo user {name!r}: one of {known} (or a subject such as p2:52052)")
    env = {"JWT_ISSUER": saved["jwt_issuer"], "JWT_AUDIENCE": saved["jwt_audience"]}
    subject = user.subject if user else name
    return mint_token(saved["jwt_secret"], env, subject, "bgimages:admin" if admin else "", ttl)


def page_link(gateway_url: str, token: str, ob: Any) -> str:
    """The gateway's page for one OB, signed in (the page reads its context from the fragment)."""
    from urllib.parse import urlencode

    context: dict[str, Any] = {"token": token, "ob": ob.ob_id, "run": ob.run.catalog_id}
    context.update(ra=ob.target[0], dec=ob.target[1], instrument=ob.run.instrument)
    # What the OB's finding charts say of it, as p2 would tell the page.
    from services import devworld

    pi = devworld.BY_NAME[ob.run.pi]
    context.update(prog_id=ob.run.prog_id, pi=f"{pi.first} {pi.last}", ob_name=ob.name, target_name=ob.name)
    if ob.boa:
        context.update(boa_ra=ob.boa[0], boa_dec=ob.boa[1])
    return f"{gateway_url}/#{urlencode(context)}"


class SignIn:
    """The development sign-in: a page on loopback listing the demo users and, for each,
    the OBs of their runs as links to the gateway's page with a fresh token. It stands for
    p2's single sign-on; the gateway only links to it (SIGN_IN_URL)."""

    def __init__(self, suite: Suite, port: int = 0) -> None:
        from aiohttp import web

        from services.devp2 import LoopThread

        self.suite = suite
        app = web.Application()
        app.router.add_get("/", self._page)
        self.server = LoopThread(app, port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/"

    async def _page(self, request: Any) -> Any:
        from html import escape

        from aiohttp import web

        from services import devworld

        rows = []
        for user in devworld.USERS:
            token = self.suite.token(user.subject)
            runs = [r for r in devworld.RUNS if user.name == r.pi or user.name in r.delegates]
            links = [
                f'<a href="{escape(page_link(self.suite.gateway_url, token, ob))}">'
                f"OB {ob.ob_id} {escape(ob.name)}</a>"
                for ob in devworld.OBS
                if ob.run in runs
            ]
            rows.append(
                f"<li><b>{escape(user.first)} {escape(user.last)}</b> ({escape(user.name)}, "
                f"{escape(user.role)}): {' &middot; '.join(links) or 'no OBs'}</li>"
            )
        body = (
            "<!doctype html><meta charset=utf-8><title>Development sign-in</title>"
            "<style>body{font:15px system-ui;margin:2em;max-width:60em}li{margin:.6em 0}</style>"
            "<h1>Development sign-in</h1><p>Local demo only: pick a user and one of their OBs.</p>"
            f"<ul>{''.join(rows)}</ul>"
        )
        return web.Response(text=body, content_type="text/html")


def _launch(args: argparse.Namespace) -> int:
    from services import devworld
    from services.devp2 import DevP2

    workdir = Path(args.workdir).resolve()
    env: dict[str, str] = {}
    if not os.environ.get("DATABASE_URL"):
        from services.shared import embedded_pg

        env["DATABASE_URL"] = embedded_pg.start(workdir / "pg")
    for key in ("GAIA_TAP_URL", "ARCHIVE_TAP_URL", "ARCHIVE_FILE_BASE"):  # else the development servers
        if os.environ.get(key):
            env[key] = os.environ[key]
    suite = Suite(workdir, env, supervise=True)
    suite.ports["gateway"] = args.gateway_port
    suite.env["GATEWAY_PORT"] = str(args.gateway_port)
    if not os.environ.get("DEFAULT_SURVEY_URL"):
        suite.env["DEFAULT_SURVEY_DIR"] = str(build_demo_survey(workdir))
        suite.env["DEFAULT_SURVEY_NAME"] = "Demo survey (local)"
    if not os.environ.get("SURVEYS"):
        suite.env["SURVEYS"] = local_surveys(workdir, build_demo_survey(workdir))
        suite.env["CHART_SURVEY_OPTICAL"], suite.env["CHART_SURVEY_INFRARED"] = "DEMO-R", "DEMO-K"
    for key in (
        "S3_ENDPOINT",
        "S3_ACCESS_KEY",
        "S3_SECRET_KEY",
        "S3_BUCKET",
        "DATABASE_URL",
        "DEFAULT_SURVEY_URL",
        "SURVEYS",
    ):
        if os.environ.get(key):
            suite.env[key] = os.environ[key]
    # The development p2 serves the demo world; the p2api face may contact it only.
    p2 = DevP2(port=args.p2_port)
    p2_tokens = devworld.p2_tokens()
    devworld.load_p2(p2, p2_tokens)
    p2.start()
    suite.env["P2_API_BASES"] = f"{devworld.INSTANCE}={p2.url}"
    sign_in = SignIn(suite, args.sign_in_port)
    suite.env["SIGN_IN_URL"] = sign_in.url
    files = devworld.write_files(workdir / "demo")
    print(f"Starting the suite (logs in {workdir}/*.log) ...", flush=True)
    suite.start()
    sign_in.server.start()
    for run in devworld.RUNS:
        delegates = [devworld.BY_NAME[d].subject for d in run.delegates]
        suite.set_run(run.catalog_id, devworld.BY_NAME[run.pi].subject, delegates)
    write_secrets(workdir, suite, p2_tokens, sign_in.url)
    bob = suite.token(devworld.BY_NAME["bob"].subject)
    print(
        f"""
The suite is up.
  Gateway:            {suite.gateway_url}/   (the "Select background image" page)
  Sign in (demo):     {sign_in.url}
  Development p2:     {p2.url}   (login {p2.login_url})
  Development TAP:    {suite.env["GAIA_TAP_URL"]}   (a Gaia-like catalogue of the demo fields)
  Development archive: {suite.env["ARCHIVE_TAP_URL"]}   (ESO-like ObsCore and files)

{devworld.describe(p2_tokens)}

  Demo files:         {files["sample"]}, {files["nofilter"]}, {files["pawprint"]}
  A token for a demo user (the gateway's native API, 12 h):
    python -m services.devrun token --user bob [--admin]

Upload the sample image for OB 1001 as bob:
  curl -sS -H 'Authorization: Bearer {bob}' \\
    -F 'file=@{files["sample"]}' -F 'run_id={devworld.RUN_A.catalog_id}' \\
    -F target_ra=150.0 -F target_dec=2.0 {suite.gateway_url}/api/v1/obs/1001/background-images

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
        sign_in.server.stop()
        p2.stop()
        _secrets_path(workdir).unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run the suite locally on embedded defaults, with a demo world."
    )
    parser.add_argument(
        "--workdir", default="var", help="folder for the store, database, logs and demo files"
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="start the suite (the default)")
    for p in (parser, run):
        p.add_argument("--gateway-port", type=int, default=int(os.environ.get("GATEWAY_PORT", "8080")))
        p.add_argument("--p2-port", type=int, default=int(os.environ.get("DEV_P2_PORT", "8091")))
        p.add_argument("--sign-in-port", type=int, default=int(os.environ.get("DEV_SIGN_IN_PORT", "8092")))
    tok = sub.add_parser("token", help="print a development token for a demo user of the running suite")
    tok.add_argument(
        "--user", required=True, help="a demo user's name (bob, alice, ...) or a subject (p2:52052)"
    )
    tok.add_argument("--admin", action="store_true", help="with the bgimages:admin scope")
    tok.add_argument("--ttl", type=int, default=12 * 3600, help="seconds the token lives")
    args = parser.parse_args(argv)
    if args.command == "token":
        print(token_for(Path(args.workdir).resolve(), args.user, args.admin, args.ttl))
        return 0
    return _launch(args)


if __name__ == "__main__":
    sys.exit(main())
