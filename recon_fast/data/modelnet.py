"""ModelNet40/10 from the 8192-point FPS caches, and the ModelNet40 few-shot folds.

Layout (``ModelNet/modelnet40_normal_resampled/``)::

    modelnet40_shape_names.txt            class names, line order = label
    modelnet40_{train,test}.txt           shape ids, e.g. night_stand_0001
    <class>/<shape id>.txt                rows "x,y,z,nx,ny,nz"
    modelnet40_{train,test}_8192pts_fps.dat   pickle [points_list, labels_list] (built if missing)

(``modelnet10_*`` for ModelNet10.) Few-shot: ``ModelNetFewshot/<way>way_<shot>shot/<fold>.pkl``,
a pickle {"train": [...], "test": [...]} of (points (8192, 6), new label, original label).

Item: {"index": int, "points": float32 (N, 3) (or (N, 6) with use_normals), "label": int64};
xyz pc_norm'ed; the point order is shuffled for the train split only.
"""

from __future__ import annotations

import os
import pickle
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from recon_fast.data.io import (DatasetFileError, PathLike, check_point_array, read_array_pickle,
                                read_list_file, require_dir, require_file)
from recon_fast.data.pointcloud import normalize_xyz
from recon_fast.ops.validate import is_int

SPLITS = ("train", "test")


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def _shuffled(points: np.ndarray, shuffle: bool) -> torch.Tensor:
    order = torch.randperm(len(points)).numpy() if shuffle else np.arange(len(points))
    return torch.from_numpy(np.ascontiguousarray(points[order]))


def _normalised(points: np.ndarray, use_normals: bool, source: str) -> np.ndarray:
    try:
        return normalize_xyz(points, use_normals)
    except ValueError as e:
        raise DatasetFileError(source, str(e)) from e


def shape_class(shape_id: str) -> str:
    """'night_stand_0001' -> 'night_stand' (everything before the last '_')."""
    return "_".join(shape_id.split("_")[:-1])


def fps_rows(points: np.ndarray, count: int, start: int) -> np.ndarray:
    """Farthest point sampling of the rows of (N, C) `points` on their xyz, from row `start`.

    Same rule as the official numpy sampler (squared distances, first maximum wins), run by the
    compiled ``recon_fast.ops.fps``.
    """
    from recon_fast import ops

    xyz = torch.from_numpy(np.ascontiguousarray(points[:, :3]))[None]  # (1, N, 3)
    idx = ops.fps(xyz, count, start_idx=torch.tensor([start]))[0].numpy()
    return points[idx]


class ModelNet(Dataset):
    """ModelNet40 (or ModelNet10 with ``num_category=10``) classification split.

    Args:
        root: the ``modelnet40_normal_resampled`` folder (official DATA_PATH).
        split: "train" or "test".
        num_category: 40 or 10.
        n_points: points per cached shape (N_POINTS, 8192).
        use_normals: keep the normal columns (USE_NORMALS, false in every ReCon config).
        build_cache: build ``modelnet<C>_<split>_<n>pts_fps.dat`` from the text files when missing.
        seed: seeds the random FPS start of each shape while building the cache.
    """

    def __init__(self, root: PathLike, split: str = "train", num_category: int = 40, *,
                 n_points: int = 8192, use_normals: bool = False, build_cache: bool = True,
                 seed: int = 0):
        if num_category not in (10, 40):
            raise ValueError(f"num_category must be 10 or 40, got {num_category!r}")
        self.root = require_dir(root, "ModelNet (DATA_PATH)")
        self.split, self.num_category = _check_split(split), num_category
        self.n_points, self.use_normals = n_points, use_normals
        self.classes = read_list_file(self._file(f"modelnet{num_category}_shape_names.txt"),
                                      "ModelNet class names")
        self.cache_path = self._file(f"modelnet{num_category}_{split}_{n_points}pts_fps.dat")
        if not os.path.isfile(self.cache_path):
            if not build_cache:
                require_file(self.cache_path, "ModelNet FPS cache")
            build_modelnet_cache(self.root, split, num_category, n_points, seed)
        points, self.labels = read_modelnet_cache(self.cache_path, n_points, len(self.classes))
        # Keep only the columns items use: the full 8192 x 6 train cache is ~1.9 GB in memory.
        columns = 6 if use_normals else 3
        self.points = [np.ascontiguousarray(p[:, :columns]) for p in points]

    def _file(self, name: str) -> str:
        return os.path.join(self.root, name)

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index: int) -> dict:
        points = _normalised(self.points[index], self.use_normals, self.cache_path)
        return {"index": index, "points": _shuffled(points, self.split == "train"),
                "label": torch.tensor(self.labels[index], dtype=torch.int64)}


def read_modelnet_cache(path: str, n_points: int, num_classes: int
                        ) -> tuple[list[np.ndarray], list[int]]:
    """Load and check a ``*_fps.dat`` cache: [list of (n_points, 6) float32, list of int32 (1,)]."""
    content = read_array_pickle(path, "ModelNet FPS cache")
    if not (isinstance(content, (list, tuple)) and len(content) == 2
            and all(isinstance(part, (list, tuple)) for part in content)):
        raise DatasetFileError(path, "expected a pickled [points_list, labels_list]")
    points, labels = content
    if len(points) != len(labels):
        raise DatasetFileError(path, f"{len(points)} point arrays but {len(labels)} labels")
    for i, cloud in enumerate(points):
        check_point_array(cloud, f"{path} [entry {i}]", min_rows=n_points, columns=(3, 6))
    return [p[:n_points].astype(np.float32, copy=False) for p in points], \
        [_cache_label(label, i, num_classes, path) for i, label in enumerate(labels)]


