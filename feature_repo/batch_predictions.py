"""Feature view: the demo model's published scores per customer (`customer_risk_predictions`).

Stored predictions are features: the service reads them with the model's inputs in one online read.
Declared with Tandem's helper, as any user's repo does (see docs/own-repo.md).
"""

from entities import customer

from tandem.repo import predictions_view

customer_risk_predictions = predictions_view("customer_risk", entities=[customer])
