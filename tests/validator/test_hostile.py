"""The hostile corpus: each broken file gets its stable code, in bounded time and memory, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from services.validator import Target, validate_path
from tests.validator import hostile_corpus
from tests.validator.hostile_corpus import CORPUS_LIMITS, TARGET, Case

ROOT = Path(__file__).resolve().parents[2]
CASES = hostile_corpus.cases()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    return {case.name: path for case, path in hostile_corpus.build(folder)}


def test_corpus_is_large_and_varied() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)
    assert {c.code for c in CASES} == {
        "NOT_FITS",
        "TRUNCATED",
        "BAD_HEADER",
        "NONSTANDARD_HEADER",
        "TOO_MANY_HDUS",
        "TOO_MANY_CARDS",
        "TOO_LARGE",
        "UNSUPPORTED_COMPRESSION",
        "BAD_COMPRESSION",
        "NO_IMAGE_HDU",
        "INVALID_WCS",
    }


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_file_gets_its_code(corpus: dict[str, Path], case: Case) -> None:
    path = corpus[case.name]
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        report = validate_path(path, Target(TARGET), limits=CORPUS_LIMITS)
    finally:
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert not report.ok
    assert report.errors, case.name
    assert report.errors[0].code == case.code, (case.why, report.errors)
    assert all(e.message for e in report.errors)
    assert elapsed < 20.0, f"{case.name} took {elapsed:.1f} s"
    assert peak < 64 << 20, f"{case.name} allocated {peak / 1e6:.0f} MB at its peak"
    # The report renders for both faces.
    report.to_proto()
    json.dumps(report.to_dict())


def test_a_valid_file_of_the_corpus_helpers_passes(tmp_path: Path) -> None:
    """The corpus' breakages are what fails: the unbroken base file is accepted."""
    path = tmp_path / "valid.fits"
    path.write_bytes(hostile_corpus.valid())
    report = validate_path(path, Target(TARGET), limits=CORPUS_LIMITS)
    assert report.ok, report.errors


HWM_CHILD = """
import runpy, sys
sys.argv = ["services.validator", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("services.validator", run_name="__main__")
except SystemExit as exc:
    code = exc.code
for line in open("/proc/self/status"):
    if line.startswith("VmHWM"):
        print("HWM", int(line.split()[1]) // 1024, file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize(
    "name", ["million_cards", "gzip_bomb_streamed", "many_tiny_hdus", "lying_naxis_terabytes", "random_bytes"]
)
def test_check_command_on_the_worst(corpus: dict[str, Path], name: str) -> None:
    """As a process: exit status 1, JSON on stdout, no traceback, bounded resident memory."""
    cap = str(CORPUS_LIMITS.max_decompressed_bytes)
    args = ["check", str(corpus[name]), "--target", "150", "2", "--max-decompressed-bytes", cap]
    proc = subprocess.run(
        [sys.executable, "-c", HWM_CHILD, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    body = json.loads(proc.stdout)
    expected = next(c.code for c in CASES if c.name == name)
    assert body["ok"] is False and body["errors"][0]["code"] == expected
    hwm_mb = int(proc.stderr.rsplit("HWM", 1)[1].split()[0])
    assert hwm_mb < 200, f"{name}: {hwm_mb} MB resident"


def test_the_corpus_script_writes_files_and_manifest(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.validator.hostile_corpus", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert len(manifest) == len(CASES) >= 40
    for name, entry in manifest.items():
        assert (out / name).is_file()
        assert entry["code"] == next(c.code for c in CASES if f"{c.name}.fits" == name)
    usage = subprocess.run(
        [sys.executable, "-m", "tests.validator.hostile_corpus"], cwd=ROOT, capture_output=True, timeout=60
    )
    assert usage.returncode == 2
