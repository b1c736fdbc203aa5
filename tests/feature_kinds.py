"""One feature of every kind Tandem writes (float64, float32, int64, int32, bool, string): the columns the
push and stream tests run every encoder and COPY path over."""

from __future__ import annotations

from core.features.specs import FeatureSpec

__all__ = ["EVERY_KIND"]

EVERY_KIND = (
    FeatureSpec("a", "float64"),
    FeatureSpec("b", "float32"),
    FeatureSpec("c", "int64"),
    FeatureSpec("d", "int32"),
    FeatureSpec("e", "bool"),
    FeatureSpec("f", "string"),
)
