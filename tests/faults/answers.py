"""What the fault tests ask the API and count: one predict answer with its moment, and tallies by status."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from litestar.testing import TestClient

from tandem.demo.names import DEMO_MODEL

__all__ = ["Answer", "ask", "figure", "tally", "until_recovered"]


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer: when it came (monotonic), its HTTP status, its blend reason (200 only), how long it took."""

    at: float
    status: int
    reason: str | None
    seconds: float


def ask(client: TestClient[Any], entity: int, **params: Any) -> Answer:
    """GET one entity's prediction."""
    started = time.monotonic()
    response = client.get(f"/v1/predict/{DEMO_MODEL}", params={"customer_id": entity, **params})
    now = time.monotonic()
    reason = response.json().get("reason") if response.status_code == 200 else None
    return Answer(at=now, status=response.status_code, reason=reason, seconds=now - started)


def tally(answers: list[Answer]) -> Counter[str]:
    """Answers counted by `status` or `status reason`, e.g. {'200 online_unavailable': 41, '200 batch_fresh': 9}."""
    return Counter(f"{a.status} {a.reason}" if a.reason else str(a.status) for a in answers)


def until_recovered(
    client: TestClient[Any], *, since: float, limit_s: float = 5.0
) -> tuple[float, list[Answer]]:
    """Ask until an answer is no longer degraded: seconds from `since` to that answer, and every answer."""
    answers: list[Answer] = []
    while time.monotonic() - since < limit_s:
        answer = ask(client, 1 + len(answers) % 100)
        answers.append(answer)
        if answer.status == 200 and answer.reason != "online_unavailable":
            return answer.at - since, answers
    return float("inf"), answers


def figure(text: str) -> None:
    """Show a measured figure (with `pytest -s`); docs/reliability.md quotes them."""
    print(f"\n[figure] {text}")  # noqa: T201 - the one place fault tests report what they measured
