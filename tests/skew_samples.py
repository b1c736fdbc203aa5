"""For page and API tests: a realistic skew report built from synthetic columns with the checker's own code,
and a small Litestar app mounting the skew controllers as the service does."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import cast

import numpy as np
from litestar import Litestar
from litestar.di import Provide
from litestar.types import Guard
from sqlalchemy import Engine

from consistency.classify import NO_TIME, SKEW_CLASSES, ValueColumn
from consistency.findings import FeatureInput, build_finding
from consistency.stats import Status, Thresholds, worst
from core.features.keys import EntityKey
from core.features.specs import FeatureSpec, ViewSpec
from core.records.skew_models import NewSkewReport
from core.settings import Settings
from service.errors import EXCEPTION_HANDLERS
from service.skew.api import skew_api_controller
from service.skew.pages import SkewPagesController, skew_template_config

__all__ = ["sample_report", "skew_app"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def sample_report(*, entities: int = 2_000, seed: int = 0, skew: float = 0.01) -> NewSkewReport:
    """Two views, five features of every kind; a `skew` share of entities get wrong, missing or stale values."""
    rng = np.random.default_rng(seed)
    watermark = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    ids = np.arange(1, entities + 1, dtype=np.int64)
    event = np.full(entities, _us(watermark - timedelta(minutes=30)), dtype=np.int64)
    specs = {
        "customer_profile": ViewSpec(
            "customer_profile", "t", EntityKey.single("customer_id"), "event_timestamp", None, 3 * 86_400,
            (FeatureSpec("credit_limit", "float64"), FeatureSpec("num_cards", "int64"), FeatureSpec("tier", "string")),
        ),
        "customer_txn_stats": ViewSpec(
            "customer_txn_stats", "t", EntityKey.single("customer_id"), "event_timestamp", None, 2 * 86_400,
            (FeatureSpec("txn_amount_24h", "float64"), FeatureSpec("is_foreign", "bool")),
        ),
    }  # fmt: skip
    values = {
        "credit_limit": ValueColumn.of("float64", rng.lognormal(8, 0.6, entities).tolist()),
        "num_cards": ValueColumn.of("int64", rng.integers(1, 6, entities).tolist()),
        "tier": ValueColumn.of("string", rng.choice(["gold", "silver", "basic"], entities).tolist()),
        "txn_amount_24h": ValueColumn.of("float64", rng.gamma(2.0, 80.0, entities).tolist()),
        "is_foreign": ValueColumn.of("bool", (rng.random(entities) < 0.2).tolist()),
    }
    thresholds = Thresholds.of(Settings())
    findings = []
    totals: dict[str, int] = {}
    for view in specs.values():
        online_us = event.copy()
        bad = rng.random(entities) < skew
        online_us[bad & (rng.random(entities) < 0.2)] -= 86_400_000_000
        online_us[bad & (rng.random(entities) < 0.3)] = NO_TIME
        for feature in view.features:
            expected = values[feature.name]
            online_values = expected.values.copy()
            if feature.kind == "float64":
                online_values[bad] = online_values[bad] * 1.5
            finding, _ = build_finding(
                FeatureInput(
                    view=view,
                    feature=feature,
                    entity_ids=ids,
                    expected=expected,
                    expected_us=event,
                    online=ValueColumn(feature.kind, online_values, expected.null | (online_us == NO_TIME)),
                    online_us=online_us,
                    watermark=watermark,
                ),
                tolerance=1e-6,
                thresholds=thresholds,
            )
            findings.append(finding)
            for name, count in finding.counts.items():
                totals[name] = totals.get(name, 0) + count
    pairs = sum(totals.values())
    skewed = sum(totals.get(name, 0) for name in SKEW_CLASSES)
    parity = {
        "status": "ok",
        "reason": None,
        "tolerance": 1e-9,
        "model_version": "20260101T000000Z-abcdef12",
        "counts": {
            "unchanged": entities - 40,
            "changed": 30,
            "no_stored": 10,
            "other_model": 0,
            "no_live_features": 0,
        },
        "unchanged": {"count": entities - 40, "agree": entities - 40, "disagree": 0, "max_abs_diff": 0.0},
        "changed": {
            "count": 30,
            "mean": 0.01,
            "mean_abs": 0.02,
            "p50_abs": 0.015,
            "p95_abs": 0.05,
            "max_abs": 0.08,
        },
        "flagged": [],
        "run_ids": ["00000000-0000-0000-0000-000000000001"],
    }
    return NewSkewReport(
        feature_service="customer_risk_v1",
        model_name="customer_risk",
        model_version="20260101T000000Z-abcdef12",
        watermark=watermark,
        sample_size=entities,
        entities_checked=entities,
        status=worst([cast(Status, f.status) for f in findings]),
        summary={
            "pairs": pairs,
            "counts": totals,
            "mismatch_rate": skewed / pairs,
            "population": entities * 5,
            "thresholds": {"mismatch_rate_warn": 0.001, "mismatch_rate_breach": 0.01},
            "seconds": {"total": 1.5},
        },
        parity=parity,
        findings=tuple(findings),
        created_at=datetime.now(UTC),
        finished_at=datetime.now(UTC),
    )


def skew_app(engine: Engine, *, write_guards: Sequence[Guard] = ()) -> Litestar:
    """The skew pages and API with the `db_engine` dependency and templates, as the service mounts them."""
    return Litestar(
        route_handlers=[SkewPagesController, skew_api_controller(write_guards=write_guards)],
        dependencies={"db_engine": Provide(lambda: engine, sync_to_thread=False)},
        template_config=skew_template_config(),
        exception_handlers=EXCEPTION_HANDLERS,
    )
