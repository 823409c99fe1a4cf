"""Operator commands against the catalog of a running pod, fed to its Python on stdin:

    kubectl -n bgimages exec -i deploy/catalog -- python - usage [--reconcile] < deploy/k8s/catalog_admin.py
    kubectl -n bgimages exec -i deploy/catalog -- python - cull [--force]     < deploy/k8s/catalog_admin.py
    kubectl -n bgimages exec -i deploy/catalog -- python - sweep [--min-age S] < deploy/k8s/catalog_admin.py

It calls the catalog's own gRPC API (GetUsage, Cull, Sweep) on the pod's port with the
service credential the pod already holds (SERVICE_TOKEN), and prints the answer as JSON.
Nothing is installed in the image for it; it uses the image's generated code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from google.protobuf.json_format import MessageToDict

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.shared.errors import ServiceError
from services.shared.grpc_edge import call, channel


async def run(args: argparse.Namespace) -> dict[str, object]:
    addr = os.environ.get("CATALOG_ADMIN_ADDR") or f"127.0.0.1:{os.environ.get('CATALOG_PORT', '50053')}"
    async with channel(addr, os.environ["SERVICE_TOKEN"]) as ch:
        stub = catalog_pb2_grpc.CatalogServiceStub(ch)
        if args.command == "usage":
            reply = await call(
                stub.GetUsage, catalog_pb2.GetUsageRequest(reconcile=args.reconcile), timeout=600
            )
        elif args.command == "cull":
            reply = await call(stub.Cull, catalog_pb2.CullRequest(force=args.force), timeout=3600)
        else:
            reply = await call(
                stub.Sweep, catalog_pb2.SweepRequest(min_age_seconds=args.min_age), timeout=3600
            )
    return MessageToDict(reply, always_print_fields_with_no_presence=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="catalog_admin")
    sub = parser.add_subparsers(dest="command", required=True)
    usage = sub.add_parser("usage", help="bytes stored against capacity and the water marks")
    usage.add_argument("--reconcile", action="store_true", help="recount from the contents table first")
    cull = sub.add_parser("cull", help="cull now (least recently used contents first)")
    cull.add_argument("--force", action="store_true", help="cull to the low mark even under the high mark")
    sweep = sub.add_parser("sweep", help="remove objects no row refers to")
    sweep.add_argument("--min-age", type=int, default=3600, help="keep objects younger than this (s)")
    args = parser.parse_args(argv)
    if not os.environ.get("SERVICE_TOKEN"):
        print("catalog_admin: SERVICE_TOKEN is not set (run it inside a catalog pod)", file=sys.stderr)
        return 2
    try:
        print(json.dumps(asyncio.run(run(args)), indent=2, sort_keys=True))
    except ServiceError as err:
        print(f"catalog_admin: {err.code}: {err.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
