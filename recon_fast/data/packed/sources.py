"""Datasets `recon-fast pack` reads, one shape at a time.

* ``shapenet:<ShapeNet55-34 folder>``: the official ShapeNet-55 layout (see
  :mod:`recon_fast.data.shapenet`); label = row of shapenet55.json; text comes from the
  per-class prompt table (20 prefixes x 3 suffixes) and the image feature of the one render,
  both computed by the teachers at pack time when asked for.
* ``openshape:<root or folder>``: OpenShape's per-shape files, as ReCon++ trains on them. Each
  ``.npy`` holds a pickled dict: ``xyz`` (N, 3), ``rgb`` (N, 3), ``image_feat`` (V, D) (12 views),
  ``thumbnail_feat`` (D,), ``text`` + ``text_feat`` (one {"original", "prompt_avg"} dict of (1, D)
  arrays per text), ``blip_caption`` / ``msft_caption`` + ``*_caption_feat`` (one such dict),
  ``retrieval_text`` + ``retrieval_text_feat`` (a list of them). The shape list is
  ``meta_data/split/train_all.json`` (records with dataset, group, id; files under
  ``objaverse-processed/merged_for_training_final/<dataset>/<group>/<id>.npy``) when that file
  exists, otherwise every ``*.npy`` below the folder in sorted order.

  Packed per shape: the thumbnail then the view features (ReCon++ draws one of these 13); the
  texts' ``prompt_avg`` features (``original`` when absent), both captions' features and every
  retrieval text's ``original`` feature, up to the text-slot count. ReCon++ additionally drops
  texts flagged by its GPT-4 filter and draws one caption of the two; a loader draws uniformly
  among the packed texts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from recon_fast.data.io import check_point_array, read_npy_points, require_file
from recon_fast.errors import DatasetFileError, DatasetNotFoundError, InputError

SOURCE_KINDS = ("shapenet", "openshape")


@dataclass
class ShapeItem:
    """One shape as the packer stores it (features are float32 rows, possibly empty)."""

    xyz: np.ndarray                     # (N, 3)
    rgb: Optional[np.ndarray] = None    # (N, 3) in [0, 1]
    label: int = -1
    image_features: Optional[np.ndarray] = None  # (V, D)
    text_features: Optional[np.ndarray] = None   # (T, D)


def parse_source(spec: str) -> tuple[str, str]:
    """'shapenet:/data/ShapeNet55-34' -> ('shapenet', '/data/ShapeNet55-34')."""
    kind, sep, path = spec.partition(":")
    if not sep or kind not in SOURCE_KINDS or not path:
        raise InputError(f"--source {spec!r} must be <kind>:<path> with kind one of {SOURCE_KINDS}")
    return kind, os.path.expanduser(path)


class ShapeNetSource:
    """ShapeNet-55 shapes of a list (default: test + train lines, the pretraining set)."""

    kind = "shapenet"

    def __init__(self, root: str, subset: str = "train", whole: bool = True):
        from recon_fast.data.shapenet import ShapeNet55, ShapeNetPaths

        self.root = root
        self.dataset = ShapeNet55(ShapeNetPaths.from_root(root), subset, 1, whole=whole,
                                  n_points=1, image="none")
        self.subset, self.whole = subset, whole
        self.image_features_path: Optional[str] = None  # (len, D) rows from the image teacher

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def class_texts(self) -> list[str]:
        return self.dataset.class_texts

    def describe(self) -> dict:
        names = [r.file_name for r in self.dataset.records]
        return {"kind": self.kind, "root": os.path.abspath(self.root), "subset": self.subset,
                "whole": self.whole, "count": len(names), "names_digest": _digest(names)}

    def read(self, index: int, points: int) -> ShapeItem:
        record = self.dataset.records[index]
        xyz = read_npy_points(self.dataset.point_path(index), min_rows=points)[:points]
        image = None
        if self.image_features_path is not None:
            image = np.load(self.image_features_path, mmap_mode="r")[index][None].astype(np.float32)
        return ShapeItem(xyz, label=self.dataset.synset_to_label[record.taxonomy_id],
                         image_features=image)


class OpenShapeSource:
    """OpenShape / ReCon++ per-shape ``.npy`` dicts (see the module docstring for the keys)."""

    kind = "openshape"
    SPLIT = os.path.join("meta_data", "split", "train_all.json")
    DATA_DIR = os.path.join("objaverse-processed", "merged_for_training_final")

    def __init__(self, root: str):
        self.root = root
        if not os.path.isdir(root):
            raise DatasetNotFoundError(f"OpenShape folder not found: {root}")
        split = os.path.join(root, self.SPLIT)
        self.files = self._from_split(split) if os.path.isfile(split) else self._from_glob(root)
        if not self.files:
            raise DatasetFileError(root, "holds no .npy shape files (and no "
                                         f"{self.SPLIT} shape list)")

    def _from_split(self, split: str) -> list[str]:
        with open(split, encoding="utf-8") as f:
            records = json.load(f)
        try:
            return [os.path.join(self.root, self.DATA_DIR, r["dataset"], r["group"],
                                 r["id"] + ".npy") for r in records]
        except (TypeError, KeyError) as e:
            raise DatasetFileError(split, f"records need 'dataset', 'group' and 'id' ({e})") from e

    def _from_glob(self, root: str) -> list[str]:
        found = []
        for folder, _, names in os.walk(root):
            found += [os.path.join(folder, n) for n in names if n.endswith(".npy")]
        return sorted(found)

    def __len__(self) -> int:
        return len(self.files)

    class_texts = None

    def describe(self) -> dict:
        names = [os.path.relpath(p, self.root) for p in self.files]
        return {"kind": self.kind, "root": os.path.abspath(self.root), "count": len(names),
                "names_digest": _digest(names)}

    def read(self, index: int, points: int) -> ShapeItem:
        path = self.files[index]
        data = read_shape_dict(path)
        xyz = check_point_array(np.asarray(data.get("xyz")), path, min_rows=points)
        rgb = data.get("rgb")
        if rgb is not None:
            rgb = check_point_array(np.asarray(rgb), path, min_rows=len(xyz))
        return ShapeItem(xyz.astype(np.float32),
                         None if rgb is None else rgb.astype(np.float32),
                         image_features=_image_rows(data, path),
                         text_features=_text_rows(data, path))


def read_shape_dict(path: str) -> dict:
    """Load an ``.npy`` that holds a pickled dict, allowing only numpy arrays and containers in
    the pickle (``np.load(allow_pickle=True)`` would run any code the file names)."""
    from recon_fast.data.io import _ArrayUnpickler

    require_file(path, "OpenShape shape file")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            _, _, dtype = read_header(f)
            if dtype.hasobject:
                array = _ArrayUnpickler(f, path).load()
            else:
                raise DatasetFileError(path, f"holds a plain {dtype} array, not a pickled dict")
    except DatasetFileError:
        raise
    except Exception as e:  # numpy and pickle raise many types on damaged files
        raise DatasetFileError(path, f"not a readable .npy dict ({type(e).__name__}: {e})") from e
    value = array.item() if isinstance(array, np.ndarray) and array.shape == () else array
    if not isinstance(value, dict) or "xyz" not in value:
        raise DatasetFileError(path, "expected a dict with at least the key 'xyz'")
    return value


def _feature_row(value, path: str, what: str) -> np.ndarray:
    row = np.asarray(value, dtype=np.float32).reshape(-1)
    if row.size == 0 or not np.isfinite(row).all():
        raise DatasetFileError(path, f"{what} is empty or not finite")
    return row


def _embedding(entry, path: str, what: str, version: str) -> np.ndarray:
    if isinstance(entry, dict):
        key = version if version in entry else "original"
        if key not in entry:
            raise DatasetFileError(path, f"{what} has neither 'prompt_avg' nor 'original'")
        entry = entry[key]
    return _feature_row(entry, path, what)


def _text_rows(data: dict, path: str) -> Optional[np.ndarray]:
    rows = [_embedding(e, path, "text_feat", "prompt_avg") for e in data.get("text_feat", []) or []]
    for name in ("blip_caption", "msft_caption"):
        if data.get(name) and data.get(f"{name}_feat") is not None:
            rows.append(_embedding(data[f"{name}_feat"], path, f"{name}_feat", "prompt_avg"))
    for e in data.get("retrieval_text_feat", []) or []:
        rows.append(_embedding(e, path, "retrieval_text_feat", "original"))
    return _stack(rows, path, "text")


def _image_rows(data: dict, path: str) -> Optional[np.ndarray]:
    rows = []
    if data.get("thumbnail_feat") is not None:
        rows.append(_feature_row(data["thumbnail_feat"], path, "thumbnail_feat"))
    views = data.get("image_feat")
    if views is not None:
        views = np.asarray(views, dtype=np.float32)
        rows += [_feature_row(v, path, "image_feat") for v in views.reshape(-1, views.shape[-1])]
    return _stack(rows, path, "image")


def _stack(rows: list, path: str, what: str) -> Optional[np.ndarray]:
    if not rows:
        return None
    if len({r.size for r in rows}) != 1:
        sizes = sorted({r.size for r in rows})
        raise DatasetFileError(path, f"{what} features differ in size: {sizes}")
    return np.stack(rows)


def _digest(names: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:32]


def open_source(spec: str, **options):
    kind, path = parse_source(spec)
    if kind == "shapenet":
        return ShapeNetSource(path, **options)
    return OpenShapeSource(path)
