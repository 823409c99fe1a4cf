"""Operator commands against the catalog of a running pod, fed to its Python on stdin:

    kubectl -n bgimages exec -i deploy/catalog -- python - usage [--reconcile] < deploy/k8s/catalog_admin.py
    kubectl -n bgimages exec -i deploy/catalog -- python - cull [--force]     < deploy/k8s/catalog_admin.py
    kubectl -n bgimages exec -i deploy/catalog -- python - sweep [--min-age S] < deploy/k8s/catalog_admin.py
    kubectl -n bgimages exec -i deploy/catalog -- python - check [--min-age S] < deploy/k8s/catalog_admin.py

It calls the catalog's own gRPC API (GetUsage, Cull, Sweep, CheckConsistency) on the pod's
port with the service credential the pod already holds (SERVICE_TOKEN), and prints the
answer as JSON. `check` exits 1 when the store and the rows disagree (either way).
Nothing is installed in the image for it; it uses the image's generated code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.shared.errors import ServiceError
from services.shared.grpc_client import call, channel


async def run(args: argparse.Namespace) -> dict[str, object]:
    addr = os.environ.get("CATALOG_ADMIN_ADDR") or f"127.0.0.1:{os.environ.get('CATALOG_PORT', '50053')}"
    async with channel(addr, os.environ["SERVICE_TOKEN"]) as ch:
        stub = catalog_pb2_grpc.CatalogServiceStub(ch)
        if args.command == "usage":
            usage = await call(
                stub.GetUsage, catalog_pb2.GetUsageRequest(reconcile=args.reconcile), timeout=600
            )
            return _fields(usage)
        if args.command == "cull":
            culled = await call(stub.Cull, catalog_pb2.CullRequest(force=args.force), timeout=3600)
            return _fields(culled)
        if args.command == "sweep":
            # No --min-age: the catalog's own SWEEP_MIN_AGE_S. 0 means 0.
            request = catalog_pb2.SweepRequest()
            if args.min_age is not None:
                request.min_age_seconds = args.min_age
            swept = await call(stub.Sweep, request, timeout=3600)
            return _fields(swept)
        found = await call(
            stub.CheckConsistency,
            catalog_pb2.CheckConsistencyRequest(min_age_seconds=args.min_age),
            timeout=3600,
        )
        return _fields(found)


def _fields(reply: Message) -> dict[str, object]:
    return MessageToDict(reply, always_print_fields_with_no_presence=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="catalog_admin")
    sub = parser.add_subparsers(dest="command", required=True)
    usage = sub.add_parser("usage", help="bytes stored against capacity and the water marks")
    usage.add_argument("--reconcile", action="store_true", help="recount from the contents table first")
    cull = sub.add_parser("cull", help="cull now (least recently used contents first)")
    cull.add_argument("--force", action="store_true", help="cull to the low mark even under the high mark")
    sweep = sub.add_parser("sweep", help="remove objects no row refers to")
    sweep.add_argument(
        "--min-age", type=int, help="keep objects younger than this (s; default: SWEEP_MIN_AGE_S; 0: none)"
    )
    check = sub.add_parser("check", help="compare the store with the rows both ways; exit 1 if they differ")
    check.add_argument(
        "--min-age", type=int, default=600, help="ignore unheld objects younger than this (s): in flight"
    )
    args = parser.parse_args(argv)
    if getattr(args, "min_age", None) is not None and args.min_age < 0:
        parser.error("--min-age must be 0 or more")
    if not os.environ.get("SERVICE_TOKEN"):
        print("catalog_admin: SERVICE_TOKEN is not set (run it inside a catalog pod)", file=sys.stderr)
        return 2
    try:
        answer = asyncio.run(run(args))
    except ServiceError as err:
        print(f"catalog_admin: {err.code}: {err.message}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2, sort_keys=True))
    unheld, missing = answer.get("unheldObjects") or [], answer.get("missingObjects") or []
    if args.command == "check" and (unheld or missing):
        assert isinstance(unheld, list) and isinstance(missing, list)
        print(
            f"catalog_admin: inconsistent: {len(unheld)} objects nothing holds, "
            f"{len(missing)} objects the rows name are missing",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
