"""The access rules of DESIGN.md, "Who may list, use and display an image".

| rule        | statement                                                            |
|-------------|----------------------------------------------------------------------|
| upload      | needs access(U, R) for the OB's run R; O(I) = U, A(I) = {R}          |
| list        | U = O(I), or access(U, r) for some r in A(I); and I fits the OB      |
| use         | access(U, X) for the OB's run X, U may list I, and I fits the OB     |
| association | a use by the owner adds X to A(I); a use by anyone else adds nothing |
| display     | the list rule, or access(U, X) where an OB of X has I selected       |
| delete      | only O(I)                                                            |

access(U, R): U owns R or is a Phase 2 delegate of R; "the runs of U" are
those p2 gave for the request (Caller.runs) or else those SetRun stored.
The list rule runs in SQL (repository.LISTABLE); this module decides what
a request may do from the OB context the repository reads in one query.
"""

from __future__ import annotations

import dataclasses

import asyncpg

from services.catalog.model import Caller, ImageView, ObRef, SelectionKind, instance_of
from services.shared.errors import Code, ServiceError


@dataclasses.dataclass(frozen=True)
class ObContext:
    """What the catalog knows of an OB and the caller's access to its run."""

    run_known: bool
    has_access: bool
    pinned_run: str | None
    sel_kind: SelectionKind
    sel_value: str
    sel_image_id: int | None

    @classmethod
    def of(cls, row: asyncpg.Record) -> ObContext:
        return cls(
            run_known=row["run_known"],
            has_access=row["has_access"],
            pinned_run=row["pinned_run"],
            sel_kind=SelectionKind(row["sel_kind"] or SelectionKind.DEFAULT),
            sel_value=row["sel_value"] or "",
            sel_image_id=row["sel_image_id"],
        )


def check_same_instance(caller: Caller, run_id: str) -> None:
    """A run named with an OB must come from the caller's p2 instance: the
    OB is looked up (and pinned) under the caller's instance, so a run of
    another instance is a malformed request, refused before anything is read."""
    run_instance, user_instance = instance_of(run_id), caller.instance
    if run_instance != user_instance:
        raise ServiceError(
            Code.INVALID_ARGUMENT,
            f"run {run_id!r} is not of the caller's p2 instance: the run's id is namespaced "
            f"{run_instance!r}, the user {caller.user_id!r} is namespaced {user_instance!r}",
            run_id=run_id,
            user_id=caller.user_id,
        )


def check_run_access(ctx: ObContext, caller: Caller, ob: ObRef) -> None:
    """access(U, R) for the run the request names, and the OB's pin.

    Unknown run (when runs come from SetRun): UNKNOWN_RUN; no access:
    FORBIDDEN; the OB pinned to another run: RUN_MISMATCH.
    """
    if caller.runs is None and not ctx.run_known:
        raise ServiceError(Code.UNKNOWN_RUN, f"unknown run {ob.run_id!r}", run_id=ob.run_id)
    if not ctx.has_access:
        raise ServiceError(
            Code.FORBIDDEN, f"{caller.user_id} has no access to run {ob.run_id!r}", run_id=ob.run_id
        )
    if ctx.pinned_run is not None and ctx.pinned_run != ob.run_id:
        raise ServiceError(
            Code.RUN_MISMATCH,
            f"OB {ob.ob_id} belongs to run {ctx.pinned_run!r}, not {ob.run_id!r}",
            ob_id=ob.ob_id,
            run_id=ctx.pinned_run,
        )


def check_pinned_access(ctx: ObContext, caller: Caller, ob_id: int) -> None:
    """access(U, X) for the run OB ob_id is pinned to (display rule)."""
    if ctx.pinned_run is None:
        raise ServiceError(Code.NOT_FOUND, f"unknown OB {ob_id}", ob_id=ob_id)
    if not ctx.has_access:
        raise ServiceError(
            Code.FORBIDDEN, f"{caller.user_id} has no access to the run of OB {ob_id}", ob_id=ob_id
        )


def may_delete(caller: Caller, image: ImageView) -> None:
    """Delete: only the owner (the image is one the caller may list)."""
    if image.owner_id != caller.user_id:
        raise ServiceError(Code.FORBIDDEN, "only the image's owner may delete it", fits_hash=image.fits_hash)


def adds_association(caller: Caller, image: ImageView) -> bool:
    """Association: a use by the owner adds the OB's run to A(I); nobody else's does."""
    return image.owner_id == caller.user_id


def not_found(fits_hash: str) -> ServiceError:
    """An image the caller may not list: its existence is not told."""
    return ServiceError(Code.NOT_FOUND, f"no image {fits_hash} for this user", fits_hash=fits_hash)
