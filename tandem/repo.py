"""What a user's Feast repo imports from Tandem: the declaration of a model's published scores.

    from tandem.repo import predictions_view
    driver_ranking_predictions = predictions_view("driver_ranking", entities=[driver])

declares the Feast feature view `driver_ranking_predictions` over Tandem's published runs of model
`driver_ranking`, so plain `feast apply` keeps it and `feast feature-views list` shows it. Tandem's batch
path publishes it online; the API reads it with the model's features in one online read. Imports Feast and
nothing of Tandem's running parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from feast import Entity, FeatureView, Field, ValueType
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource
from feast.types import Float64, Int32, Int64, PrimitiveFeastType, String

from core.naming import PREDICTIONS_TAG, predictions_view_name

__all__ = ["predictions_view"]

_KEY_TYPES: dict[ValueType, tuple[PrimitiveFeastType, str]] = {
    ValueType.INT64: (Int64, "int8"),
    ValueType.INT32: (Int32, "int4"),
    ValueType.STRING: (String, "text"),
}


def _join_keys(entities: Sequence[Entity]) -> list[tuple[str, PrimitiveFeastType, str]]:
    """(join key, Feast type, SQL type) per entity, sorted by join key: the order of a composite id."""
    if not entities:
        raise ValueError("predictions_view: needs the entities of the model's feature service")
    keys = []
    for entity in entities:
        dtype = _KEY_TYPES.get(entity.value_type)
        if dtype is None:
            raise ValueError(
                f"predictions_view: entity {entity.name!r} has value type {entity.value_type.name}; "
                "Tandem stores scores of INT64, INT32 and STRING keys"
            )
        keys.append((entity.join_key, *dtype))
    names = [key for key, _, _ in keys]
    if len(set(names)) != len(names):
        raise ValueError(f"predictions_view: join keys repeat: {names}")
    return sorted(keys)


def _key_columns(keys: list[tuple[str, PrimitiveFeastType, str]]) -> str:
    """SQL giving each join key back from `entity_key` (core/features/keys.py: the id's text)."""
    if len(keys) == 1:
        key, _, sql_type = keys[0]
        return f"p.entity_key::{sql_type} AS {key}"
    return ", ".join(
        f"(p.entity_key::jsonb ->> {n})::{sql_type} AS {key}" for n, (key, _, sql_type) in enumerate(keys)
    )


def predictions_view(
    model_name: str, *, entities: Sequence[Entity], ttl: timedelta = timedelta(days=7), schema: str = "tandem"
) -> FeatureView:
    """The Feast view of `model_name`'s published scores (`<model>_predictions`), keyed like `entities`.

    Only rows of runs that finished publishing are visible to Feast. `schema` is where Tandem's tables live.
    """
    name = predictions_view_name(model_name)  # ValueError for a name that can't be a SQL literal
    keys = _join_keys(entities)
    for key, _, _ in keys:
        if not (key.isidentifier() and schema.isidentifier()):
            raise ValueError(
                f"predictions_view: join key {key!r} and schema {schema!r} must be plain identifiers"
            )
    query = (  # every part checked above: identifiers, and a model name of letters, digits and underscores
        f"SELECT {_key_columns(keys)}, p.score, p.model_version, p.run_id::text AS run_id, "  # noqa: S608
        f"p.feature_snapshot_ts, p.scored_at FROM {schema}.batch_predictions p "
        f"JOIN {schema}.prediction_runs r ON r.run_id = p.run_id AND r.status = 'published' "
        f"AND r.model_name = '{model_name}'"
    )
    source = PostgreSQLSource(
        name=f"{name}_source",
        query=query,
        timestamp_field="scored_at",
        description=f"Tandem's published scores of model {model_name}.",
    )
    return FeatureView(
        name=name,
        entities=list(entities),
        ttl=ttl,
        schema=[
            *(Field(name=key, dtype=dtype) for key, dtype, _ in keys),
            Field(name="score", dtype=Float64),
            Field(name="model_version", dtype=String),
            Field(name="run_id", dtype=String),
            Field(name="feature_snapshot_ts", dtype=String),
        ],
        online=True,
        source=source,
        tags={PREDICTIONS_TAG: model_name, "written_by": "tandem batch-predict"},
    )
