"""Feature view: Tandem's stored batch score per customer, published by `tandem batch-predict`.

Stored predictions are features: the service reads them with the model's inputs in one online read.
`feature_snapshot_ts` is a JSON object {feature view: event time of the row the score used}.
"""

from datetime import timedelta

from data_sources import batch_predictions_source
from entities import customer
from feast import FeatureView, Field
from feast.types import Float64, Int64, String

batch_predictions = FeatureView(
    name="batch_predictions",
    entities=[customer],
    ttl=timedelta(days=7),
    schema=[
        Field(name="customer_id", dtype=Int64),
        Field(name="score", dtype=Float64),
        Field(name="model_version", dtype=String),
        Field(name="run_id", dtype=String),
        Field(name="feature_snapshot_ts", dtype=String),
    ],
    online=True,
    source=batch_predictions_source,
    tags={"owner": "tandem", "written_by": "tandem batch-predict"},
)