def _cache_label(label, i: int, num_classes: int, path: str) -> int:
    value = np.asarray(label).reshape(-1)
    if value.size != 1 or value.dtype.kind not in "iu" or not 0 <= int(value[0]) < num_classes:
        raise DatasetFileError(path, f"label entry {i} must be one int in [0, {num_classes - 1}], "
                                     f"got {label!r}")
    return int(value[0])


def build_modelnet_cache(root: str, split: str, num_category: int, n_points: int = 8192,
                         seed: int = 0, progress: bool = True) -> str:
    """Build ``modelnet<C>_<split>_<n>pts_fps.dat`` from the per-shape text files.

    Each shape: rows "x,y,z,nx,ny,nz" -> FPS (random start, seeded) to `n_points` rows, float32;
    label = line of its class in the shape-names file, stored as an int32 array of shape (1,).
    Written to a temporary file first so an interrupted build never leaves a truncated cache.
    """
    names = read_list_file(os.path.join(root, f"modelnet{num_category}_shape_names.txt"),
                           "ModelNet class names")
    label_of = {name: i for i, name in enumerate(names)}
    ids_path = os.path.join(root, f"modelnet{num_category}_{split}.txt")
    shape_ids = read_list_file(ids_path, f"ModelNet {split} list")
    rng = np.random.default_rng(seed)
    points_list, labels_list = [], []
    for shape_id in tqdm(shape_ids, desc=f"ModelNet{num_category} {split} FPS cache",
                         disable=not progress):
        cls = shape_class(shape_id)
        if cls not in label_of:
            raise DatasetFileError(ids_path, f"shape {shape_id!r} has class {cls!r}, which is not "
                                             "in the shape-names file")
        cloud = _read_shape_txt(os.path.join(root, cls, shape_id + ".txt"), n_points)
        points_list.append(fps_rows(cloud, n_points, int(rng.integers(len(cloud)))))
        labels_list.append(np.array([label_of[cls]], dtype=np.int32))
    path = os.path.join(root, f"modelnet{num_category}_{split}_{n_points}pts_fps.dat")
    _atomic_pickle([points_list, labels_list], path)
    return path


def _read_shape_txt(path: str, n_points: int) -> np.ndarray:
    require_file(path, "ModelNet shape file")
    try:
        cloud = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as e:
        raise DatasetFileError(path, f"not comma-separated numeric rows ({e})") from e
    return check_point_array(cloud, path, min_rows=n_points, columns=(3, 6))


def _atomic_pickle(obj, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


class ModelNetFewShot(Dataset):
    """One fold of the ModelNet40 few-shot benchmark (Point-BERT's splits).

    Args:
        root: the ``ModelNetFewshot`` folder (official DATA_PATH).
        way, shot, fold: pick ``<way>way_<shot>shot/<fold>.pkl``.
        split: "train" (way x shot shapes) or "test" (way x 20 shapes).
    Item: {"index", "points", "label" (0..way-1), "original_label" (ModelNet40 label)}.
    """

    def __init__(self, root: PathLike, way: int, shot: int, fold: int, split: str = "train", *,
                 use_normals: bool = False):
        for name, value in (("way", way), ("shot", shot), ("fold", fold)):
            if not is_int(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        way, shot, fold = int(way), int(shot), int(fold)
        self.split, self.use_normals = _check_split(split), use_normals
        root = require_dir(root, "ModelNet few-shot (DATA_PATH)")
        self.path = os.path.join(root, f"{way}way_{shot}shot", f"{fold}.pkl")
        content = read_array_pickle(self.path, "few-shot fold")
        if not (isinstance(content, dict) and split in content
                and isinstance(content[split], (list, tuple))):
            got = sorted(content) if isinstance(content, dict) else type(content).__name__
            raise DatasetFileError(self.path, f"expected a dict with a {split!r} list, got {got}")
        self.samples = [self._check_sample(s, i, way) for i, s in enumerate(content[split])]

    def _check_sample(self, sample, i: int, way: int) -> tuple[np.ndarray, int, int]:
        if not (isinstance(sample, (list, tuple)) and len(sample) == 3):
            raise DatasetFileError(self.path, f"{self.split} entry {i} must be (points, label, "
                                              f"original label), got {type(sample).__name__}")
        points, label, original = sample
        check_point_array(points, f"{self.path} [{self.split} entry {i}]", columns=(3, 6))
        label = _cache_label(label, i, way, self.path)
        return points.astype(np.float32), label, int(np.asarray(original).reshape(-1)[0])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        points, label, original = self.samples[index]
        points = _normalised(points, self.use_normals, self.path)
        return {"index": index, "points": _shuffled(points, self.split == "train"),
                "label": torch.tensor(label, dtype=torch.int64),
                "original_label": torch.tensor(original, dtype=torch.int64)}


def modelnet_class_names(root: PathLike, num_category: int = 40) -> list[str]:
    """Class names as written in the shape-names file (underscores kept, e.g. 'night_stand')."""
    return read_list_file(os.path.join(os.fspath(root), f"modelnet{num_category}_shape_names.txt"),
                          "ModelNet class names")


__all__ = ["ModelNet", "ModelNetFewShot", "build_modelnet_cache", "read_modelnet_cache",
           "modelnet_class_names", "shape_class", "fps_rows"]
