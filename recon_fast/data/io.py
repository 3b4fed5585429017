"""Readers for the published dataset files; every failure names the file and what was wrong.

The official loaders crash deep inside numpy/OpenCV/h5py (or, for OpenCV, silently get ``None``)
when a file is missing or damaged. These readers check existence, decode errors and array shapes
up front and raise :class:`DatasetNotFoundError` / :class:`DatasetFileError` with the path in the
message.
"""

from __future__ import annotations

import json
import os
import pickle
from typing import Any, Sequence, Union

import numpy as np

from recon_fast.errors import DatasetFileError, DatasetNotFoundError

PathLike = Union[str, os.PathLike]


def require_file(path: PathLike, what: str) -> str:
    """Return `path` as str, or raise DatasetNotFoundError saying which dataset file is missing."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        where = "directory exists" if os.path.isdir(os.path.dirname(path) or ".") else \
            "its directory does not exist either"
        raise DatasetNotFoundError(f"{what} not found: {path} ({where})")
    return path


def require_dir(path: PathLike, what: str) -> str:
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DatasetNotFoundError(f"{what} directory not found: {path}")
    return path


def read_list_file(path: PathLike, what: str = "list file") -> list[str]:
    """Non-empty stripped lines of a text list file (ShapeNet/ModelNet split lists, class names)."""
    path = require_file(path, what)
    try:
        with open(path, "r", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise DatasetFileError(path, f"{what} is not UTF-8 text ({e})") from e
    return [line.strip() for line in lines if line.strip()]


def check_point_array(array: Any, path: PathLike, *, min_rows: int = 1,
                      columns: Sequence[int] = (3,)) -> np.ndarray:
    """Check that `array` is a finite 2-D (rows, C) numeric array with C in `columns`."""
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        kind = type(array).__name__ if not isinstance(array, np.ndarray) else f"dtype {array.dtype}"
        raise DatasetFileError(path, f"expected a numeric point array, got {kind}")
    want = f"(N >= {min_rows}, {' or '.join(map(str, columns))})"
    if array.ndim != 2 or array.shape[1] not in columns or array.shape[0] < min_rows:
        raise DatasetFileError(path, f"expected points of shape {want}, got shape {array.shape}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DatasetFileError(path, "point array contains NaN or infinite values")
    return array


def read_npy_points(path: PathLike, *, min_rows: int = 1,
                    columns: Sequence[int] = (3,)) -> np.ndarray:
    """Load a ``.npy`` point cloud as float32 (N, C) (ShapeNet ``shapenet_pc/*.npy``)."""
    path = require_file(path, "point cloud file")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DatasetFileError(path, f"not a readable .npy array ({e})") from e
    return check_point_array(array, path, min_rows=min_rows, columns=columns).astype(np.float32)


def read_bgr_image(path: PathLike) -> np.ndarray:
    """Read an image the way ``cv2.imread(path)`` does by default: uint8 (H, W, 3) in BGR order.

    OpenCV's default colour mode drops alpha without compositing, expands grey and palette images
    to three channels and reduces 16-bit images to 8 bits (by dropping the low byte); Pillow's
    decoders give the same pixels, and the channel order is then reversed to BGR.
    """
    from PIL import Image, UnidentifiedImageError

    path = require_file(path, "image file")
    try:
        with Image.open(path) as img:
            img.load()
            rgb = _pil_to_rgb_uint8(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetFileError(path, f"not a readable image ({e})") from e
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _pil_to_rgb_uint8(img) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: OpenCV keeps the high byte.
        grey = (np.asarray(img, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    # "RGBA"/"LA"/"P"/"L"/"CMYK": Pillow's RGB conversion drops alpha without blending, like OpenCV.
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_h5_arrays(path: PathLike, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Read whole datasets `keys` from an HDF5 file (ScanObjectNN ``*.h5``)."""
    import h5py

    path = require_file(path, "HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in keys if k not in f]
            if missing:
                raise DatasetFileError(path, f"missing HDF5 dataset(s) {missing}; "
                                             f"the file has {sorted(f.keys())}")
            return {k: np.asarray(f[k][()]) for k in keys}
    except DatasetFileError:
        raise
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise DatasetFileError(path, f"not a readable HDF5 file ({e})") from e


# Only what the published pickles (ModelNet .dat caches, few-shot .pkl folds) need: numpy arrays,
# numpy scalars and plain containers. Anything else would be code execution on load.
_ALLOWED_PICKLE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
    ("builtins", "list"), ("builtins", "tuple"), ("builtins", "dict"), ("builtins", "set"),
    ("collections", "OrderedDict"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_PICKLE_GLOBALS:
            raise DatasetFileError(self.path, f"refusing to unpickle {module}.{name}: only numpy "
                                              "arrays, numpy scalars and containers are allowed")
        return super().find_class(module, name)


def read_array_pickle(path: PathLike, what: str = "pickle file") -> Any:
    """Unpickle a file that may only hold numpy arrays/scalars, lists, tuples and dicts."""
    path = require_file(path, what)
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, path).load()
    except DatasetFileError:
        raise
    except Exception as e:  # pickle raises many types (UnpicklingError, EOFError, ValueError, ...)
        raise DatasetFileError(path, f"not a readable {what} ({type(e).__name__}: {e})") from e


def read_category_table(path: PathLike) -> list[tuple[int, str, str]]:
    """Read ``shapenet55.json`` as rows of (label, synset id, description).

    The official loader uses ``pandas.read_json`` (default orient "columns") and ``iterrows``; this
    reproduces what pandas yields for the layouts it accepts:

    * columns of index->value maps ``{"catalogue": {"0": 2691156, ...}, "describe": {...}}``: rows
      in key order; pandas turns integer-like index keys into ints, and that index is the label;
    * columns of lists ``{"catalogue": [...], "describe": [...]}`` or a list of records
      ``[{"catalogue": ..., "describe": ...}, ...]``: rows in order, label = row position.

    ``catalogue`` may be a number or a numeric string (pandas coerces both to an integer, dropping
    the synset's leading zero); the official loader puts one "0" back, and so does this reader.
    """
    path = require_file(path, "category file (shapenet55.json)")
    try:
        with open(path, "r", encoding="utf-8") as f:
            table = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetFileError(path, f"not valid JSON ({e})") from e
    labels, catalogue, describe = _table_columns(table, path)
    rows = []
    for label, synset, text in zip(labels, catalogue, describe):
        rows.append((label, "0" + str(_catalogue_int(synset, path)), _describe_text(text, path)))
    return rows


def _table_columns(table: Any, path: str) -> tuple[list[int], list, list]:
    need = ("catalogue", "describe")
    if isinstance(table, list):
        if not all(isinstance(r, dict) and all(k in r for k in need) for r in table):
            raise DatasetFileError(path, "a list table must hold records with keys "
                                         "'catalogue' and 'describe'")
        return (list(range(len(table))), [r["catalogue"] for r in table],
                [r["describe"] for r in table])
    if not isinstance(table, dict) or not all(k in table for k in need):
        keys = list(table)[:5] if isinstance(table, dict) else type(table).__name__
        raise DatasetFileError(path, f"expected columns 'catalogue' and 'describe', got {keys}")
    cat, desc = table["catalogue"], table["describe"]
    if isinstance(cat, list) and isinstance(desc, list) and len(cat) == len(desc):
        return list(range(len(cat))), cat, desc
    if isinstance(cat, dict) and isinstance(desc, dict) and set(cat) == set(desc):
        keys = list(cat)
        try:
            labels = [int(k) for k in keys]
        except ValueError:
            raise DatasetFileError(path, f"row keys must be integers (they become the labels), "
                                         f"got {keys[:5]}") from None
        return labels, [cat[k] for k in keys], [desc[k] for k in keys]
    raise DatasetFileError(path, "columns 'catalogue' and 'describe' must both be lists of the "
                                 "same length or both maps with the same row keys")


def _catalogue_int(value: Any, path: str) -> int:
    if isinstance(value, bool):
        raise DatasetFileError(path, f"catalogue entry {value!r} is not a synset number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise DatasetFileError(path, f"catalogue entry {value!r} is not a synset number")


def _describe_text(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DatasetFileError(path, f"describe entry {value!r} is not a non-empty string")
    return value
