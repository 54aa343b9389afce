"""When a run learned something: the tokens at which a metric first crossed a threshold.

A run's eval history (``eval.json`` ``history``: one entry per eval with
``tokens`` and ``metrics``) answers "how many tokens until the model could do
it?", the sharpest form of the question whether multi-token prediction makes
a circuit form sooner. A task that has such an onset (induction) returns these
from ``Task.milestones``; the trainer stores them in ``eval.json`` under
``milestones`` and the sweep in the trial's ``milestones`` attribute.

Example:
    >>> h = [{"tokens": 100, "metrics": {"acc": 0.02}}, {"tokens": 200, "metrics": {"acc": 0.3}},
    ...      {"tokens": 300, "metrics": {"acc": 0.5}}]
    >>> onset_tokens(h, "acc", 0.1)
    {'threshold': 0.1, 'tokens_to_induction': 200.0, 'tokens_to_half_best': 200.0}
"""

from __future__ import annotations


def first_crossing(history: list[dict], metric: str, threshold: float) -> float | None:
    """Tokens at the first eval whose ``metric`` is at least ``threshold``; None if none is.

    Example:
        >>> first_crossing([{"tokens": 5, "metrics": {"a": 0.5}}], "a", 0.6) is None
        True
    """
    for entry in history:
        value = entry.get("metrics", {}).get(metric)
        if value is not None and value >= threshold:
            return float(entry["tokens"])
    return None


def onset_tokens(history: list[dict], metric: str, threshold: float, *, name: str = "induction") -> dict:
    """``tokens_to_<name>`` (first eval >= threshold) and ``tokens_to_half_best`` (first eval >= half the best).

    The half-best onset is given only when the run's best reaches the
    threshold: half of a value that never left the noise is no onset.

    Example:
        >>> onset_tokens([{"tokens": 1, "metrics": {"a": 0.01}}], "a", 0.1)["tokens_to_half_best"] is None
        True
    """
    values = [e["metrics"][metric] for e in history if metric in e.get("metrics", {})]
    best = max(values, default=None)
    half = first_crossing(history, metric, best / 2) if best is not None and best >= threshold else None
    return {"threshold": threshold, f"tokens_to_{name}": first_crossing(history, metric, threshold),
            "tokens_to_half_best": half}
