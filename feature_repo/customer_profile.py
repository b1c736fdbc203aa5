"""Feature view: the customer's account profile, one snapshot a day (TTL three days)."""

from datetime import timedelta

from data_sources import customer_profile_source
from entities import customer
from feast import FeatureView, Field
from feast.types import Float64, Int64

customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=timedelta(days=3),
    schema=[
        Field(name="customer_id", dtype=Int64),
        Field(name="account_age_days", dtype=Int64),
        Field(name="credit_limit", dtype=Float64),
        Field(name="credit_utilization", dtype=Float64),
        Field(name="num_cards", dtype=Int64),
        Field(name="has_2fa", dtype=Int64),
        Field(name="country_risk", dtype=Float64),
    ],
    online=True,
    source=customer_profile_source,
    tags={"owner": "tandem", "cadence": "daily"},
)
