"""Feature views `store_visits_predictions` (per store) and `stockout_risk_predictions` (per store and
product): the two models' published scores, keyed like their feature services."""

from entities import product, store

from tandem.repo import predictions_view

store_visits_predictions = predictions_view("store_visits", entities=[store])
stockout_risk_predictions = predictions_view("stockout_risk", entities=[store, product])
