"""The skew check: expected online values from the offline store vs what the online store serves, per entity.

1. Validate: a positive sample size; the feature service exists (NotFoundError); every view of it has been
   materialized (else TandemError: nothing to compare against yet).
2. Watermark per view: the latest materialization end Feast recorded (`core.features.watermarks`).
3. Population: every entity with a row at or before its view's watermark; a random sample of it (`seed`
   for a repeatable one), or all of it. Plus the entities that exist only online: a SCAN of the project's
   Redis keys (`TANDEM_SKEW_ONLINE_SCAN_KEYS`, default 1,000,000 keys) finds ids the offline population
   lacks, and a sample of the same size of them is checked too (offline says null for them: any online
   value is skew).
4. Expected rows: Feast's point-in-time row per view as of that view's watermark, TTL included
   (`consistency.offline_sample`), read while the online rows are fetched (`consistency.online_sample`).
5. Per feature: classes, mismatch rate, differences, PSI / JS, examples (`consistency.findings`); for
   entities whose online row is newer than the watermark, the newest offline event time (any time), so a
   pushed row whose offline append was lost is `online_only_fresh` once older than the grace period.
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

from consistency.classify import CLASSES, SKEW_CLASSES
from consistency.findings import FeatureInput, build_finding
from consistency.offline_reads import batch_inputs_reader, expected_service_rows, newest_offline_events
from consistency.offline_sample import ExpectedView, entity_population
from consistency.online_sample import OnlineSample, read_online_sample
from consistency.parity import compute_parity, skipped_parity
from consistency.sampling import choose_sample, merge_sorted, online_only_entities, validate_sample
from consistency.stats import Status, Thresholds, worst
from core.errors import NotFoundError, TandemError
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

__all__ = ["Progress", "run_skew_check"]


Progress = Callable[[str], None]
"""progress(stage): called when a stage starts."""


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


def _findings(
    settings: Settings,
    spec: ServiceSpec,
    ids: npt.NDArray[Any],
    expected: dict[str, ExpectedView],
    online: OnlineSample,
    watermarks: dict[str, datetime],
    *,
    offline_latest: dict[str, npt.NDArray[np.int64]],
    now: datetime,
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
                    offline_latest_us=offline_latest[view.name],
                    now=now,
                    fresher_grace_s=settings.skew_fresher_grace_s,
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
        batch_inputs=batch_inputs_reader(stores.postgres.url(), spec),
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
    layout = ReadLayout(project=settings.feast_project, service=spec, predictions=predictions)
    store = OnlineStore.connect(stores.redis, project=settings.feast_project)
    try:
        online_only = online_only_entities(store, spec.key, population, limit=settings.skew_online_scan_keys)
        online_only_checked = choose_sample(online_only, size, seed=seed)
        ids = merge_sorted(choose_sample(population, size, seed=seed), online_only_checked)
        everyone = len(ids) == len(population) + len(online_only_checked)
        lap("sample")
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(expected_service_rows, url, spec, watermarks, ids, everyone=everyone)
            online = read_online_sample(store, layout, ids)
            lap("online")
            expected = pending.result()
            lap("offline")
    finally:
        store.close()
    offline_latest = newest_offline_events(url, spec, ids, online.event_us, watermarks)
    findings, totals = _findings(
        settings, spec, ids, expected, online, watermarks, offline_latest=offline_latest, now=started_at
    )
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
                "online_only": len(online_only),  # entities online that the offline store lacks
                "online_only_checked": len(online_only_checked),
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
