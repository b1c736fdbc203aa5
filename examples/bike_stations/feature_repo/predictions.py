"""Feature view `station_demand_predictions`: model `station_demand`'s published scores per station."""

from entities import station

from tandem.repo import predictions_view

station_demand_predictions = predictions_view("station_demand", entities=[station])
