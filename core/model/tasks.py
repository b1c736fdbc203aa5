"""What a model predicts (its task) and whether an estimator can do it: fitted, right methods, two classes.

A `classification` model's score is the probability of its positive class, the greater of exactly two
classes (`classes_[1]`, as scikit-learn sorts them); a `regression` model's score is `predict`'s value.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from core.errors import InvalidModelError

__all__ = ["TASKS", "Task", "check_estimator", "parse_task"]

Task = Literal["classification", "regression"]
TASKS: tuple[Task, ...] = get_args(Task)


def parse_task(value: str) -> Task:
    """`value` as a Task, or InvalidModelError listing the tasks."""
    for task in TASKS:
        if value == task:
            return task
    raise InvalidModelError(f"unknown task {value!r}: expected one of {', '.join(TASKS)}")


def _check_fitted(estimator: Any) -> None:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if not hasattr(estimator, "fit"):
        raise InvalidModelError(f"{type(estimator).__name__} is not a scikit-learn estimator (no fit method)")
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise InvalidModelError(
            f"{type(estimator).__name__} is not fitted: fit it before registering"
        ) from None
    except TypeError as exc:  # check_is_fitted refuses what is not an estimator
        raise InvalidModelError(
            f"{type(estimator).__name__} is not a scikit-learn estimator: {exc}"
        ) from None


def check_estimator(estimator: Any, task: Task) -> None:
    """InvalidModelError (one line) unless `estimator` is fitted and can score `task` as Tandem scores it."""
    _check_fitted(estimator)
    name = type(estimator).__name__
    if task == "regression":
        if not callable(getattr(estimator, "predict", None)):
            raise InvalidModelError(f"{name} has no predict method: not a regressor")
        return
    if not callable(getattr(estimator, "predict_proba", None)):
        raise InvalidModelError(
            f"{name} has no predict_proba: not a probabilistic classifier (register it with --task regression?)"
        )
    classes = list(getattr(estimator, "classes_", ()))
    if len(classes) != 2:
        raise InvalidModelError(
            f"{name} has {len(classes)} classes {classes[:10]}: Tandem scores binary classifiers only "
            "(score = probability of the greater class)"
        )
