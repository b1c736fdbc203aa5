"""Entities: a store (join key `store_code`, STRING) and a product (join key `sku`, INT64).

View `store_traffic` joins on the store alone; view `shelf_status` on both, a composite key. Tandem names
a composite entity by the values of its join keys in join-key-name order (`sku`, then `store_code`).
"""

from feast import Entity, ValueType

store = Entity(
    name="store",
    join_keys=["store_code"],
    value_type=ValueType.STRING,
    description="A shop; codes are text such as 'S-007' or 'Zürich-1' (UTF-8).",
)

product = Entity(
    name="product",
    join_keys=["sku"],
    value_type=ValueType.INT64,
    description="A product sold in every store; SKUs are positive integers (4001, 4002, ...).",
)
