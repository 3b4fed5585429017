"""N-way K-shot episodes drawn from any classification set (ModelNet40, ScanObjectNN, embedded).

The official few-shot benchmark reads fixed fold files (``ModelNetFewshot/<way>way_<shot>shot/
<fold>.pkl``, :class:`recon_fast.data.ModelNetFewShot`). Where no fold file exists, an episode is
generated deterministically from (way, shot, fold):

* the same ``way`` classes are drawn for the train and the test split (they depend only on the
  fold, the way and the number of classes), sorted, and relabelled 0..way-1 in that order, as
  the fold files relabel them;
* ``shot`` training items per class (train split) or ``query`` items per class (test split; the
  fold files hold 20) are drawn without replacement.

A dataset that cannot supply the episode (too few classes, or a class with too few items in the
split) raises :class:`EpisodeError`; an episode never falls back to all classes.
"""

from __future__ import annotations

import hashlib
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from recon_fast.errors import DataError

DEFAULT_QUERY = 20  # test items per class in the official fold files


class EpisodeError(DataError):
    """The dataset cannot supply the requested N-way K-shot episode."""


def _rng(*parts) -> np.random.Generator:
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Every item's label, read from a `labels` attribute when the dataset has one (all loaders
    of recon_fast do), else by loading each item."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = [int(dataset[i]["label"]) for i in range(len(dataset))]
    return np.asarray(labels, dtype=np.int64).reshape(-1)


def class_names_of(dataset: Dataset) -> Optional[list[str]]:
    """Class names in label order, when the dataset knows them."""
    for attr in ("class_names", "classes"):
        names = getattr(dataset, attr, None)
        if names:
            return list(names)
    if str(getattr(dataset, "name", "")).startswith("ScanObjectNN"):
        from recon_fast.data.scanobjectnn import SCANOBJECTNN_CLASSES

        return list(SCANOBJECTNN_CLASSES)
    return None


def episode_classes(num_classes: int, way: int, fold: int) -> list[int]:
    """The `way` original class ids of fold `fold` (the same for every split), sorted."""
    if way < 1:
        raise EpisodeError(f"way must be >= 1, got {way}")
    if way > num_classes:
        raise EpisodeError(f"a {way}-way episode needs {way} classes; the dataset has "
                           f"{num_classes}")
    chosen = _rng("classes", num_classes, way, fold).choice(num_classes, size=way, replace=False)
    return sorted(int(c) for c in chosen)


def episode_indices(labels: np.ndarray, classes: Sequence[int], per_class: int, *, split: str,
                    fold: int, what: str) -> list[int]:
    """`per_class` item indices of each class (without replacement), deterministic per fold."""
    if per_class < 1:
        raise EpisodeError(f"{what} must be >= 1, got {per_class}")
    chosen = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise EpisodeError(f"{what}={per_class} needs {per_class} {split} items of class {c}; "
                               f"the {split} split has {len(members)}")
        picked = _rng("items", split, fold, c, per_class).choice(members, size=per_class,
                                                                 replace=False)
        chosen.extend(int(i) for i in picked)
    order = _rng("order", split, fold).permutation(len(chosen))  # classes interleaved
    return [chosen[i] for i in order]


class FewShotEpisode(Dataset):
    """One split of a generated N-way K-shot episode over `dataset`.

    Args:
        dataset: a classification split whose items are {"points", "label", ...}.
        way, shot, fold: the episode; `fold` seeds the draw (folds 0..9 as the official ones).
        split: "train" (`shot` items per class) or "test" (`query` items per class).
        query: test items per class (default 20, as the official fold files).
        num_classes: classes of the full label space (default: from `class_names` or the labels).

    Items keep every key of the underlying item; "label" is the new label 0..way-1 and
    "original_label" the dataset's.
    """

    def __init__(self, dataset: Dataset, way: int, shot: int, fold: int, split: str, *,
                 query: Optional[int] = None, num_classes: Optional[int] = None):
        if split not in ("train", "test"):
            raise EpisodeError(f"split must be 'train' or 'test', got {split!r}")
        labels = dataset_labels(dataset)
        names = class_names_of(dataset)
        if num_classes is None:
            # From the names (the same for both splits); the labels of one split could miss a
            # class and so draw other classes than its partner split.
            num_classes = len(names) if names else int(labels.max()) + 1 if len(labels) else 0
        self.dataset, self.way, self.shot, self.fold, self.split = dataset, way, shot, fold, split
        self.query = DEFAULT_QUERY if query is None else int(query)
        self.classes = episode_classes(num_classes, way, fold)
        per_class, what = (shot, "shot") if split == "train" else (self.query, "query")
        self.indices = episode_indices(labels, self.classes, per_class, split=split, fold=fold,
                                       what=what)
        new_label = {c: i for i, c in enumerate(self.classes)}
        self.original_labels = labels[self.indices]
        self.labels = np.array([new_label[int(c)] for c in self.original_labels], dtype=np.int64)
        self.name = getattr(dataset, "name", type(dataset).__name__)  # keeps the augmentation
        if names:
            self.class_names = [names[c] for c in self.classes]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[self.indices[index]])
        item["original_label"] = item["label"]
        item["label"] = torch.tensor(self.labels[index], dtype=torch.int64)
        return item
