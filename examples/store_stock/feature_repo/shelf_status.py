"""Feature view: each product's hourly shelf status in each store (TTL one day), keyed by (store, product)
— a composite key — fed offline and by the push source."""

from datetime import timedelta

from data_sources import shelf_status_push
from entities import product, store
from feast import FeatureView, Field
from feast.types import Bool, Float32, Float64, Int32, Int64, String

shelf_status = FeatureView(
    name="shelf_status",
    entities=[store, product],
    ttl=timedelta(days=1),
    schema=[
        Field(name="store_code", dtype=String),
        Field(name="sku", dtype=Int64),
        Field(name="stock", dtype=Int32, description="Units on the shelf"),
        Field(name="price", dtype=Float64, description="Shelf price, EUR"),
        Field(name="on_promo", dtype=Bool, description="Whether the product is on promotion"),
        Field(name="days_since_restock", dtype=Float32),
    ],
    online=True,
    source=shelf_status_push,
    tags={"team": "supply"},
)
