"""`python -m services.catalog`: serve the catalog on CATALOG_PORT."""

from __future__ import annotations

import asyncio

from services.catalog.app import serve
from services.shared import logs
from services.shared.settings import CatalogSettings, load


def main() -> None:
    settings = load(CatalogSettings)
    logs.configure("catalog", settings.log_level, settings.log_format)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
