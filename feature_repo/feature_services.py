"""Feature service: the model's inputs. Tandem trains, batch-scores and live-scores on exactly these."""

from customer_profile import customer_profile
from customer_txn_stats import customer_txn_stats
from feast import FeatureService

customer_risk_v1 = FeatureService(
    name="customer_risk_v1",
    features=[customer_profile, customer_txn_stats],
    description="Inputs of the customer fraud-risk model.",
    tags={"model": "customer_risk"},
)
