"""Store a parsed catalogue (:class:`~knowledge.importers.dldb.DldbBatch`) for a region.

An import goes through the same path as a sync over HTTP (:mod:`knowledge.sync`): the batch is turned
into a change set, validated object by object, planned against what the region owns, written in one
transaction and recorded as a new catalogue version. So an import is idempotent (the second run finds
nothing to change and makes no version), is audited, and is served to pull consumers by
``GET /api/catalog/{ars}?since=``.

Mapping: services → leistung, offices (DLDB locations) → organisationseinheit, each (service, office)
link → a zustaendigkeit of that service in the region (an override; in its areas when the CSV's
``authority_areas`` lists them: one row per area), a service's online link →
an onlinedienst ``<service id>-online``.

``replace=False`` (the default) adds and updates but never removes; ``replace=True`` makes the region's
catalogue exactly the batch (a snapshot): whatever the region owns that the batch does not have is
removed, including zustaendigkeiten written through the API.
"""

from __future__ import annotations

import sys
from typing import Any

from sqlalchemy.engine import Engine
from tqdm import tqdm

from knowledge.importers.dldb import DldbBatch
from knowledge.sync import (
    MAX_DELETE_SHARE,
    ApplyResult,
    AuditLog,
    ChangeSet,
    check_deletions,
    kb_update,
    parse_changes,
    parse_snapshot,
    plan,
    snapshot_from_rows,
)
from knowledge.sync import execute as execute_plan

__all__ = ["batch_change_set", "store_batch"]


def batch_change_set(batch: DldbBatch, region_ars: str, *, replace: bool = False) -> ChangeSet:
    """The change set of a batch: a snapshot with ``replace``, otherwise writes only."""
    services = [s.model_dump(exclude={"owner_ars", "updated_at", "online_url"}) for s in batch.services]
    authorities = [a.model_dump(exclude={"owner_ars", "is_demo"}) for a in batch.authorities]
    links = [
        {"service_id": s, "level": None, "region_ars": area, "authority_id": a}
        for s, a in batch.links
        for area in batch.link_areas.get((s, a), [region_ars])
    ]
    online = [
        {"id": f"{s.id}-online", "service_id": s.id, "url": s.online_url, "name": ""}
        for s in batch.services
        if s.online_url
    ]
    body = snapshot_from_rows(services, authorities, links, online)
    return parse_snapshot(body) if replace else parse_changes({"write": body})


def store_batch(
    engine: Engine,
    batch: DldbBatch,
    region_ars: str,
    *,
    actor: str = "cli:catalog-import",
    replace: bool = False,
    partial: bool = False,
    dry_run: bool = False,
    progress: bool = False,
    kb: Any = None,
    audit: AuditLog | None = None,
    max_delete_share: float = MAX_DELETE_SHARE,
    force: bool = False,
) -> ApplyResult:
    """Validate, plan and write ``batch`` as the catalogue of ``region_ars``; returns what was done.

    Raises :class:`knowledge.sync.PayloadError` (with per-object errors) when an object is invalid and
    ``partial`` is false; with ``partial`` invalid objects are skipped and listed in the result. With
    ``progress`` a tqdm bar on stderr counts the rows written. ``kb``, if given, is updated in place;
    ``audit``, if given, records the change (the hub passes its audit log). A ``replace`` that would
    delete more than ``max_delete_share`` of the region's objects raises
    :class:`knowledge.sync.DeletionRefused` unless ``force``.
    """
    cs = batch_change_set(batch, region_ars, replace=replace)
    with engine.connect() as conn:
        p = plan(conn, region_ars, cs, partial=partial)
    if dry_run or p.empty:
        return ApplyResult(region_ars, p.base_version, p.base_version, False, dry_run, p)
    check_deletions(p, max_delete_share, force=force)
    total = sum(len(p.added[k]) + len(p.changed[k]) + len(p.removed[k]) for k in p.added)
    with tqdm(
        total=total, desc=f"catalog {region_ars}", unit="rows", file=sys.stderr, disable=not progress
    ) as bar:
        version = execute_plan(engine, p, actor=actor, partial=partial, progress=bar.update, audit=audit)
    result = ApplyResult(region_ars, version, p.base_version, True, False, p, kb_update(engine, p))
    if kb is not None:
        result.kb.apply(kb)
    return result
