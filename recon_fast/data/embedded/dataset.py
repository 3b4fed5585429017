"""The embedded shapes as a classification set (points, label) for quick finetune/eval."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from recon_fast.data.embedded.shapes import synset_of
from recon_fast.data.io import DatasetFileError, read_npy_points
from recon_fast.data.modelnet import _normalised, _shuffled
from recon_fast.data.shapenet import read_shape_list


class EmbeddedClassification(Dataset):
    """Train or test split of an :class:`EmbeddedSet`, held in memory.

    Item: {"index": int, "points": float32 (n_points, 3) (pc_norm'ed; point order shuffled for
    the train split, like ModelNet), "label": int64}. Subsample on the device with
    :func:`recon_fast.data.fps_then_random` / :func:`fps_sample` as for ModelNet.
    """

    name = "EmbeddedShapes"  # not "ModelNet": training uses the y-rotation augmentation

    def __init__(self, embedded, split: str = "train"):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.split = split
        self.class_names = embedded.class_names
        paths = embedded.paths
        records = read_shape_list(paths.list_dir, split, whole=False, ratio=1.0)
        synset_label = {synset_of(name): i for i, name in enumerate(self.class_names)}
        unknown = sorted({r.taxonomy_id for r in records} - set(synset_label))
        if unknown:
            raise DatasetFileError(os.path.join(paths.list_dir, f"{split}.txt"),
                                   f"lists synsets {unknown[:5]} that are not embedded classes")
        n = embedded.config.n_points
        self.sources = [os.path.join(paths.pc_dir, r.file_name) for r in records]
        self.points = [read_npy_points(path, min_rows=n)[:n] for path in self.sources]
        self.labels = np.array([synset_label[r.taxonomy_id] for r in records], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index: int) -> dict:
        points = _normalised(self.points[index], False, self.sources[index])
        return {"index": index, "points": _shuffled(points, self.split == "train"),
                "label": torch.tensor(self.labels[index], dtype=torch.int64)}
