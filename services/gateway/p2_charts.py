"""Attaching an OB's new finding charts in p2, never losing one (p2 has no transaction).

Our charts are known by their file names' reserved prefix (PREFIX). Called only once the
whole new set is rendered. Before anything changes: p2 must take changes to the OB (its
status, OB_NOT_EDITABLE otherwise) and the user's own charts plus the new set must fit
p2's limit (TOO_MANY_CHARTS otherwise). Then: copies of our old charts are kept, they are
deleted from the highest index down (p2 numbers charts from 1; the later ones slide down),
and the new ones are added; if a delete or an add fails, what was added is removed and the
old ones are attached again, and the request answers UNAVAILABLE. The user's own charts
are never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from services.gateway.finding_charts import Chart
from services.gateway.p2 import P2Client, P2Context
from services.shared.errors import Code, ServiceError

log = logging.getLogger(__name__)

PREFIX = "p2fc_"
MAX_CHARTS = 5
EDITABLE_STATUSES = ("-", "P")  # service mode: p2 takes chart changes in these


def chart_name(ob_id: int, n: int, kind: str) -> str:
    return f"{PREFIX}{ob_id}_{n}_{kind}.jpg"


async def attach(client: P2Client, ctx: P2Context, token: str, charts: Sequence[Chart]) -> list[str]:
    """Replaces our charts on the OB by `charts`; the names now attached, in p2's order."""
    if ctx.ob_status and ctx.ob_status not in EDITABLE_STATUSES:
        raise ServiceError(
            Code.OB_NOT_EDITABLE,
            f"OB {ctx.ob_id} has status {ctx.ob_status!r}: p2 takes finding charts only in "
            + " or ".join(repr(s) for s in EDITABLE_STATUSES),
        )
    names = await client.chart_names(ctx, token)
    ours = [index for index, name in enumerate(names, start=1) if name.startswith(PREFIX)]
    own = len(names) - len(ours)
    if own + len(charts) > MAX_CHARTS:
        raise ServiceError(
            Code.TOO_MANY_CHARTS,
            f"OB {ctx.ob_id} has {own} finding charts of your own; with these {len(charts)} it would "
            f"pass p2's limit of {MAX_CHARTS}: remove some of yours first",
            own_charts=own,
        )
    old = [(names[index - 1], await client.chart(ctx, token, index)) for index in ours]
    deleted: list[tuple[str, bytes]] = []
    added: list[str] = []
    try:
        for index, copy in zip(reversed(ours), reversed(old), strict=True):
            await client.delete_chart(ctx, token, index)
            deleted.append(copy)
        for n, chart in enumerate(charts, start=1):
            name = chart_name(ctx.ob_id, n, chart.kind)
            await client.add_chart(ctx, token, name, chart.jpeg)
            added.append(name)
    except ServiceError as err:
        await _restore(client, ctx, token, added, list(reversed(deleted)))
        raise ServiceError(
            Code.UNAVAILABLE,
            f"p2 failed while the finding charts were replaced ({err.message}); "
            "the OB's charts are as they were",
        ) from err
    return await client.chart_names(ctx, token)


async def _restore(
    client: P2Client, ctx: P2Context, token: str, added: list[str], deleted: list[tuple[str, bytes]]
) -> None:
    """Removes the charts this call added (from the highest index down) and attaches again
    the old ones it deleted, in their order; what fails here is logged."""
    try:
        names = await client.chart_names(ctx, token)
        for index in range(len(names), 0, -1):
            if names[index - 1] in added:
                await client.delete_chart(ctx, token, index)
        for name, jpeg in deleted:
            await client.add_chart(ctx, token, name, jpeg)
    except ServiceError as err:
        log.error("restoring the finding charts of OB %s failed: %s", ctx.ob_id, err.message)
