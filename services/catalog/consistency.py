"""The consistency check SREs run (`catalog_admin.py check`): the store against
the rows, both ways. It changes nothing.

- unheld: an object under content/ or staging/ that no content row of its
  generation and no live upload lease holds (what the sweep would remove);
- missing: an object a content row names (the stored FITS, the preview, the
  HiPS `properties` and `Moc.fits`) that the store lacks.
"""

from __future__ import annotations

import dataclasses
import time

from services.catalog.repository import Repository
from services.catalog.sweep import unheld_objects
from services.shared.store import ObjectStore

# A stored HiPS is looked for by its `properties` (which names the rest);
# tiles are not listed one by one.
HIPS_FILES = ("properties",)


@dataclasses.dataclass(frozen=True)
class Consistency:
    unheld: list[str]
    missing: list[str]
    objects_checked: int
    contents_checked: int

    @property
    def consistent(self) -> bool:
        return not self.unheld and not self.missing


async def check(repo: Repository, store: ObjectStore, min_age_s: int = 0) -> Consistency:
    """Unheld objects at least min_age_s old (younger ones may be uploads in
    flight), and every object the rows name but the store lacks."""
    now = time.time()
    unheld = sorted(
        [key async for key, _, modified in unheld_objects(repo, store) if now - modified >= min_age_s]
    )
    present = {info.key async for info in store.list("content/")}
    async with repo.connection() as conn:
        contents = await repo.content_objects(conn)
    missing: list[str] = []
    for row in contents:
        named = [row["fits_key"], row["preview_key"], *(row["hips_prefix"] + f for f in HIPS_FILES)]
        missing.extend(key for key in named if key and key not in present)
    return Consistency(unheld, sorted(missing), len(present), len(contents))
