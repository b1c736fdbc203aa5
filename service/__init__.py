"""The Litestar prediction API: blends stored batch scores with live re-scoring, with provenance."""

from service.app import create_app

__all__ = ["create_app"]
