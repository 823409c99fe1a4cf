"""`python -m services.catalog`: serve the catalog on CATALOG_PORT;
`python -m services.catalog migrate`: apply the database migrations and exit
(the Kubernetes init container)."""

from __future__ import annotations

import argparse
import asyncio

from services.catalog.app import run_migrations, serve
from services.shared import logs
from services.shared.settings import CatalogSettings, load


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.catalog")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    settings = load(CatalogSettings)
    logs.configure("catalog", settings.log_level, settings.log_format)
    if args.command == "migrate":
        asyncio.run(run_migrations(settings))
    else:
        asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
