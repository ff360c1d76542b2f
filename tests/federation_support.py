"""The issue-13 setting: ``init --demo`` with the real München and Berlin exports imported beside it."""

from __future__ import annotations

from pathlib import Path

from catalog_support import BERLIN, MUENCHEN, MUENCHEN_KREIS

import knowledge.sync_models  # noqa: F401  (registers the sync tables before create_schema)
from hub.db import create_schema, make_engine, session_scope
from knowledge.catalogue import load_demo
from knowledge.importers import parse_dldb
from knowledge.importers.store import store_batch
from knowledge.regions import load_regions

BERLIN_AREA = "11000"


def federated_db(target: Path) -> str:
    """A database as ``init --demo`` makes it, with München (09162) and Berlin (11000) imported."""
    url = f"sqlite:///{target}"
    engine = make_engine(url)
    try:
        create_schema(engine)
        with session_scope(engine) as session:
            load_regions(session)
        with session_scope(engine) as session:
            load_demo(session)
        muc = parse_dldb(
            MUENCHEN / "services_de.json", MUENCHEN / "locations_de.json", id_prefix="muc", region_ars=MUENCHEN_KREIS
        )
        store_batch(engine, muc, MUENCHEN_KREIS)
        ber = parse_dldb(
            BERLIN / "services_de.json",
            BERLIN / "authority_de.json",
            id_prefix="ber",
            region_ars=BERLIN_AREA,
            topics_path=BERLIN / "topic_de.json",
        )
        store_batch(engine, ber, BERLIN_AREA)
    finally:
        engine.dispose()
    return url
