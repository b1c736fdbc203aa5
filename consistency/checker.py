"""The skew check: expected online values from the offline store vs what the online store serves, per entity.

1. Validate: a positive sample size; the feature service exists (NotFoundError); every view of it has been
   materialized (else TandemError: nothing to compare against yet).
2. Watermark per view: the latest materialization end Feast recorded (`core.features.watermarks`).
3. Population: every entity with a row at or before its view's watermark; a random sample of it (`seed`
   for a repeatable one), or all of it.
4. Expected rows: Feast's point-in-time row per view as of that view's watermark, TTL included
   (`consistency.offline_sample`), read while the online rows are fetched (`consistency.online_sample`).
5. Per feature: classes, mismatch rate, differences, PSI / JS, examples (`consistency.findings`).
6. Prediction parity: stored batch score vs a live re-score now (`consistency.parity`).
7. One report row and its findings in one transaction; Prometheus gauges (`core.records.skew_metrics`).

Report status: the worst feature status, and `breach` when parity is breached.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import psycopg
from sqlalchemy.orm import Session

from consistency.classify import CLASSES, SKEW_CLASSES, ValueColumn
from consistency.findings import FeatureInput, build_finding
from consistency.offline_sample import ExpectedView, entity_population, expected_view_rows
from consistency.online_sample import OnlineSample, read_online_sample
from consistency.parity import compute_parity, skipped_parity
from consistency.stats import Status, Thresholds, worst
from core.errors import ConfigurationError, NotFoundError, TandemError
from core.features.registry import registry_schema
from core.features.snapshots import service_specs
from core.features.specs import ServiceSpec
from core.features.watermarks import materialization_watermarks
from core.model.promoted import promoted_models
from core.model.registry import load_model
from core.online.store import OnlineStore
from core.online.wire import ReadLayout
from core.records.skew_metrics import record_skew_metrics
from core.records.skew_models import FindingInfo, NewSkewReport, SkewReportInfo
from core.records.skew_reports import save_report
from core.settings import Settings
from core.stores.database import create_db_engine
from core.stores.resolve import Stores

__all__ = ["Progress", "choose_sample", "run_skew_check", "validate_sample"]

Progress = Callable[[str], None]
"""progress(stage): called when a stage starts."""


def validate_sample(sample: int | None, *, all_entities: bool) -> int | None:
    """The sample size to use (None: every entity); ConfigurationError for a size below 1."""
    if all_entities or sample is None:
        return None
    if sample <= 0:
        raise ConfigurationError(f"sample size must be a positive number of entities, got {sample}")
    return sample


def choose_sample(population: npt.NDArray[Any], size: int | None, *, seed: int | None) -> npt.NDArray[Any]:
    """`size` distinct ids drawn uniformly from `population` (all of it when None or larger), sorted."""
    if size is None or size >= len(population):
        return np.sort(population)
    chosen = np.random.default_rng(seed).choice(population, size=size, replace=False)
    return np.sort(chosen.astype(population.dtype))


def _watermarks(
    conn: psycopg.Connection[Any], settings: Settings, stores: Stores, spec: ServiceSpec
) -> dict[str, datetime]:
    found = materialization_watermarks(
        conn,
        project=settings.feast_project,
        views=[view.name for view in spec.views],
        schema=registry_schema(settings, stores),
    )
    never = [view for view, moment in found.items() if moment is None]
    if never:
        raise TandemError(
            f"feature view(s) {', '.join(never)} of feature service {spec.name!r} have never been "
            "materialized: run `tandem materialize` first, then check skew"
        )
    return {view: moment for view, moment in found.items() if moment is not None}


def _expected(
    url: str,
    spec: ServiceSpec,
    watermarks: dict[str, datetime],
    ids: npt.NDArray[Any],
    *,
    everyone: bool,
) -> dict[str, ExpectedView]:
    with psycopg.connect(url) as conn:
        return {
            view.name: expected_view_rows(
                conn, view, as_of=watermarks[view.name], entity_ids=ids, restrict=not everyone
            )
            for view in spec.views
        }


def _batch_inputs(
    url: str, spec: ServiceSpec
) -> Callable[[npt.NDArray[Any], datetime], dict[str, ValueColumn]]:
    def read(ids: npt.NDArray[Any], as_of: datetime) -> dict[str, ValueColumn]:
        with psycopg.connect(url) as conn:
            return {
                f"{view.name}:{name}": column
                for view in spec.views
                for name, column in expected_view_rows(
                    conn, view, as_of=as_of, entity_ids=ids
                ).columns.items()
            }

    return read


def _findings(
    settings: Settings,
    spec: ServiceSpec,
    ids: npt.NDArray[Any],
    expected: dict[str, ExpectedView],
    online: OnlineSample,
    watermarks: dict[str, datetime],
) -> tuple[list[FindingInfo], dict[str, int]]:
    thresholds = Thresholds.of(settings)
    findings: list[FindingInfo] = []
    totals: dict[str, int] = dict.fromkeys(map(str, CLASSES), 0)
    for view in spec.views:
        for feature in view.features:
            finding, _ = build_finding(
                FeatureInput(
                    view=view,
                    feature=feature,
                    entity_ids=ids,
                    expected=expected[view.name].columns[feature.name],
                    expected_us=expected[view.name].event_us,
                    online=online.columns[f"{view.name}:{feature.name}"],
                    online_us=online.event_us[view.name],
                    watermark=watermarks[view.name],
                ),
                tolerance=settings.value_tolerance,
                thresholds=thresholds,
            )
            findings.append(finding)
            for name, count in finding.counts.items():
                totals[name] += count
    return findings, totals


def _parity(
    model_name: str, stores: Stores, session: Session, spec: ServiceSpec, online: OnlineSample
) -> tuple[dict[str, Any], str | None]:
    try:
        model = load_model(session, model_name=model_name)
    except NotFoundError as exc:
        return skipped_parity(str(exc)), None
    parity = compute_parity(
        model=model,
        service=spec,
        rows=online.rows,
        now=datetime.now(UTC),
        batch_inputs=_batch_inputs(stores.postgres.url(), spec),
    )
    return parity, model.version


def run_skew_check(
    settings: Settings,
    stores: Stores,
    *,
    model_name: str,
    sample: int | None = 10_000,
    all_entities: bool = False,
    seed: int | None = None,
    job_run_id: int | None = None,
    progress: Progress | None = None,
) -> SkewReportInfo:
    """Check a random sample of entities (or all of them) of the promoted model `model_name`'s feature
    service, save the report, set the metrics; see above."""
    size = validate_sample(sample, all_entities=all_entities)
    started_at = datetime.now(UTC)
    timings: dict[str, float] = {}
    mark = clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timings[stage] = round(now - mark, 4)
        mark = now
        if progress is not None:
            progress(stage)

    engine = create_db_engine(stores.postgres, pool_size=1)
    try:
        with Session(engine) as session:
            (model,) = promoted_models(session, [model_name])  # NotFoundError naming it
    finally:
        engine.dispose()
    spec, predictions = service_specs(
        settings, stores, feature_service=model.feature_service, predictions_view=model.predictions_view
    )
    url = stores.postgres.url()
    with psycopg.connect(url) as conn:
        watermarks = _watermarks(conn, settings, stores, spec)
        population = entity_population(conn, as_of={v.name: (v, watermarks[v.name]) for v in spec.views})
    if len(population) == 0:
        raise TandemError(f"no entity of feature service {spec.name!r} has a feature row up to the watermark")
    ids = choose_sample(population, size, seed=seed)
    everyone = len(ids) == len(population)
    lap("sample")
    layout = ReadLayout(project=settings.feast_project, service=spec, predictions=predictions)
    store = OnlineStore.connect(stores.redis, project=settings.feast_project)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(_expected, url, spec, watermarks, ids, everyone=everyone)
            online = read_online_sample(store, layout, ids)
            lap("online")
            expected = pending.result()
            lap("offline")
    finally:
        store.close()
    findings, totals = _findings(settings, spec, ids, expected, online, watermarks)
    lap("classify")
    engine = create_db_engine(stores.postgres, pool_size=1)
    try:
        with Session(engine) as session:
            parity, model_version = _parity(model_name, stores, session, spec, online)
        lap("parity")
        pairs = sum(totals.values())
        skewed = sum(totals[name] for name in SKEW_CLASSES)
        statuses = [cast(Status, finding.status) for finding in findings]
        status = worst([*statuses, "breach" if parity["status"] == "breach" else "ok"])
        timings["total"] = round(time.perf_counter() - clock, 4)
        report = NewSkewReport(
            feature_service=spec.name,
            model_name=model_name,
            model_version=model_version,
            watermark=min(watermarks.values()),
            sample_size=size if size is not None else len(population),
            entities_checked=len(ids),
            status=status,
            summary={
                "pairs": pairs,
                "counts": totals,
                "mismatch_rate": skewed / pairs if pairs else 0.0,
                "population": len(population),
                "all_entities": size is None,
                "seed": seed,
                "watermarks": {view: moment.isoformat() for view, moment in watermarks.items()},
                "thresholds": {
                    "value_tolerance": settings.value_tolerance,
                    **asdict(Thresholds.of(settings)),
                },
                "seconds": timings,  # sample: specs, watermarks, population; offline: what outlasted online
            },
            parity=parity,
            findings=tuple(findings),
            created_at=started_at,
            finished_at=datetime.now(UTC),
            job_run_id=job_run_id,
        )
        with Session(engine) as session, session.begin():
            saved = save_report(session, report=report)
    finally:
        engine.dispose()
    record_skew_metrics(saved)
    return saved
