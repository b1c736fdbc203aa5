"""Entity: the customer whose card-fraud risk Tandem scores. Every feature view joins on `customer_id`."""

from feast import Entity, ValueType

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="A card holder; ids are positive integers.",
)
