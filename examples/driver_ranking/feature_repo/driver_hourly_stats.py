"""Feature view: each driver's hourly statistics (TTL one day), fed offline and by the push source."""

from datetime import timedelta

from data_sources import driver_stats_push
from entities import driver
from feast import FeatureView, Field
from feast.types import Float32, Int64

driver_hourly_stats = FeatureView(
    name="driver_hourly_stats",
    entities=[driver],
    ttl=timedelta(days=1),
    schema=[
        Field(name="driver_id", dtype=Int64),
        Field(name="conv_rate", dtype=Float32),
        Field(name="acc_rate", dtype=Float32),
        Field(name="avg_daily_trips", dtype=Int64, description="Average daily trips"),
    ],
    online=True,
    # A push source: materialization reads its batch source (the table), pushes write online directly.
    source=driver_stats_push,
    tags={"team": "driver_performance"},
)
