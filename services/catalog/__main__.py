"""`python -m services.catalog`: serve the catalog on CATALOG_PORT;
`python -m services.catalog migrate`: apply the database migrations and exit
(the Kubernetes init container)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys

from services.catalog.app import CatalogServer, apply_migrations, database_url, run_migrations
from services.catalog.repository import create_pool
from services.shared import startup
from services.shared.settings import CatalogSettings
from services.shared.store import open_store


async def make(settings: CatalogSettings) -> CatalogServer:
    """The catalog as `python -m services.catalog` serves it: database (migrated), store, server."""
    url = await asyncio.to_thread(database_url, settings)
    await apply_migrations(url)
    pool = await create_pool(url, max_size=settings.db_pool_size)
    store = await asyncio.to_thread(open_store, settings)
    server = CatalogServer(settings, pool, store)
    server.on_stop(pool.close)
    # What start-up made lives as long as the process: keep it out of the
    # collector's full passes, which otherwise show as latency spikes.
    gc.freeze()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.catalog")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    if args.command == "migrate":
        asyncio.run(run_migrations(startup.configure("catalog", CatalogSettings)))
        return 0
    return startup.run("catalog", CatalogSettings, make)


if __name__ == "__main__":
    sys.exit(main())
