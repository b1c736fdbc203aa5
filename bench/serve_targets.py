"""Helper app for bench/serve.py: a bare Litestar JSON endpoint under the same uvicorn options as `tandem serve`.

    .venv/bin/python -m bench.serve_targets --port 8100 --workers 2

One POST route that decodes the JSON body and returns a fixed small JSON object: the floor a Litestar
endpoint costs on this machine (no stores, no model, no middleware).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from litestar import Litestar, post

__all__ = ["UVICORN_OPTIONS", "create_bare_app"]

UVICORN_OPTIONS: dict[str, Any] = {
    "loop": "uvloop",
    "http": "httptools",
    "access_log": False,
    "log_level": "warning",
    "timeout_graceful_shutdown": 10,
}
"""What `tandem serve` (tandem/commands/serve.py) passes to uvicorn.run besides host, port and workers."""

_ANSWER = {"predictions": [{"entity": {"customer_id": 1}, "score": 0.137, "source": "batch"}]}


@post("/v1/predict", status_code=200, sync_to_thread=False)
def bare_predict(data: dict[str, Any]) -> dict[str, Any]:
    """Decode the body, answer a constant."""
    return _ANSWER


def create_bare_app() -> Litestar:
    """The bare app: one POST route, no middleware, no lifespan."""
    return Litestar(route_handlers=[bare_predict], openapi_config=None)


def main() -> None:
    """Serve the bare app like `tandem serve` serves Tandem."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    import uvicorn

    uvicorn.run(
        "bench.serve_targets:create_bare_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        **UVICORN_OPTIONS,
    )


if __name__ == "__main__":
    main()
