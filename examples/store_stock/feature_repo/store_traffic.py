"""Feature view: each store's hourly traffic (TTL one day), keyed by the store alone, fed offline and by
the push source. `region` is a categorical feature: the model encodes it itself."""

from datetime import timedelta

from data_sources import store_traffic_push
from entities import store
from feast import FeatureView, Field
from feast.types import Float32, Int64, String

store_traffic = FeatureView(
    name="store_traffic",
    entities=[store],
    ttl=timedelta(days=1),
    schema=[
        Field(name="store_code", dtype=String),
        Field(name="footfall", dtype=Int64, description="Visitors counted in the hour"),
        Field(name="region", dtype=String, description="Sales region: north, south, east, west or alps"),
        Field(name="avg_basket", dtype=Float32, description="Average basket in the hour, EUR"),
    ],
    online=True,
    source=store_traffic_push,
    tags={"team": "retail"},
)
