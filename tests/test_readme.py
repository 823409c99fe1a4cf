"""The README keeps its promises: the two commands, and every setting the code reads."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.shared import settings
from tests.conftest import _create_database, free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_two_commands_come_first() -> None:
    first_block = README.split("```")[1]
    assert "make run" in first_block and "make test" in first_block


def test_ci_runs_the_readme_test_command() -> None:
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)


def test_every_setting_is_documented_as_the_code_has_it() -> None:
    assert settings.markdown_table() in README, "run `python -m services.shared.settings` and paste the table"


# ---- the walk-throughs run as written, against `make run` (services.devrun) -------------------------

DEFAULT_PORTS = {"8080": "gateway", "8091": "p2", "8092": "sign-in"}


def _block_after(heading: str, fence: str) -> str:
    """The first fenced block of kind `fence` in the README section `heading`."""
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return section.split(f"```{fence}\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def launched(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """`make run`'s launcher on free ports, and a folder laid out as the repository's root
    (its .venv, its var/ the launcher's work folder) to run the README's lines in."""
    tmp = tmp_path_factory.mktemp("readme")
    workdir, root = tmp / "var", tmp / "root"
    root.mkdir()
    for name in (".venv", "services", "bgimages"):
        (root / name).symlink_to(ROOT / name)
    (root / "var").symlink_to(workdir)
    ports = {"gateway": str(free_port()), "p2": str(free_port()), "sign-in": str(free_port())}
    env = {**os.environ, "DATABASE_URL": _create_database(pg_url), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "services.devrun", "--workdir", str(workdir)]
    command += ["--gateway-port", ports["gateway"], "--p2-port", ports["p2"]]
    command += ["--sign-in-port", ports["sign-in"]]
    out = tmp / "devrun.out"
    with out.open("wb") as sink:
        devrun = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while b"The suite is up" not in out.read_bytes():
            assert devrun.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        banner = out.read_text()
        # The demo world and its tokens are printed at start.
        for user in ("alice", "bob", "carol", "dave", "frank", "erin"):
            assert re.search(rf"^  {user} +p2:\d+ ", banner, re.M), banner
        assert banner.count("p2 token ") == 6 and "OB 2002" in banner and "chip gap" in banner
        yield root, ports
    finally:
        devrun.send_signal(signal.SIGINT)
        try:
            devrun.wait(30)
        except subprocess.TimeoutExpired:
            devrun.kill()


def _as_launched(text: str, ports: dict[str, str]) -> str:
    for default, name in DEFAULT_PORTS.items():
        text = text.replace(f"127.0.0.1:{default}", f"127.0.0.1:{ports[name]}")
    return text


@pytest.mark.e2e
def test_the_command_line_walk_through_runs_as_written(launched: tuple[Path, dict[str, str]]) -> None:
    root, ports = launched
    lines = [ln for ln in _block_after("Trying it: the command line", "sh").splitlines() if ln.strip()]
    # One shell, so that the exports carry on; each line's status and output apart.
    script = ["set +e"]
    for n, line in enumerate(lines):
        script += [_as_launched(line, ports), f'printf "\\n@@status {n} %d\\n" $?']
    shell = ["bash", "-c", "\n".join(script)]
    done = subprocess.run(shell, cwd=root, capture_output=True, text=True, timeout=600, env=os.environ)
    outputs = re.split(r"^@@status \d+ (\d+)$", done.stdout + "\n", flags=re.M)
    statuses, texts = [int(s) for s in outputs[1::2]], outputs[0::2][: len(lines)]
    assert len(statuses) == len(lines), done.stdout + done.stderr
    for line, status, text in zip(lines, statuses, texts, strict=False):
        expected = re.search(r"# exit (\d+): (\w+)", line)
        assert status == (int(expected.group(1)) if expected else 0), f"{line}\n{text}\n{done.stderr}"
        if expected and expected.group(2).isupper():  # the code it names is what the user is told
            assert f"error {expected.group(2)}" in done.stderr, f"{line}\n{done.stderr}"
    by_line = dict(zip(lines, texts, strict=False))
    d2 = next(text for line, text in by_line.items() if "--user dave" in line)
    marked = r"^\(\*\) selected: [0-9a-f]{64}  'sample.fits'  filter=R  \(shared by p2:52002\)"
    assert re.search(marked, d2, re.M), d2
    pi = next(text for line, text in by_line.items() if "--user alice" in line)
    shared = r"^shared images:\n  \( \) [0-9a-f]{64}  'sample.fits'  filter=R  \(shared by p2:52002\)"
    assert re.search(shared, pi, re.M), pi
    selection = json.loads(texts[-1])
    assert selection["kind"] == "user_image" and selection["image"]["file_name"] == "sample.fits"


@pytest.mark.e2e
def test_the_p2api_walk_through_runs_as_written(launched: tuple[Path, dict[str, str]]) -> None:
    root, ports = launched
    program = root / "walk_through.py"
    program.write_text(_as_launched(_block_after("Trying it: ESO's p2api client", "python"), ports))
    done = subprocess.run(
        [str(root / ".venv/bin/python"), str(program)], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    assert re.fullmatch(r"user_bkg_image\|[0-9a-f]{64}", printed[0]), printed
    assert printed[1:4] == ["True", printed[0], "default"]
    assert re.fullmatch(r"Gaia DR3 \(epoch 20\d\d\.\d\d\)", printed[4]), printed
    charts = "['p2fc_1002_1_default.jpg', 'p2fc_1002_2_gaia.jpg']"
    assert printed[5:] == [charts, charts], printed
