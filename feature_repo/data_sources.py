"""Sources: where each feature view's offline rows live in PostgreSQL, and the push source for fresh events.

The `features.*` tables are written by `tandem seed` (demo data) or by your pipelines; pushed rows are
appended to `features.customer_txn_stats` by Tandem's push endpoint before they go online.
"""

from feast import PushSource
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

customer_profile_source = PostgreSQLSource(
    name="customer_profile_source",
    table="features.customer_profile",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Daily snapshot of each customer's account profile.",
)

customer_txn_stats_source = PostgreSQLSource(
    name="customer_txn_stats_source",
    table="features.customer_txn_stats",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Rolling transaction aggregates per customer.",
)

# Fresh transaction aggregates arrive here (POST /v1/push/customer_txn_stats_push).
customer_txn_stats_push = PushSource(
    name="customer_txn_stats_push",
    batch_source=customer_txn_stats_source,
)
