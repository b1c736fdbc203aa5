"""Shared test configuration: unit tests need nothing; integration fixtures live in tests/integration."""

from __future__ import annotations

import os

# scikit-learn and numpy: one OpenMP thread, as in the service; keeps the 2-core machine responsive.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Tests never read a developer's .env or store URLs by accident.
for _name in (
    "TANDEM_POSTGRES_URL",
    "TANDEM_REDIS_URL",
    "TANDEM_MODEL_SIGNING_KEY_FILE",
    "TANDEM_ALLOW_UNSIGNED_MODELS",
):
    os.environ.pop(_name, None)
# Models are signed, as everywhere: the suite and every process it starts sign and verify with this key
# (a test of the keyless default clears it).
TEST_SIGNING_KEY = "tandem-test-suite-signing-key-" + "k" * 16
os.environ["TANDEM_MODEL_SIGNING_KEY"] = TEST_SIGNING_KEY
