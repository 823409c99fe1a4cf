"""Writes bgimages/common/v1/codes.py, the typed error catalogue, from the ErrorCode
enum of common.proto and its options (run by `make protos` after protoc).

The proto enum is the one list of codes: this derives the `Code` StrEnum that
services use as typed members (mypy checks them) and the table of each code's
gRPC status, HTTP status and title.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import grpc

from bgimages.common.v1 import common_pb2

HEADER = '''"""The error catalogue, generated from bgimages.common.v1.ErrorCode by
protos/gen_codes.py (`make protos`): do not edit."""

from enum import StrEnum
from typing import NamedTuple


class Code(StrEnum):
    """A stable error code: the name of a bgimages.common.v1.ErrorCode value."""

'''

SPEC = '''

class CodeSpec(NamedTuple):
    grpc_status: str  # a grpc.StatusCode name (this module imports nothing but the standard library)
    http_status: int
    title: str


CATALOGUE: dict[Code, CodeSpec] = {
'''


def main(out: Path) -> None:
    enum = common_pb2.DESCRIPTOR.enum_types_by_name["ErrorCode"]
    members, rows = [], []
    for value in enum.values:
        if value.number == 0:
            continue
        opts = value.GetOptions()
        grpc_name = opts.Extensions[common_pb2.grpc_status]
        http = opts.Extensions[common_pb2.http_status]
        title = opts.Extensions[common_pb2.title]
        if not (grpc_name and http and title):
            sys.exit(f"ErrorCode {value.name} lacks grpc_status, http_status or title")
        if grpc_name not in grpc.StatusCode.__members__:
            sys.exit(f"ErrorCode {value.name}: {grpc_name} is not a gRPC status")
        if not 400 <= http <= 599:
            sys.exit(f"ErrorCode {value.name}: HTTP status {http} is not an error")
        members.append(f"    {value.name} = \"{value.name}\"\n")
        rows.append(f"    Code.{value.name}: CodeSpec({json.dumps(grpc_name)}, {http}, {json.dumps(title)}),\n")
    out.write_text(HEADER + "".join(members) + SPEC + "".join(rows) + "}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
