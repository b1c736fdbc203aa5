"""A model's inputs against its feature service: names map to refs in the model's order, counts must match,
and every mismatch is one line naming what is missing or extra."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from core.errors import InvalidModelError
from core.model.inputs import check_input_names, fitted_feature_names, model_feature_refs
from core.model.tasks import check_estimator, parse_task

SERVICE_REFS = ("profile:age", "profile:limit", "txn:count_24h", "txn:amount_24h")


def _fitted(columns: list[str] | int) -> LogisticRegression:
    rng = np.random.default_rng(0)
    width = columns if isinstance(columns, int) else len(columns)
    x = rng.normal(size=(200, width))
    y = (x[:, 0] > 0).astype(int)
    data = x if isinstance(columns, int) else pd.DataFrame(x, columns=columns)
    return LogisticRegression().fit(data, y)


def test_named_columns_map_to_refs_in_the_models_own_order() -> None:
    """A model fitted on a subset of the service's features, shuffled, reads those refs in its own order."""
    model = make_pipeline(StandardScaler(), LogisticRegression())
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(100, 3)), columns=["amount_24h", "age", "count_24h"])
    model.fit(frame, (frame["age"] > 0).astype(int))
    refs = model_feature_refs(model, SERVICE_REFS, feature_service="risk")
    assert refs == ("txn:amount_24h", "profile:age", "txn:count_24h")
    assert fitted_feature_names(model) == ("amount_24h", "age", "count_24h")
    check_input_names(model, refs)  # the registry accepts exactly these refs
    with pytest.raises(InvalidModelError, match="not its feature refs' names in order"):
        check_input_names(model, SERVICE_REFS[:3])


def test_a_column_the_service_lacks_is_named_in_one_line() -> None:
    """An extra column: InvalidModelError naming it and the service, on one line."""
    model = _fitted(["age", "zip_code", "limit"])
    with pytest.raises(InvalidModelError) as raised:
        model_feature_refs(model, SERVICE_REFS, feature_service="risk")
    message = str(raised.value)
    assert "zip_code" in message
    assert "'risk'" in message
    assert "\n" not in message


def test_a_matrix_model_must_take_as_many_columns_as_the_service_has() -> None:
    """Fitted on a matrix: the count must equal the service's; equal counts read the service's order."""
    assert model_feature_refs(_fitted(4), SERVICE_REFS, feature_service="risk") == SERVICE_REFS
    with pytest.raises(InvalidModelError, match=r"takes 3 input columns but feature service 'risk' has 4"):
        model_feature_refs(_fitted(3), SERVICE_REFS, feature_service="risk")


def test_a_name_held_by_two_views_is_ambiguous() -> None:
    """Two views with the same feature name: the model's column name cannot pick one, so it is refused."""
    refs = (*SERVICE_REFS, "other:age")
    with pytest.raises(InvalidModelError, match="several views"):
        model_feature_refs(_fitted(["age", "limit"]), refs, feature_service="risk")


def test_unfitted_non_binary_and_wrong_task_estimators_are_refused() -> None:
    """Unfitted, three classes, a regressor as a classifier, an unknown task: one line each."""
    with pytest.raises(InvalidModelError, match="not fitted"):
        check_estimator(LogisticRegression(), "classification")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(90, 2))
    three = LogisticRegression().fit(x, np.arange(90) % 3)
    with pytest.raises(InvalidModelError, match="3 classes"):
        check_estimator(three, "classification")
    check_estimator(three, "regression")  # anything with predict can serve as a regressor
    from sklearn.linear_model import Ridge

    with pytest.raises(InvalidModelError, match="no predict_proba"):
        check_estimator(Ridge().fit(x, x[:, 0]), "classification")
    with pytest.raises(InvalidModelError, match="unknown task 'ranking'"):
        parse_task("ranking")
    with pytest.raises(InvalidModelError, match="not a scikit-learn estimator"):
        check_estimator(object(), "regression")
