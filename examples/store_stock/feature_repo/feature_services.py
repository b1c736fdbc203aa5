"""Feature services: the inputs of the two models. Every view of a service has the same join keys."""

from feast import FeatureService
from shelf_status import shelf_status
from store_traffic import store_traffic

# Model `store_visits` (regression, trained outside Tandem by train.py): keyed by store.
store_traffic_v1 = FeatureService(
    name="store_traffic_v1",
    features=[store_traffic],
    description="Inputs of the next-hour store visits model.",
)

# Model `stockout_risk` (classification, trained by `tandem train`): keyed by (store, product).
stockout_v1 = FeatureService(
    name="stockout_v1",
    features=[shelf_status],
    description="Inputs of the stock-out risk model.",
)
