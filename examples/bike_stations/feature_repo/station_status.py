"""Feature view: each station's hourly status (TTL one day), fed offline and by the push source."""

from datetime import timedelta

from data_sources import station_status_push
from entities import station
from feast import FeatureView, Field
from feast.types import Float32, Float64, Int32

station_status = FeatureView(
    name="station_status",
    entities=[station],
    ttl=timedelta(days=1),
    schema=[
        Field(name="station_id", dtype=Int32),
        Field(name="bikes_available", dtype=Int32),
        Field(name="docks_available", dtype=Int32),
        Field(name="temperature_c", dtype=Float64),
        Field(name="rain_mm", dtype=Float32),
    ],
    online=True,
    source=station_status_push,
    tags={"team": "operations"},
)
