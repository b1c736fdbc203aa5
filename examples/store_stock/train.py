"""Train the `store_visits` model OUTSIDE Tandem, as a team with its own training code would, and save it
with joblib for `tandem models register`.

    eval "$(tandem env)"                       # Feast's variables for the repo's feature_store.yaml
    python examples/store_stock/train.py --out store_visits.joblib

Plain Feast builds the training set: `get_historical_features` joins each row of `public.store_visits` to
the newest `store_traffic` row of its store (a string key) at or before its time (point in time, within the
view's TTL). A scikit-learn pipeline one-hot encodes the categorical `region` (an unknown region encodes as
all zeros), imputes and standardizes the numeric columns, then fits a ridge regression. It is fitted on a
DataFrame whose columns are the feature service's feature names, so the saved model knows them
(`feature_names_in_`) and Tandem checks them against the feature service at registration. The newest fifth
of the visits is held out: R2 and MAE.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import joblib
from feast import FeatureStore
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

__all__ = ["CATEGORICAL", "build_pipeline", "main", "training_frame"]

REPO = Path(__file__).resolve().parent / "feature_repo"
FEATURE_SERVICE = "store_traffic_v1"
LABELS = "SELECT store_code, event_timestamp, visits FROM public.store_visits"
CATEGORICAL = ("region",)


def training_frame(store: FeatureStore, feature_service: str) -> tuple[Any, list[str]]:
    """Every visit label with the service's features as of its time (oldest first), and the feature names."""
    service = store.get_feature_service(feature_service)
    names = [
        feature.name for projection in service.feature_view_projections for feature in projection.features
    ]
    frame = store.get_historical_features(entity_df=LABELS, features=service).to_df()
    frame = frame.dropna(subset=names).sort_values("event_timestamp", kind="stable")
    return frame, names


def build_pipeline(names: list[str]) -> Pipeline:
    """The estimator: `region` one-hot encoded (unknown regions ignored), the numeric columns imputed (a
    feature past its TTL reaches a live score as missing) and standardized, then a ridge regression."""
    numeric = [name for name in names if name not in CATEGORICAL]
    encode = ColumnTransformer(
        [
            ("categories", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL)),
            ("numbers", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ]
    )
    return Pipeline([("encode", encode), ("ridge", Ridge(alpha=1.0))])


def main(argv: list[str] | None = None) -> int:
    """Command line: build the training set, report holdout metrics, refit on everything, save."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("store_visits.joblib"), help="where to save it")
    parser.add_argument("--repo", type=Path, default=REPO, help="the Feast repo (feature_store.yaml)")
    args = parser.parse_args(argv)
    store = FeatureStore(repo_path=str(args.repo))
    frame, names = training_frame(store, FEATURE_SERVICE)
    if len(frame) < 10:
        parser.error(f"only {len(frame)} labelled rows with features: seed the data first (data.py)")
    features = frame[names].copy()
    for name in names:  # strings for the categories, float64 for the numbers
        features[name] = features[name].astype(str if name in CATEGORICAL else "float64")
    target = frame["visits"].astype("float64")
    cut = int(len(frame) * 0.8)
    holdout = build_pipeline(names).fit(features.iloc[:cut], target.iloc[:cut])
    predicted = holdout.predict(features.iloc[cut:])
    r2 = r2_score(target.iloc[cut:], predicted)
    mae = mean_absolute_error(target.iloc[cut:], predicted)
    model = build_pipeline(names).fit(features, target)
    joblib.dump(model, args.out)
    print(  # noqa: T201 - the script's one line of output
        f"trained on {len(frame)} visits ({', '.join(names)}): holdout R2 {r2:.3f}, MAE {mae:.2f}; "
        f"saved {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
