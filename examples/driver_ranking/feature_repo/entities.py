"""Entity: the driver Tandem ranks. Every feature view of this repo joins on `driver_id` (INT64)."""

from feast import Entity, ValueType

driver = Entity(
    name="driver",
    join_keys=["driver_id"],
    value_type=ValueType.INT64,
    description="A driver; ids are positive integers (1001, 1002, ...).",
)
