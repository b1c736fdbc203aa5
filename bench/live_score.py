"""Live-scoring micro-benchmark: `predict_proba` vs core.model.compiled_trees' compiled evaluator, per row.

The model is core.model.training's pipeline (median imputer with indicators + HistGradientBoostingClassifier with
the training hyperparameters), fitted on synthetic rows shaped like customer_risk_v1 (13 features, NaNs) with
a fixed tree count. No database. Usage:

    .venv/bin/python bench/live_score.py --trees 150 --repeats 2000
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import median, print_table
from core.model.compiled_trees import compile_pipeline
from core.model.training import HYPERPARAMETERS, _pipeline

FEATURES = 13
BATCHES = (1, 10, 100)


def _rows(rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
    x: npt.NDArray[np.float64] = rng.lognormal(size=(n, FEATURES)) * rng.choice(
        [1.0, 10.0, 1_000.0], size=FEATURES
    )
    x[rng.random(x.shape) < 0.15] = np.nan
    return x


def _fit(trees: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    x = _rows(rng, 30_000)
    signal = np.nan_to_num(np.log(x[:, :4])).sum(axis=1) + np.isnan(x[:, 5])
    y = (signal + rng.normal(size=x.shape[0]) > 2.5).astype(np.int64)
    return _pipeline({**HYPERPARAMETERS, "early_stopping": False, "max_iter": trees}).fit(x, y)


def _per_row_us(
    score: Callable[[npt.NDArray[np.float64]], object], batches: list[npt.NDArray[np.float64]]
) -> list[float]:
    """Wall time of each call divided by its rows, in microseconds (after a few warm-up calls)."""
    for batch in batches[:5]:
        score(batch)
    timings = []
    for batch in batches:
        start = time.perf_counter()
        score(batch)
        timings.append((time.perf_counter() - start) * 1e6 / batch.shape[0])
    return timings


def _p99(values: list[float]) -> float:
    return float(np.percentile(values, 99))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trees", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=1_000, help="calls timed per batch size and path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    estimator = _fit(args.trees, args.seed)
    compiled = compile_pipeline(estimator)
    if compiled is None:
        raise SystemExit("the training pipeline did not compile")
    rng = np.random.default_rng(args.seed + 1)
    check = _rows(rng, 10_000)
    same = np.array_equal(compiled.predict_proba1(check), estimator.predict_proba(check)[:, 1])
    print(f"{compiled.n_trees} trees, depth <= {compiled.depth}; 10,000 rows bitwise identical: {same}")

    rows = []
    for size in BATCHES:
        batches = [_rows(rng, size) for _ in range(args.repeats)]
        slow = _per_row_us(estimator.predict_proba, batches)
        fast = _per_row_us(compiled.predict_proba1, batches)
        rows.append(
            [
                size,
                f"{median(slow):.1f}",
                f"{_p99(slow):.1f}",
                f"{median(fast):.1f}",
                f"{_p99(fast):.1f}",
                f"{median(slow) / median(fast):.1f}x",
            ]
        )
    print_table(
        f"Per-row latency (us), {args.repeats} calls per batch size",
        ["batch", "predict_proba p50", "predict_proba p99", "compiled p50", "compiled p99", "p50 ratio"],
        rows,
    )


if __name__ == "__main__":
    main()
