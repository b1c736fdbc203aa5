"""What Tandem needs to know of a feature service, read once from Feast's registry into plain dataclasses.

Batch scoring, the online reader and the skew checker all work from these specs rather than from Feast
objects, so the decision code stays pure and the registry is consulted once per process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from core.errors import ConfigurationError, NotFoundError
from core.features.keys import EntityKey, KeyKind

__all__ = [
    "EntityKey",
    "FeatureSpec",
    "KeyKind",
    "Kind",
    "ServiceSpec",
    "ViewSpec",
    "load_service_spec",
    "load_view_spec",
]

Kind = Literal["float64", "float32", "int64", "int32", "string", "bool"]
"""A feature's value kind: Feast's scalar type, which also fixes its online bytes (`core.online.encoding`)."""

_KEY_KINDS: dict[str, KeyKind] = {"Int64": "int64", "Int32": "int32", "String": "string"}

_KINDS: dict[str, Kind] = {
    "Float64": "float64",
    "Float32": "float32",
    "Int64": "int64",
    "Int32": "int32",
    "String": "string",
    "Bool": "bool",
}


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One feature of a view: its name and value kind."""

    name: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class ViewSpec:
    """One feature view: where its offline rows live and how Feast's point-in-time join treats them."""

    name: str
    table: str  # a table name or a parenthesised query, as Feast's PostgreSQLSource gives it
    key: EntityKey  # the join keys and their Feast types, which fix the online key bytes
    timestamp_field: str
    created_field: str | None
    ttl_s: int  # 0: no TTL
    features: tuple[FeatureSpec, ...]
    push_source: str | None = None  # the push source feeding this view, if any

    @property
    def reads_query(self) -> bool:
        """Whether the batch source is a `query=` (rows can be read, not appended) rather than a `table=`."""
        return self.table.startswith("(")

    def feature(self, name: str) -> FeatureSpec:
        """The named feature, or NotFoundError."""
        for spec in self.features:
            if spec.name == name:
                return spec
        raise NotFoundError(f"feature view {self.name!r} has no feature {name!r}")


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A feature service: its name, the views it reads and its ordered `view:feature` references."""

    name: str
    views: tuple[ViewSpec, ...]
    refs: tuple[str, ...]

    @property
    def key(self) -> EntityKey:
        """The entity key every view of the service shares."""
        return self.views[0].key

    def kinds_of(self, refs: Sequence[str]) -> list[Kind]:
        """The kind of each `view:feature` ref; float64 for one the service lacks (a model reading it then
        fails on its inputs as it would in batch)."""
        kinds = {
            f"{view.name}:{feature.name}": feature.kind for view in self.views for feature in view.features
        }
        return [kinds.get(ref, "float64") for ref in refs]


def load_view_spec(store: Any, name: str, *, features: list[str] | None = None) -> ViewSpec:
    """Read a feature view from the registry; `features` narrows it to a projection."""
    from feast.errors import FeatureViewNotFoundException

    try:
        view = store.get_feature_view(name)
    except FeatureViewNotFoundException:
        raise NotFoundError(f"feature view {name!r} does not exist") from None
    source = view.batch_source
    key = view_entity_key(view)
    if getattr(source, "field_mapping", None):
        raise ConfigurationError(f"feature view {name!r}: sources with a field mapping are not supported")
    wanted = set(features) if features is not None else None
    specs = []
    for field in view.features:
        if wanted is not None and field.name not in wanted:
            continue
        kind = _KINDS.get(str(field.dtype))
        if kind is None:
            raise ConfigurationError(f"feature {name}:{field.name} has type {field.dtype}, not supported")
        specs.append(FeatureSpec(field.name, kind))
    return ViewSpec(
        name=view.name,
        table=source.get_table_query_string(),
        key=key,
        timestamp_field=source.timestamp_field,
        created_field=source.created_timestamp_column or None,
        ttl_s=int(view.ttl.total_seconds()) if view.ttl else 0,
        features=tuple(specs),
        push_source=_push_source_name(view),
    )


def view_entity_key(view: Any) -> EntityKey:
    """A Feast feature view's entity key, or ConfigurationError naming a join key of a type Tandem can't key."""
    pairs: list[tuple[str, KeyKind]] = []
    for column in view.entity_columns:
        kind = _KEY_KINDS.get(str(column.dtype))
        if kind is None:
            raise ConfigurationError(
                f"feature view {view.name!r}: join key {column.name!r} is {column.dtype}; "
                "Tandem serves Int64, Int32 and String join keys"
            )
        pairs.append((column.name, kind))
    if not pairs:
        raise ConfigurationError(f"feature view {view.name!r} has no entity: Tandem needs a join key")
    return EntityKey.of(pairs)


def _push_source_name(view: Any) -> str | None:
    from feast.data_source import PushSource  # lazy import: Feast costs seconds to import

    stream = getattr(view, "stream_source", None)
    return str(stream.name) if isinstance(stream, PushSource) else None


def load_service_spec(store: Any, name: str) -> ServiceSpec:
    """Read a feature service and its views from the registry, or NotFoundError naming it."""
    from feast.errors import FeatureServiceNotFoundException

    try:
        service = store.get_feature_service(name)
    except FeatureServiceNotFoundException:
        known = ", ".join(sorted(s.name for s in store.list_feature_services())) or "none"
        raise NotFoundError(f"feature service {name!r} does not exist (registered: {known})") from None
    views = tuple(
        load_view_spec(store, projection.name, features=[f.name for f in projection.features])
        for projection in service.feature_view_projections
    )
    keys = {view.key for view in views}
    if len(keys) != 1:
        described = "; ".join(sorted(f"{view.name}: {view.key.describe()}" for view in views))
        raise ConfigurationError(
            f"feature service {name!r} mixes entity keys ({described}); every view of a served feature "
            "service must have the same join keys"
        )
    refs = tuple(f"{view.name}:{feature.name}" for view in views for feature in view.features)
    return ServiceSpec(name=name, views=views, refs=refs)
