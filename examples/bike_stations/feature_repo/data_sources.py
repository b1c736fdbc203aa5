"""Sources: hourly station status and weather in PostgreSQL, and the push source for fresh status.

`public.station_status` is written by `examples/bike_stations/data.py` (or by your pipelines). Pushed rows
(`POST /v1/push/station_status_push`) are appended to that table by Tandem before they go online, which is
why the push source's batch source names a `table=`.
"""

from feast import PushSource
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

station_status_source = PostgreSQLSource(
    name="station_status_source",
    table="public.station_status",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Bikes and docks available, temperature and rain per station, hourly.",
)

# Fresh status arrives here (POST /v1/push/station_status_push).
station_status_push = PushSource(
    name="station_status_push",
    batch_source=station_status_source,
)
