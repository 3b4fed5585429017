"""Evaluation protocols: `official` (the reference code's numbers) and `strict` (no selection on
test data).

official - what ReCon's runners do: finetuning keeps the best test accuracy over epochs (its
    validation split is the test split), voting reports the maximum over rounds, zero-shot counts
    train + test together, few-shot keeps each fold's best test accuracy over epochs.
strict (the default) - the test split is measured once, deterministically, by a model chosen
    without looking at it: finetuning picks its epoch on a validation split carved from train
    (:func:`carve_validation`), voting is one pass with a fixed seed, zero-shot counts the test
    split only, few-shot tests each fold once after its last epoch (a K-shot episode has no
    shapes to spare for a validation split).
The linear SVM fits on train and scores test once under both (the reference selects nothing).
"""

from __future__ import annotations

import contextlib
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from recon_fast.errors import ConfigError, DataError

PROTOCOLS = ("official", "strict")
DEFAULT_PROTOCOL = "strict"
# Voting rounds of the reference's test mode (runner_finetune.test: `for time in range(1, 300)`,
# the best round reported): `eval vote --protocol official` runs as many unless told otherwise.
OFFICIAL_VOTE_ROUNDS = 299
# strict finetuning: this fraction of each class's training shapes (rounded, at least one when a
# class has two or more) becomes the validation split, drawn with this seed whatever the run's
# --seed, so every seed of a study selects on the same shapes.
VALIDATION_FRACTION = 0.2
VALIDATION_SEED = 0
# Seed of the random draws in a measurement (voting subsets and transforms, zero-shot subsets):
# round r of voting uses EVAL_SEED + r, so the strict single pass is the official round 0.
EVAL_SEED = 0


def default_vote_rounds(protocol: str) -> int:
    """Voting rounds when none are asked for: the reference's under official, one under strict."""
    return OFFICIAL_VOTE_ROUNDS if check_protocol(protocol) == "official" else 1


def check_voting(protocol: str, votes: int, rounds: int, *, minimum_rounds: int = 1) -> None:
    """Refuse, before any model or data is loaded, vote counts that would vote on nothing and
    several rounds under strict (the best of several rounds selects on the test split).
    finetune passes minimum_rounds=0: --vote-rounds 0 skips its voting."""
    check_protocol(protocol)
    if votes < 1:
        raise ConfigError(f"--votes must be >= 1, got {votes}")
    if rounds < minimum_rounds:
        raise ConfigError(f"--vote-rounds must be >= {minimum_rounds}, got {rounds}")
    if protocol == "strict" and rounds > 1:
        skip = ", or 0 to skip voting" if minimum_rounds == 0 else ""
        raise ConfigError(f"--vote-rounds {rounds} reports the best of several rounds on the test "
                          f"split, which --protocol strict does not do (one pass: --vote-rounds "
                          f"1{skip}); use --protocol official")


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    return protocol


def labels_of(dataset: Dataset) -> np.ndarray:
    """Every item's class label, in index order (from the dataset's label array when it has one)."""
    labels = getattr(dataset, "labels", None)
    if labels is None and hasattr(dataset, "samples"):  # ModelNetFewShot: (points, label, orig)
        labels = [sample[1] for sample in dataset.samples]
    if labels is None:
        labels = [int(dataset[i]["label"]) for i in range(len(dataset))]
    return np.asarray(labels, dtype=np.int64).reshape(-1)


class SplitView(Dataset):
    """Some items of a dataset, by index, keeping what the pipeline reads from it (name, which
    picks the augmentation; class_names; labels)."""

    def __init__(self, dataset: Dataset, indices: np.ndarray, split: str):
        self.dataset, self.indices, self.split = dataset, [int(i) for i in indices], split
        self.name = getattr(dataset, "name", type(dataset).__name__)
        self.labels = labels_of(dataset)[self.indices]
        names = getattr(dataset, "class_names", None)
        if names:
            self.class_names = list(names)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[self.indices[index]]
        return {**item, "index": index} if isinstance(item, dict) else item


def carve_validation(dataset: Dataset, fraction: float = VALIDATION_FRACTION,
                     seed: int = VALIDATION_SEED) -> tuple[SplitView, SplitView]:
    """Split a training set into (train, validation), stratified by class: each class gives
    round(fraction * count) shapes, at least one when it has two or more, none when it has one.
    The same dataset, fraction and seed always give the same split."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation fraction must be in (0, 1), got {fraction!r}")
    labels = labels_of(dataset)
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = 0 if len(members) < 2 else max(1, int(round(fraction * len(members))))
        held.extend(rng.permutation(members)[:count].tolist())
    if not held:
        raise DataError(f"cannot carve a validation split from {len(dataset)} training shapes: "
                        "no class has two or more (use --protocol official)")
    held_set = set(held)
    kept = [i for i in range(len(labels)) if i not in held_set]
    return SplitView(dataset, np.array(kept), "train"), SplitView(dataset, np.sort(held), "val")


@contextlib.contextmanager
def seeded(seed: int, device: Optional[torch.device] = None):
    """Run a measurement's random draws from `seed`, leaving the caller's RNG streams as they were."""
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
