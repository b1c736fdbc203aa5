"""Feature service: the inputs of model `driver_ranking`. Tandem trains, batch-scores and live-scores on them."""

from driver_hourly_stats import driver_hourly_stats
from feast import FeatureService

driver_activity_v1 = FeatureService(
    name="driver_activity_v1",
    features=[driver_hourly_stats],
    description="Inputs of the driver-ranking model.",
)
