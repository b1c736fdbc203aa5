"""An entity's key: the join keys of a feature view (one, or several for a composite key) and their kinds.

Inside Tandem an entity is named by one plain value, its **entity id**, whatever the key looks like:

- one int64 or int32 join key: the int itself (arrays of ids are int64 numpy arrays, the fast paths);
- one string join key: the string itself;
- several join keys: the canonical JSON text of their values in Feast's order (sorted by join key name),
  e.g. `["DE",42]` for `country` and `store_id` — compact separators, non-ASCII kept as is.

The id's text (`text`) is what PostgreSQL keeps for a stored score; `parse` checks an entity object from a
client (types, int ranges, NUL, encodable strings) and names the field at fault; `parts` and `columns` give
the values back per join key (for Feast's Redis keys and SQL filters). Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["INT_KEY_BOUNDS", "EntityId", "EntityKey", "IntKeyKind", "KeyKind"]

KeyKind = Literal["int64", "int32", "string"]
"""The Feast types a join key can have."""

IntKeyKind = Literal["int64", "int32"]
"""Key kinds with a fixed width."""

EntityId = int | str
"""An entity's id: the int or string of a single join key, or the canonical JSON of a composite key."""

INT_KEY_BOUNDS: dict[str, tuple[int, int]] = {"int64": (-(2**63), 2**63 - 1), "int32": (-(2**31), 2**31 - 1)}
_DIGITS = re.compile(r"-?[0-9]{1,20}")


def _check_string(value: str, where: str) -> str:
    if "\x00" in value:
        raise ValueError(f"{where}: NUL characters are not accepted")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where}: not valid Unicode text (a lone surrogate)") from None
    return value


def key_value(kind: KeyKind, value: object, where: str) -> int | str:
    """`value` when it is a JSON value of the join key's kind (an int in range, or a string), else ValueError
    naming `where`. `"42"`, `42.0` and `true` are not integers; `42` is not a string."""
    if kind == "string":
        if type(value) is not str:
            raise ValueError(f"{where}: expected a string, got {type(value).__name__}")
        return _check_string(value, where)
    if type(value) is not int:
        raise ValueError(f"{where}: expected an integer, got {type(value).__name__}")
    low, high = INT_KEY_BOUNDS[kind]
    if not low <= value <= high:
        raise ValueError(f"{where}: out of {kind} range")
    return value


