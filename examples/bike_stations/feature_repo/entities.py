"""Entity: a bike-share station. Every feature view of this repo joins on `station_id` (INT32)."""

from feast import Entity, ValueType

station = Entity(
    name="station",
    join_keys=["station_id"],
    value_type=ValueType.INT32,
    description="A docking station; ids are positive integers (101, 102, ...).",
)
