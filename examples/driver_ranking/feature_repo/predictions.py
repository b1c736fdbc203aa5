"""Feature view `driver_ranking_predictions`: model `driver_ranking`'s published scores per driver.

Tandem's batch path writes it; the API reads it with the model's features in one online read.
"""

from entities import driver

from tandem.repo import predictions_view

driver_ranking_predictions = predictions_view("driver_ranking", entities=[driver])
