"""The project's keys on a real Redis: `OnlineStore.entity_ids` finds the entities of a key shape, and
`purge` deletes the project's keys only (never those of a project whose name ends with this one's)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np

from core.features.keys import EntityId, EntityKey
from core.online.rows import FeatureColumn, FeatureRows
from core.online.store import OnlineStore
from core.stores.resolve import Stores

COMPOSITE = EntityKey.of([("store_code", "string"), ("sku", "int64")])


def _rows(key: EntityKey, ids: list[EntityId]) -> FeatureRows:
    return FeatureRows(
        view="shelf",
        key=key,
        entity_ids=key.array(ids),
        columns=(FeatureColumn("stock", "int64", np.arange(len(ids), dtype=np.int64)),),
        event_timestamps=datetime.now(UTC),
    )


def test_entity_ids_and_purge_stay_inside_the_project(stores: Stores) -> None:
    project = f"p{uuid.uuid4().hex[:8]}*?["  # glob characters in a project name match only themselves
    mine = OnlineStore.connect(stores.redis, project=project)
    other = OnlineStore.connect(stores.redis, project="x" + project)
    try:
        composite_ids = [COMPOSITE.compose([n, f"S-{n}"]) for n in range(30)] + ['[7,"Zürich-1"]']
        mine.write(_rows(COMPOSITE, composite_ids))
        mine.write(_rows(EntityKey.single("sku"), [0, 1, 2, 3, 4]))
        other.write(_rows(COMPOSITE, composite_ids[:10]))
        assert sorted(mine.entity_ids(COMPOSITE, limit=10_000)) == sorted(composite_ids)
        assert sorted(mine.entity_ids(EntityKey.single("sku"), limit=10_000)) == list(range(5))
        assert mine.purge() == len(composite_ids) + 5
        assert mine.entity_ids(COMPOSITE, limit=10_000) == []
        assert len(other.entity_ids(COMPOSITE, limit=10_000)) == 10
    finally:
        other.purge()
        mine.close()
        other.close()
