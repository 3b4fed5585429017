"""Few-shot summary: one finetune run per fold, reported as mean +- std over folds."""

from __future__ import annotations

import math


def summarize_folds(accuracies: list[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation of per-fold accuracies, in percent."""
    if not accuracies:
        raise ValueError("no fold accuracies to summarise")
    values = [100.0 * a for a in accuracies]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return mean, std
