"""`recon-fast pack`: convert a dataset into shards of fixed-size clouds with teacher features.

Output folder::

    plan.json              settings + source description (a resumed pack must match it)
    text_table.npy         (C, 20, 3, D) text-teacher features of every class prompt (ShapeNet)
    shard-000000.rfshard   shards of `shard_size` shapes (see shard.py), written atomically
    index.json             written last: counts, per-shard sizes and CRC-32s, feature dims

Shard ``k`` always holds source shapes ``k * shard_size ...``, and its bytes depend only on the
plan, so a killed pack continues where it stopped (finished shards are kept, half-written
temporary files are discarded) and yields the same shards as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Optional

import numpy as np

from recon_fast.errors import DatasetFileError, DatasetNotFoundError, InputError
from recon_fast.data.packed.shard import (SUFFIX, Shard, ShardError, file_crc32, shard_entry,
                                          shard_name, write_shard_atomic)
from recon_fast.data.packed.sources import ShapeItem, open_source
from recon_fast.ops.validate import is_int

PACK_FORMAT = 1
INDEX = "index.json"
PLAN = "plan.json"
TEXT_TABLE = "text_table.npy"
WORK_DIR = ".work"
DTYPES = ("float16", "float32")
CLIP_NAMES = {"ViT-B/32": "ViT-B-32", "ViT-B/16": "ViT-B-16", "ViT-L/14": "ViT-L-14"}
TIMM_NAMES = ("vit_base_patch16_224_in21k",)


@dataclasses.dataclass
class PackSettings:
    points: int = 8192          # points per stored cloud
    xyz_dtype: str = "float16"
    rgb: bool = False           # store per-point colour (OpenShape)
    shard_size: int = 1024      # shapes per shard
    feature_dtype: str = "float16"
    image_slots: int = 13       # image features kept per shape (OpenShape: thumbnail + 12 views)
    text_slots: int = 8         # text features kept per shape (OpenShape texts and captions)
    seed: int = 0               # which points are kept when a file has more than `points`

    def check(self) -> None:
        for name in ("points", "shard_size", "image_slots", "text_slots"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise InputError(f"{name} must be a positive int, got {value!r}")
        for name in ("xyz_dtype", "feature_dtype"):
            if getattr(self, name) not in DTYPES:
                raise InputError(f"{name} must be one of {DTYPES}, got {getattr(self, name)!r}")
        if self.shard_size > 2**31:
            raise InputError(f"shard_size {self.shard_size} is too large")


@dataclasses.dataclass
class Teachers:
    """Teachers run at pack time for sources without stored features (ShapeNet)."""

    text: Optional[str] = None    # official names: ViT-B/32, ...
    image: Optional[str] = None   # CLIP names or vit_base_patch16_224_in21k
    weights: Optional[str] = None  # CLIP weights file or "random"
    image_weights: Optional[str] = None
    device: str = "cpu"
    cache_dir: Optional[str] = None

    def describe(self) -> dict:
        return {"text": self.text, "image": self.image, "weights": self.weights,
                "image_weights": self.image_weights}


# ------------------------------------------------------------------------------ the plan


def make_plan(source, settings: PackSettings, teachers: Teachers) -> dict:
    first = source.read(0, settings.points)
    plan = {"format": PACK_FORMAT, "source": source.describe(),
            "settings": dataclasses.asdict(settings), "teachers": teachers.describe(),
            "count": len(source), "num_shards": -(-len(source) // settings.shard_size),
            "image_dim": None, "text_dim": None, "class_texts": source.class_texts,
            "has_rgb": bool(settings.rgb and first.rgb is not None)}
    if first.image_features is not None:
        plan["image_dim"] = int(first.image_features.shape[1])
    if first.text_features is not None:
        plan["text_dim"] = int(first.text_features.shape[1])
    if settings.rgb and first.rgb is None:
        raise InputError(f"--rgb was asked for but {source.describe()['root']} has no 'rgb'")
    return plan


def _check_resumable(out_dir: str, plan: dict) -> None:
    path = os.path.join(out_dir, PLAN)
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        old = json.load(f)
    if old != plan:
        differ = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
        raise InputError(f"--out {out_dir} holds a pack made with different settings "
                         f"({differ} differ); "
                         "pack into a new --out folder")


def _write_json_atomic(path: str, value) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save_npy_atomic(path: str, array: np.ndarray) -> None:
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ teachers


def _image_teacher(teachers: Teachers, clip_image):
    from recon_fast import teachers as T

    if teachers.image in CLIP_NAMES:
        return clip_image or T.build_clip_teachers(CLIP_NAMES[teachers.image], teachers.weights,
                                                   cache_dir=teachers.cache_dir)[1]
    if teachers.image in TIMM_NAMES:
        weights = teachers.image_weights or (
            "random" if teachers.weights == "random" else "pretrained")
        return T.ViTImageTeacher(teachers.image.replace("_in21k", ""), weights=weights)
    raise InputError(f"--image-teacher {teachers.image!r} is not supported; use one of "
                     f"{sorted(CLIP_NAMES) + list(TIMM_NAMES)}")


def run_teachers(source, teachers: Teachers, out_dir: str, progress: bool) -> dict:
    """Text table and per-shape image features of a ShapeNet source (cached across resumes)."""
    import torch

    from recon_fast import teachers as T

    result = {"text_dim": None, "image_dim": None}
    if not (teachers.text or teachers.image):
        return result
    if source.kind != "shapenet":
        raise InputError("--text-teacher/--image-teacher apply to shapenet sources; OpenShape "
                         "files carry their features")
    device = torch.device(teachers.device)
    clip_text = clip_image = None
    if teachers.text:
        if teachers.text not in CLIP_NAMES:
            raise InputError(f"--text-teacher {teachers.text!r} is not supported; use one of "
                             f"{sorted(CLIP_NAMES)}")
        name = CLIP_NAMES[teachers.text]
        if teachers.image == teachers.text:  # the zero-shot setting: one CLIP for both
            clip_text, clip_image = T.build_clip_teachers(name, teachers.weights,
                                                          cache_dir=teachers.cache_dir)
        else:
            clip_text = T.build_text_teacher(name, teachers.weights, cache_dir=teachers.cache_dir)
        table_path = os.path.join(out_dir, TEXT_TABLE)
        if not os.path.isfile(table_path):
            table = T.build_text_feature_table(clip_text.to(device), source.class_texts,
                                               teachers.cache_dir, progress=progress)
            _save_npy_atomic(table_path, table.features.float().numpy())
        result["text_dim"] = int(np.load(table_path, mmap_mode="r").shape[-1])
    if teachers.image:
        path = os.path.join(out_dir, WORK_DIR, "image_features.npy")
        if not os.path.isfile(path):
            teacher = _image_teacher(teachers, clip_image).to(device)
            cache = T.build_image_feature_cache(teacher, source.dataset, teachers.cache_dir,
                                                progress=progress, device=device)
            _save_npy_atomic(path, cache.features.float().numpy())
        source.image_features_path = path
        result["image_dim"] = int(np.load(path, mmap_mode="r").shape[-1])
    return result


# ------------------------------------------------------------------------------ shards


def _fixed_points(item: ShapeItem, index: int, settings: PackSettings, kind: str):
    """Exactly `settings.points` rows: ShapeNet keeps the first rows (the official N_POINTS);
    larger OpenShape clouds keep a subset drawn from (seed, shape index)."""
    n = len(item.xyz)
    if n == settings.points or kind == "shapenet":
        rows = slice(0, settings.points)
    else:
        rng = np.random.default_rng([settings.seed, index])
        rows = np.sort(rng.choice(n, settings.points, replace=False))
    rgb = item.rgb[rows] if item.rgb is not None else None
    return item.xyz[rows], rgb


def _slots(rows: Optional[np.ndarray], slots: int, dim: int, path: str, what: str):
    out = np.zeros((slots, dim), dtype=np.float32)
    if rows is None:
        return out, 0
    if rows.shape[1] != dim:
        raise DatasetFileError(path, f"{what} features have {rows.shape[1]} dims, the first "
                                     f"shape's have {dim}")
    kept = rows[:slots]
    out[: len(kept)] = kept
    return out, len(kept)


def build_shard_fields(source, plan: dict, shard_id: int) -> dict[str, np.ndarray]:
    """The arrays of shard `shard_id` (pure function of the plan and the source files)."""
    settings = PackSettings(**plan["settings"])
    start = shard_id * settings.shard_size
    stop = min(start + settings.shard_size, plan["count"])
    n = stop - start
    xyz_dtype, feat_dtype = np.dtype(settings.xyz_dtype), np.dtype(settings.feature_dtype)
    fields = {"xyz": np.empty((n, settings.points, 3), xyz_dtype),
              "label": np.empty(n, np.int32),
              "source_index": np.arange(start, stop, dtype=np.int64)}
    if plan["has_rgb"]:
        fields["rgb"] = np.empty((n, settings.points, 3), np.float16)
    if plan["image_dim"]:
        fields["image_feat"] = np.empty((n, settings.image_slots, plan["image_dim"]), feat_dtype)
        fields["image_count"] = np.empty(n, np.uint8)
    if plan["text_dim"] and source.kind != "shapenet":
        fields["text_feat"] = np.empty((n, settings.text_slots, plan["text_dim"]), feat_dtype)
        fields["text_count"] = np.empty(n, np.uint8)
    for row, index in enumerate(range(start, stop)):
        item = source.read(index, settings.points)
        where = getattr(source, "files", None)
        where = where[index] if where is not None else f"shape {index}"
        xyz, rgb = _fixed_points(item, index, settings, source.kind)
        if not (xyz != xyz[0]).any():  # pc_norm would divide by zero: refuse it here, by name
            raise DatasetFileError(where, f"all {len(xyz)} points coincide (degenerate cloud)")
        fields["xyz"][row] = xyz
        fields["label"][row] = item.label
        if "rgb" in fields:
            if rgb is None:
                raise DatasetFileError(where, "has no 'rgb' (the pack stores colour)")
            fields["rgb"][row] = rgb
        if "image_feat" in fields:
            fields["image_feat"][row], fields["image_count"][row] = _slots(
                item.image_features, settings.image_slots, plan["image_dim"], where, "image")
        if "text_feat" in fields:
            fields["text_feat"][row], fields["text_count"][row] = _slots(
                item.text_features, settings.text_slots, plan["text_dim"], where, "text")
    return fields


_WORKER: dict = {}


def _init_worker(source, plan: dict, out_dir: str) -> None:
    _WORKER.update(source=source, plan=plan, out_dir=out_dir)


def _pack_one(shard_id: int) -> dict:
    source, plan, out_dir = _WORKER["source"], _WORKER["plan"], _WORKER["out_dir"]
    fields = build_shard_fields(source, plan, shard_id)
    return write_shard_atomic(os.path.join(out_dir, shard_name(shard_id)), fields)


def _finished_entry(path: str) -> Optional[dict]:
    """Index entry of a complete shard already on disk, None if it is absent or damaged."""
    if not os.path.isfile(path):
        return None
    try:
        shard = Shard(path)
    except ShardError:
        return None
    return shard_entry(path, shard.count, os.path.getsize(path), file_crc32(path))


def _remove_temporaries(out_dir: str) -> None:
    for name in os.listdir(out_dir):
        ours = name.startswith("shard-") or name.endswith(".npy") or ".json" in name
        if ".tmp" in name and ours:
            os.remove(os.path.join(out_dir, name))


def pack(source_spec, out_dir: str, settings: Optional[PackSettings] = None, *,
         teachers: Optional[Teachers] = None, workers: int = 1, progress: bool = True,
         subset: str = "train", whole: bool = True) -> dict:
    """Pack `source_spec` into `out_dir` (resuming a previous run there); returns the index.

    `source_spec` is "shapenet:<dir>" or "openshape:<dir>", or an object with the reader
    protocol of sources.py (``kind``, ``class_texts``, ``len()``, ``describe()``,
    ``read(index, points)``), e.g. a synthetic set in a benchmark.
    """
    from tqdm import tqdm

    settings = settings or PackSettings()
    settings.check()
    teachers = teachers or Teachers()
    if not is_int(workers) or workers < 1:
        raise InputError(f"workers must be a positive int, got {workers!r}")
    workers = int(workers)
    if isinstance(source_spec, str):
        options = {"subset": subset, "whole": whole} if source_spec.startswith("shapenet:") else {}
        source = open_source(source_spec, **options)
    else:
        source = source_spec
    if len(source) == 0:
        raise DatasetFileError(source.describe().get("root", str(source_spec)), "lists no shapes")
    os.makedirs(os.path.join(out_dir, WORK_DIR), exist_ok=True)
    _remove_temporaries(out_dir)
    dims = run_teachers(source, teachers, out_dir, progress)
    plan = make_plan(source, settings, teachers)
    plan["image_dim"] = plan["image_dim"] or dims["image_dim"]
    plan["text_dim"] = plan["text_dim"] or dims["text_dim"]
    _check_resumable(out_dir, plan)
    _write_json_atomic(os.path.join(out_dir, PLAN), plan)

    entries: dict[int, dict] = {}
    for shard_id in range(plan["num_shards"]):
        entry = _finished_entry(os.path.join(out_dir, shard_name(shard_id)))
        if entry is not None:
            entries[shard_id] = entry
    todo = [i for i in range(plan["num_shards"]) if i not in entries]
    bar = tqdm(total=plan["num_shards"], initial=len(entries), desc="pack shards", unit="shard",
               disable=not progress, dynamic_ncols=True)
    if workers == 1 or len(todo) <= 1:
        _init_worker(source, plan, out_dir)
        for shard_id in todo:
            entries[shard_id] = _pack_one(shard_id)
            bar.update()
    else:
        import multiprocessing

        # fork (where available, as DataLoader workers do): children only read files and numpy,
        # and spawn would re-import torch in each one.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                                 initializer=_init_worker, initargs=(source, plan, out_dir)) as ex:
            for shard_id, entry in zip(todo, ex.map(_pack_one, todo)):
                entries[shard_id] = entry
                bar.update()
    bar.close()
    index = _index(plan, [entries[i] for i in range(plan["num_shards"])], out_dir)
    _write_json_atomic(os.path.join(out_dir, INDEX), index)
    _clear_work_dir(out_dir)
    return index


def _index(plan: dict, entries: list[dict], out_dir: str) -> dict:
    index = dict(plan)
    index["shards"] = entries
    index["count"] = sum(e["count"] for e in entries)
    table = os.path.join(out_dir, TEXT_TABLE)
    if os.path.isfile(table):
        shape = list(np.load(table, mmap_mode="r").shape)
        index["text_table"] = {"file": TEXT_TABLE, "shape": shape, "crc32": file_crc32(table)}
    else:
        index["text_table"] = None
    return index


def _clear_work_dir(out_dir: str) -> None:
    work = os.path.join(out_dir, WORK_DIR)
    for name in os.listdir(work):
        os.remove(os.path.join(work, name))
    os.rmdir(work)


def shard_paths(out_dir: str, index: dict) -> list[str]:
    return [os.path.join(out_dir, e["file"]) for e in index["shards"]]


def read_index(root: str) -> dict:
    """The pack's index.json; clear errors for a missing, unfinished or foreign folder."""
    path = os.path.join(root, INDEX)
    if not os.path.isdir(root):
        raise DatasetNotFoundError(f"packed dataset folder not found: {root}")
    if not os.path.isfile(path):
        hint = " (an unfinished pack: run `recon-fast pack` again with the same --out)" \
            if os.path.isfile(os.path.join(root, PLAN)) else ""
        raise DatasetNotFoundError(f"packed dataset index not found: {path}{hint}")
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise DatasetFileError(path, f"not a valid pack index ({e})") from e
    if not isinstance(index, dict) or index.get("format") != PACK_FORMAT or "shards" not in index:
        raise DatasetFileError(path, f"not a recon_fast pack index of format {PACK_FORMAT}")
    return index


def verify_pack(root: str) -> list[tuple[str, str]]:
    """Check every shard fully (header, size, field and file CRC-32s): (file, problem) of each
    bad one."""
    from recon_fast.data.packed.shard import verify_shard

    index = read_index(root)
    bad = []
    for entry in index["shards"]:
        path = os.path.join(root, entry["file"])
        try:
            if not os.path.isfile(path):
                raise ShardError(path, "is missing")
            verify_shard(path, entry)
        except ShardError as e:
            bad.append((entry["file"], str(e)))
    return bad


__all__ = ["PackSettings", "Teachers", "pack", "read_index", "verify_pack", "shard_paths",
           "SUFFIX"]
