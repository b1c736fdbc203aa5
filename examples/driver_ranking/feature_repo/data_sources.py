"""Sources: the hourly driver statistics in PostgreSQL, and the push source for fresh statistics.

`public.driver_hourly_stats` is written by `examples/driver_ranking/data.py` (or by your pipelines). Pushed
rows (`POST /v1/push/driver_stats_push`) are appended to that table by Tandem before they go online: a push
source needs a batch source with `table=`, not `query=`.
"""

from feast import PushSource
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

driver_stats_source = PostgreSQLSource(
    name="driver_hourly_stats_source",
    table="public.driver_hourly_stats",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Hourly conversion rate, acceptance rate and daily trips per driver.",
)

# Fresh statistics arrive here (POST /v1/push/driver_stats_push).
driver_stats_push = PushSource(
    name="driver_stats_push",
    batch_source=driver_stats_source,
)
