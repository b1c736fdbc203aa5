"""Feature service: the inputs of model `station_demand`, trained outside Tandem by `train.py`."""

from feast import FeatureService
from station_status import station_status

station_demand_v1 = FeatureService(
    name="station_demand_v1",
    features=[station_status],
    description="Inputs of the next-hour rentals model.",
)
