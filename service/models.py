"""The models one API worker serves: a prediction service per promoted model, by name.

Requests name their model (`"model"` in the body, the path of the GET route); when exactly one model is
served the name may be left out. The lifespan's watcher adds, swaps and removes models as they are
promoted (service/lifespan.py); a request keeps the service it looked up even if a swap happens meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterator

from core.errors import NotFoundError, StoreUnavailableError
from core.serving.service import PredictionService, StoreHealth
from service.errors import RequestError

__all__ = ["ServedModels"]


class ServedModels:
    """Prediction services by model name, sharing one store health record."""

    def __init__(self, services: dict[str, PredictionService] | None = None) -> None:
        self.health = StoreHealth()
        self.refused: dict[str, str] = {}  # promoted models not served, and why (for /health/ready)
        self.synced = True  # False from start-up until the promoted models were first read (service.lifespan)
        self._by_name: dict[str, PredictionService] = {}
        for name, service in (services or {}).items():
            self.put(name, service)

    def put(self, name: str, service: PredictionService) -> None:
        """Serve `service` as model `name` (replacing the previous one in one step)."""
        service.health = self.health
        previous = self._by_name.get(name)
        if previous is not None and service.skew_report is None:  # a swapped version keeps the steering
            service.skew_report = previous.skew_report
        self._by_name = {**self._by_name, name: service}

    def remove(self, name: str) -> None:
        """Stop serving model `name`."""
        self._by_name = {key: value for key, value in self._by_name.items() if key != name}

    def names(self) -> list[str]:
        """The served models' names, sorted."""
        return sorted(self._by_name)

    def __iter__(self) -> Iterator[tuple[str, PredictionService]]:
        return iter(sorted(self._by_name.items()))

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str | None) -> PredictionService:
        """The service of model `name`; the only one when `name` is None and exactly one is served."""
        served = self._by_name
        if name is None:
            if len(served) == 1:
                return next(iter(served.values()))
            if not served:
                if not self.synced:
                    raise StoreUnavailableError(
                        "no model is served yet: PostgreSQL, which holds the models, has not answered since start-up"
                    )
                raise StoreUnavailableError("no model is served: promote a model version first")
            raise RequestError(
                f"model: required when several models are served ({', '.join(sorted(served))})"
            )
        service = served.get(name)
        if service is None and not self.synced:  # maybe promoted: the registry has not been read yet
            raise StoreUnavailableError(
                f"model {name!r} is not served yet: PostgreSQL, which holds the models, has not answered since "
                "start-up"
            )
        if service is None:
            known = ", ".join(sorted(served)) or "none"
            raise NotFoundError(f"model {name!r} is not served (served: {known})")
        return service
