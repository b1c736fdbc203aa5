"""Sources: hourly store traffic and hourly shelf status in PostgreSQL, and a push source for each.

Both tables are written by `examples/store_stock/data.py` (or by your pipelines). Pushed rows
(`POST /v1/push/store_traffic_push`, `POST /v1/push/shelf_status_push`) are appended to these tables by
Tandem before they go online, which is why each push source's batch source names a `table=`.
"""

from feast import PushSource
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

store_traffic_source = PostgreSQLSource(
    name="store_traffic_source",
    table="public.store_traffic",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Footfall, region and average basket per store, hourly.",
)

shelf_status_source = PostgreSQLSource(
    name="shelf_status_source",
    table="public.shelf_status",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Stock, price, promotion and days since the last restock per store and product, hourly.",
)

# Fresh traffic arrives here (POST /v1/push/store_traffic_push): rows carry `store_code`.
store_traffic_push = PushSource(
    name="store_traffic_push",
    batch_source=store_traffic_source,
)

# Fresh shelf status arrives here (POST /v1/push/shelf_status_push): rows carry `store_code` and `sku`.
shelf_status_push = PushSource(
    name="shelf_status_push",
    batch_source=shelf_status_source,
)
