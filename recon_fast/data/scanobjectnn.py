"""ScanObjectNN (h5) in its three published variants.

Files (under ``ScanObjectNN/``)::

    main_split/{training,test}_objectdataset_augmentedrot_scale75.h5   PB_T50_RS ("hardest")
    main_split/{training,test}_objectdataset.h5                        OBJ_BG
    main_split_nobg/{training,test}_objectdataset.h5                   OBJ_ONLY

Keys ``data`` (N, 2048, 3) read as float32 and ``label`` (N,) read as int; nothing is normalised
or subsampled (the points are used as stored). Item: {"index", "points": float32 (2048, 3)
(point order shuffled for the train split), "label": int64}.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from recon_fast.data.io import DatasetFileError, PathLike, read_h5_arrays, require_dir

# variant -> (sub-folder of ScanObjectNN/, file name pattern); aliases map the paper's names.
VARIANTS = {
    "hardest": ("main_split", "{}_objectdataset_augmentedrot_scale75.h5"),
    "objectbg": ("main_split", "{}_objectdataset.h5"),
    "objectonly": ("main_split_nobg", "{}_objectdataset.h5"),
}
ALIASES = {"pb_t50_rs": "hardest", "obj_bg": "objectbg", "obj_only": "objectonly",
           "scanobjectnn_hardest": "hardest", "objbg": "objectbg", "objonly": "objectonly"}
# The zero-shot class names, in label order, spelled as in the official code ("toile" sic).
SCANOBJECTNN_CLASSES = ("bag", "bin", "box", "cabinet", "chair", "desk", "display", "door",
                        "shelf", "table", "bed", "pillow", "sink", "sofa", "toile")


def canonical_variant(variant: str) -> str:
    key = ALIASES.get(variant.lower(), variant.lower())
    if key not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)} or {sorted(ALIASES)}, "
                         f"got {variant!r}")
    return key


def scanobjectnn_file(root: PathLike, variant: str, split: str) -> str:
    """Path of the h5 file; `root` is either ``ScanObjectNN/`` or the split folder itself
    (the official ROOT, e.g. ``ScanObjectNN/main_split``)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder, pattern = VARIANTS[canonical_variant(variant)]
    root = require_dir(root, "ScanObjectNN")
    nested = os.path.join(root, folder)
    base = nested if os.path.isdir(nested) else root
    return os.path.join(base, pattern.format("training" if split == "train" else "test"))


class ScanObjectNN(Dataset):
    """One split of a ScanObjectNN variant, loaded whole into memory.

    Args:
        root: ``ScanObjectNN/`` or the folder holding the h5 files.
        split: "train" or "test".
        variant: "hardest" (PB_T50_RS), "objectbg" (OBJ_BG) or "objectonly" (OBJ_ONLY).
    """

    def __init__(self, root: PathLike, split: str = "train", variant: str = "hardest"):
        self.variant = canonical_variant(variant)
        self.split = split
        self.path = scanobjectnn_file(root, self.variant, split)
        arrays = read_h5_arrays(self.path, ("data", "label"))
        self.points, self.labels = self._checked(arrays["data"], arrays["label"])

    @property
    def name(self) -> str:
        """The official dataset NAME (selects the train/vote augmentation)."""
        return "ScanObjectNN_hardest" if self.variant == "hardest" else "ScanObjectNN"

    def _checked(self, data: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if data.ndim != 3 or data.shape[2] != 3 or data.shape[1] < 1 \
                or data.dtype.kind not in "fiu":
            raise DatasetFileError(self.path, f"'data' must be numeric (N, P, 3), got "
                                              f"{data.dtype} {data.shape}")
        label = label.reshape(-1) if label.ndim == 2 and label.shape[1] == 1 else label
        if label.shape != (data.shape[0],) or label.dtype.kind not in "iuf":
            raise DatasetFileError(self.path, f"'label' must have shape ({data.shape[0]},) to "
                                              f"match 'data', got {label.dtype} {label.shape}")
        points = data.astype(np.float32)
        if not np.isfinite(points).all():
            raise DatasetFileError(self.path, "'data' contains NaN or infinite values")
        return points, self._checked_labels(label)

    def _checked_labels(self, label: np.ndarray) -> np.ndarray:
        """Whole numbers in [0, 15): an out-of-range label would otherwise surface as a bare
        IndexError (or a CUDA assert) deep inside the loss or the zero-shot class table."""
        classes = len(SCANOBJECTNN_CLASSES)
        whole = np.isfinite(label) & (np.floor(label) == label) if label.dtype.kind == "f" \
            else np.ones(label.shape, bool)
        bad = ~whole | (label < 0) | (label >= classes)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise DatasetFileError(self.path, f"'label' must hold class numbers in [0, {classes}), "
                                              f"got {label[rows[:5]].tolist()} at rows "
                                              f"{rows[:5].tolist()}" +
                                   (f" ({len(rows)} bad labels)" if len(rows) > 5 else ""))
        return label.astype(np.int64)

    def __len__(self) -> int:
        return self.points.shape[0]

    def __getitem__(self, index: int) -> dict:
        cloud = self.points[index]
        if self.split == "train":
            cloud = cloud[torch.randperm(len(cloud)).numpy()]
        return {"index": index, "points": torch.from_numpy(np.array(cloud)),  # a copy, never a view
                "label": torch.tensor(self.labels[index], dtype=torch.int64)}
