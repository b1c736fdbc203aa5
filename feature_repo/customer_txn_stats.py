"""Feature view: rolling transaction aggregates (TTL two days), fed offline and by the push source."""

from datetime import timedelta

from data_sources import customer_txn_stats_push
from entities import customer
from feast import FeatureView, Field
from feast.types import Float64, Int64

customer_txn_stats = FeatureView(
    name="customer_txn_stats",
    entities=[customer],
    ttl=timedelta(days=2),
    schema=[
        Field(name="customer_id", dtype=Int64),
        Field(name="txn_count_24h", dtype=Int64),
        Field(name="txn_amount_24h", dtype=Float64),
        Field(name="max_amount_24h", dtype=Float64),
        Field(name="txn_count_7d", dtype=Int64),
        Field(name="avg_amount_30d", dtype=Float64),
        Field(name="foreign_txn_ratio_7d", dtype=Float64),
        Field(name="distinct_merchants_7d", dtype=Int64),
    ],
    online=True,
    # A push source: materialization reads its batch source, pushes write online directly.
    source=customer_txn_stats_push,
    tags={"owner": "tandem", "cadence": "streaming"},
)
