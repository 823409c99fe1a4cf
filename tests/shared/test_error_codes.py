"""One catalogue of error codes: the proto enum `bgimages.common.v1.ErrorCode` with its
options. Everything else is derived from it, and these tests fail when anything drifts:
the generated `Code` enum, the domain errors, the gateway's HTTP mapping, the OpenAPI
document, the client's hints, and the services' code (typed members, no string literals)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from bgimages_client.cli import HINTS

from bgimages.common.v1 import common_pb2
from services.gateway import problems
from services.gateway.openapi import error_codes
from services.shared.errors import CATALOGUE, Code, ServiceError, http_status_of, title_of

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = [v.name for v in common_pb2.ErrorCode.DESCRIPTOR.values if v.number != 0]


def test_the_generated_catalogue_is_the_contracts(tmp_path: Path) -> None:
    # The committed generator, run on the compiled proto, writes what the services import.
    out = tmp_path / "codes.py"
    generator = [sys.executable, str(ROOT / "protos/gen_codes.py"), str(out)]
    subprocess.run(generator, check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    assert out.read_text() == (ROOT / "bgimages/common/v1/codes.py").read_text(), "run make protos"
    assert [c.value for c in Code] == CONTRACT
    assert set(CATALOGUE) == set(Code)


@pytest.mark.parametrize("code", list(Code))
def test_each_code_has_a_status_pair_and_a_title(code: Code) -> None:
    spec = CATALOGUE[code]
    assert 400 <= spec.http_status <= 599 and spec.title
    status = grpc.StatusCode[spec.grpc_status]
    assert status is not grpc.StatusCode.OK
    # A client's fault is never a server status, and the other way round.
    server_side = status in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)
    assert server_side == (spec.http_status >= 500 and code not in (Code.BUSY, Code.NOT_SUPPORTED))
    err = ServiceError(code, "x")
    assert (err.http_status, err.grpc_status, err.title) == (spec.http_status, status, spec.title)


def test_a_string_that_is_no_code_is_refused_and_reads_as_internal() -> None:
    with pytest.raises(ValueError):
        ServiceError("NO_SUCH_CODE", "x")  # type: ignore[arg-type]
    assert http_status_of("NO_SUCH_CODE") == 500 and title_of("NO_SUCH_CODE") == "Internal error"


def test_header_codes_are_the_users_fault() -> None:
    for code in (Code.BAD_HEADER, Code.NONSTANDARD_HEADER, Code.TOO_MANY_HDUS, Code.TOO_MANY_CARDS):
        assert http_status_of(code) == 422
        assert ServiceError(code, "x").grpc_status is grpc.StatusCode.INVALID_ARGUMENT


def test_the_openapi_document_lists_exactly_the_catalogue() -> None:
    assert list(error_codes()) == [c.value for c in Code]


def test_the_gateway_maps_http_errors_to_codes_of_that_status() -> None:
    for status, code in problems._HTTP_CODES.items():
        assert CATALOGUE[Code(code)].http_status == status, code
    for code in problems._OPAQUE:
        assert CATALOGUE[Code(code)].http_status >= 500


def test_the_client_explains_every_code() -> None:
    # The client is a package of its own (it cannot import the services): its table is kept equal here.
    assert set(HINTS) == {c.value for c in Code}


def _code_literals(path: Path) -> list[str]:
    names = {c.value for c in Code}
    tree = ast.parse(path.read_text())
    return [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
    ]


def test_services_name_codes_as_typed_members() -> None:
    # `Code.NOT_FOUND`, never "NOT_FOUND": mypy then checks every code the services use.
    found = [hit for path in sorted((ROOT / "services").rglob("*.py")) for hit in _code_literals(path)]
    assert found == []
