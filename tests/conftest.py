"""Shared test configuration: unit tests need nothing; integration fixtures live in tests/integration."""

from __future__ import annotations

import os

# scikit-learn and numpy: one OpenMP thread, as in the service; keeps the 2-core machine responsive.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Tests never read a developer's .env or store URLs by accident.
for _name in ("TANDEM_POSTGRES_URL", "TANDEM_REDIS_URL"):
    os.environ.pop(_name, None)
