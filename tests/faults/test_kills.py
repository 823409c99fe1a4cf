"""kill -9 of each part at each step of an upload, placed by a failpoint that
confirms the step was reached: the upload succeeds or answers 503 with a
code (never 500), the suite heals without restarting the others (the killed
service is started again by the supervisor, PostgreSQL by the test, as an
SRE or Kubernetes would), the next upload succeeds within 30 s, a failed
upload pinned nothing, and one sweep leaves the store exactly as the rows say.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import itertools
import time

import pytest
import requests

from tests.faults.conftest import STEPS, World

VICTIMS = ("processor", "validator", "catalog", "postgres")
RUN_A, PI_A = "p2:60.A-9301(A)", "p2:9301"
RUN_B, PI_B = "p2:60.A-9302(B)", "p2:9302"
_obs = itertools.count(93_000)


@pytest.fixture(scope="module", autouse=True)
def runs(world: World) -> None:
    world.suite.set_run(RUN_A, PI_A)
    world.suite.set_run(RUN_B, PI_B)


def kill(world: World, victim: str) -> None:
    if victim == "postgres":
        world.pg.kill()
    else:
        world.suite.kill(victim)


def recover(world: World, victim: str) -> None:
    if victim == "postgres":
        world.pg.start()
    else:
        world.suite.wait_serving(victim)


def answered_503_with_a_code(resp: requests.Response) -> str:
    assert resp.status_code == 503, f"{resp.status_code}: {resp.text[:500]}"
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    body = resp.json()
    assert body["code"] in ("UNAVAILABLE", "STORE_UNAVAILABLE"), body
    assert "Traceback" not in resp.text and "Errno" not in resp.text
    return str(body["code"])


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("victim", VICTIMS)
def test_kill_at_each_step(world: World, victim: str, step: str) -> None:
    ob_id = next(_obs)
    path = world.new_file()
    fits_hash = hashlib.sha256(path.read_bytes()).hexdigest()
    world.arm(step)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(world.upload, PI_A, ob_id, RUN_A, path)
        world.wait_reached(step)
        kill(world, victim)
        world.release(step)
        first = pending.result(timeout=180)
    print(f"\n{victim} killed at {step}: {first.status_code} {first.text[:160]}")
    if first.status_code != 201:
        answered_503_with_a_code(first)
    recover(world, victim)

    # The next upload succeeds within 30 s. When the first failed, it is run
    # B's for the same OB: the failed upload pinned nothing to run A.
    retry_ob = ob_id if first.status_code != 201 else next(_obs)
    started = time.monotonic()
    retry_path = world.new_file()
    while True:
        resp = world.upload(PI_B, retry_ob, RUN_B, retry_path)
        if resp.status_code == 201 or time.monotonic() - started > 30:
            break
        answered_503_with_a_code(resp)
        time.sleep(0.5)
    assert resp.status_code == 201, f"no upload succeeded 30 s after recovery: {resp.text[:300]}"
    assert resp.json()["fits_hash"]

    world.wait_leases_ended()
    world.sweep_and_check()
    # A failed upload recorded nothing; a successful one is whole (the check above).
    stored = world.sql("SELECT count(*) FROM images WHERE fits_hash = $1", fits_hash)
    assert stored == (1 if first.status_code == 201 else 0)
    assert world.sql("SELECT run_id FROM obs WHERE ob_id = $1", ob_id) == (
        RUN_A if first.status_code == 201 else RUN_B
    )
