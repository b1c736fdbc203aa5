"""Which entities a skew check looks at: the sample size, a seeded uniform sample of the offline population,
and the entities that exist only online (a row the offline store lacks, which the population never holds)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from core.errors import ConfigurationError
from core.features.keys import EntityKey
from core.online.store import OnlineStore

__all__ = ["choose_sample", "merge_sorted", "online_only_entities", "validate_sample"]


def validate_sample(sample: int | None, *, all_entities: bool) -> int | None:
    """The sample size to use (None: every entity); ConfigurationError for a size below 1."""
    if all_entities or sample is None:
        return None
    if sample <= 0:
        raise ConfigurationError(f"sample size must be a positive number of entities, got {sample}")
    return sample


def merge_sorted(first: npt.NDArray[Any], second: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Two sorted id arrays without common ids, as one sorted array."""
    if not len(second):
        return first
    merged = np.concatenate([first, second])
    return merged[np.argsort(merged, kind="stable")]


def choose_sample(population: npt.NDArray[Any], size: int | None, *, seed: int | None) -> npt.NDArray[Any]:
    """`size` distinct ids drawn uniformly from `population` (all of it when None or larger), sorted."""
    if size is None or size >= len(population):
        return np.sort(population)
    chosen = np.random.default_rng(seed).choice(population, size=size, replace=False)
    return np.sort(chosen.astype(population.dtype))


def online_only_entities(
    store: OnlineStore, key: EntityKey, population: npt.NDArray[Any], *, limit: int
) -> npt.NDArray[Any]:
    """Sorted ids of entities of `key` with a key online (SCAN, at most about `limit` keys) and no offline
    row up to the watermark: a row the offline store lacks, which sampling the offline population never sees."""
    if limit <= 0:
        return key.array([])
    online = set(store.entity_ids(key, limit=limit))
    known = set(population.tolist())
    return key.array(sorted(online - known))