@dataclass(frozen=True, slots=True)
class EntityKey:
    """The join keys of an entity in Feast's order (sorted by name) and the kind of each."""

    join_keys: tuple[str, ...]
    kinds: tuple[KeyKind, ...]

    def __post_init__(self) -> None:
        if not self.join_keys or len(self.join_keys) != len(self.kinds):
            raise ValueError(f"an entity key needs one kind per join key, got {self.join_keys}, {self.kinds}")
        if list(self.join_keys) != sorted(set(self.join_keys)):
            raise ValueError(f"join keys must be distinct and sorted by name, got {list(self.join_keys)}")

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, KeyKind]]) -> EntityKey:
        """The key of these (join key, kind) pairs, in any order."""
        ordered = sorted(pairs)
        return cls(tuple(name for name, _ in ordered), tuple(kind for _, kind in ordered))

    @classmethod
    def single(cls, join_key: str, kind: KeyKind = "int64") -> EntityKey:
        """A key of one join key."""
        return cls((join_key,), (kind,))

    @property
    def composite(self) -> bool:
        """Whether there are several join keys."""
        return len(self.join_keys) > 1

    @property
    def int_kind(self) -> IntKeyKind | None:
        """The kind of a single int join key (ids are ints, arrays int64); None for other keys."""
        if self.composite or self.kinds[0] == "string":
            return None
        return "int32" if self.kinds[0] == "int32" else "int64"

    @property
    def label(self) -> str:
        """How messages name the key: `driver_id`, or `(country, store_id)`."""
        return self.join_keys[0] if not self.composite else f"({', '.join(self.join_keys)})"

    def describe(self) -> str:
        """`driver_id (int64)`, or `country (string), store_id (int64)`."""
        return ", ".join(f"{name} ({kind})" for name, kind in zip(self.join_keys, self.kinds, strict=True))

    def compose(self, parts: Sequence[object]) -> EntityId:
        """The id of the entity whose join keys have the values `parts` (Feast's order), unchecked."""
        if not self.composite:
            value = parts[0]
            return int(value) if self.kinds[0] != "string" else str(value)  # type: ignore[call-overload]
        return json.dumps(
            [int(v) if k != "string" else str(v) for v, k in zip(parts, self.kinds, strict=True)],  # type: ignore[call-overload]
            ensure_ascii=False,
            separators=(",", ":"),
        )

    def parts(self, entity_id: EntityId) -> tuple[int | str, ...]:
        """The join keys' values of an id, in Feast's order."""
        if not self.composite:
            return (entity_id,)
        values = json.loads(entity_id) if isinstance(entity_id, str) else None
        if not isinstance(values, list) or len(values) != len(self.join_keys):
            raise ValueError(f"{entity_id!r} is not an id of the key {self.label}")
        return tuple(values)

    def parse(self, entity: Mapping[str, Any], where: str) -> EntityId:
        """The id of an entity object from a client (exactly the join keys), or ValueError naming the field."""
        if set(entity) != set(self.join_keys):
            expected = ", ".join(repr(name) for name in self.join_keys)
            raise ValueError(f"{where}: expected exactly the key(s) {expected}, got {sorted(entity)}")
        return self.id_in(entity, where)

    def id_in(self, row: Mapping[str, Any], where: str) -> EntityId:
        """The id of the entity a row names by its join keys (other columns ignored; every join key present),
        or ValueError naming the field at fault."""
        values = [
            key_value(kind, row[name], f"{where}.{name}")
            for name, kind in zip(self.join_keys, self.kinds, strict=True)
        ]
        return self.compose(values)

    def parse_text(self, name: str, raw: str) -> int | str:
        """One join key's value from text (a query parameter), or ValueError naming it."""
        kind = self.kinds[self.join_keys.index(name)]
        if kind == "string":
            return _check_string(raw, name)
        if not _DIGITS.fullmatch(raw):  # int() would also take "+4", "4_2", " 4 " and other digits
            raise ValueError(f"{name}: must be an integer, got {raw[:40]!r}")
        return key_value(kind, int(raw), name)

    def to_object(self, entity_id: EntityId) -> dict[str, int | str]:
        """The entity object of an id: join key -> value."""
        return dict(zip(self.join_keys, self.parts(entity_id), strict=True))

    def text(self, entity_id: EntityId) -> str:
        """The id as PostgreSQL keeps it (decimal for an int key)."""
        return str(entity_id)

    def from_text(self, text: str) -> EntityId:
        """The id from its `text`."""
        return int(text) if self.int_kind is not None else text

    def array(self, ids: Iterable[EntityId] | npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Ids as a numpy array: int64 for a single int key, else object (strings)."""
        if self.int_kind is not None:
            return np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64)
        items = list(ids)
        out = np.empty(len(items), dtype=object)  # filled, not built: np.array would make fixed-width str
        out[:] = items
        return out

    def columns(self, ids: npt.NDArray[Any] | Sequence[EntityId]) -> list[npt.NDArray[Any] | list[Any]]:
        """One column of values per join key (Feast's order) for many ids; an int key's column stays numpy."""
        if not self.composite:
            return [ids if isinstance(ids, np.ndarray) else list(ids)]
        rows = [self.parts(entity_id) for entity_id in (ids.tolist() if isinstance(ids, np.ndarray) else ids)]
        return [[row[i] for row in rows] for i in range(len(self.join_keys))]

    def texts(self, ids: npt.NDArray[Any] | Sequence[EntityId]) -> list[str]:
        """`text` of every id."""
        items = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        return [str(entity_id) for entity_id in items]
