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

# Stored batch scores: only rows of runs that finished publishing are visible to Feast.
batch_predictions_source = PostgreSQLSource(
    name="batch_predictions_source",
    query=(
        "SELECT p.entity_id AS customer_id, p.score, p.model_version, p.run_id::text AS run_id, "
        "p.feature_snapshot_ts, p.scored_at "
        "FROM tandem.batch_predictions p "
        "JOIN tandem.prediction_runs r ON r.run_id = p.run_id AND r.status = 'published'"
    ),
    timestamp_field="scored_at",
    description="Tandem's published batch predictions (written by `tandem batch-predict`).",
)
