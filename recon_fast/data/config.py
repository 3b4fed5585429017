"""Build a dataset from an official ReCon dataset config (``cfgs/dataset_configs/*.yaml``)."""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from torch.utils.data import Dataset

from recon_fast.errors import ConfigError

from recon_fast.data.modelnet import ModelNet, ModelNetFewShot
from recon_fast.data.scanobjectnn import ScanObjectNN
from recon_fast.data.shapenet import ShapeNet55, ShapeNetPaths


def _get(cfg: Mapping[str, Any], key: str, source: str) -> Any:
    if key not in cfg:
        raise ConfigError(f"dataset config ({source}) is missing key {key!r}; it has {sorted(cfg)}")
    return cfg[key]


def dataset_from_config(base: Mapping[str, Any], others: Optional[Mapping[str, Any]] = None,
                        data_root: Optional[str] = None, *, image: str = "augment",
                        cache_dir: Optional[str] = None, progress: bool = True) -> Dataset:
    """Instantiate the dataset an official config describes.

    Args:
        base: the ``_base_`` mapping (NAME, DATA_PATH/ROOT, N_POINTS, ...). NAME "Embedded"
            (pretraining items) or "EmbeddedShapes" (classification items) selects the embedded
            procedural set, generated on first use; its optional keys are SEED, CLASSES,
            SHAPES_PER_CLASS, TEST_PER_CLASS and N_POINTS. "EmbeddedProbe": the harder probe
            set of the same classes (also KEEP, ROTATE, NOISE), generated in memory.
        others: the ``others`` mapping (subset, npoints, whole, way, shot, fold, ...).
        data_root: prefix for relative paths (the official configs use ``data/...``).
        image: ShapeNet-style image loading: "augment" (official), "center" or "none".
        cache_dir: where the embedded set is generated (default: RECON_FAST_CACHE).
    """
    others = dict(others or {})
    name = _get(base, "NAME", "_base_")
    subset = _get(others, "subset", "others")
    if "way" in others and name != "ModelNetFewShot":  # no fold files: generate the episode
        return _episode_from_config(base, others, data_root, image=image, cache_dir=cache_dir,
                                    progress=progress)
    if name in ("Embedded", "EmbeddedShapes"):
        return _embedded_from_config(name, base, others, subset, image, cache_dir, progress)
    if name == "EmbeddedProbe":
        return _probe_from_config(base, subset)

    def path(key: str) -> str:
        value = os.fspath(_get(base, key, name))
        return os.path.join(data_root, value) if data_root and not os.path.isabs(value) else value

    if name == "ShapeNet":
        paths = ShapeNetPaths(path("DATA_PATH"), path("PC_PATH"), path("IMG_PATH"),
                              path("TEXT_PATH"))
        return ShapeNet55(paths, subset, int(others.get("npoints", 1024)),
                          whole=bool(others.get("whole", False)),
                          ratio=float(base.get("ratio", 1.0)),
                          n_points=int(base.get("N_POINTS", 8192)), image=image)
    if name == "ModelNet":
        return ModelNet(path("DATA_PATH"), subset, int(base.get("NUM_CATEGORY", 40)),
                        n_points=int(base.get("N_POINTS", 8192)),
                        use_normals=bool(base.get("USE_NORMALS", False)))
    if name == "ModelNetFewShot":
        return ModelNetFewShot(path("DATA_PATH"), int(_get(others, "way", name)),
                               int(_get(others, "shot", name)), int(_get(others, "fold", name)),
                               subset, use_normals=bool(base.get("USE_NORMALS", False)))
    if name in ("ScanObjectNN", "ScanObjectNN_hardest"):
        root = path("ROOT")
        if name == "ScanObjectNN_hardest":
            variant = "hardest"
        else:  # OBJ_ONLY lives in main_split_nobg, OBJ_BG in main_split
            variant = "objectonly" if os.path.basename(os.path.normpath(root)).endswith("nobg") \
                else "objectbg"
        return ScanObjectNN(root, subset, variant)
    raise ConfigError(f"unknown dataset NAME {name!r}; expected ShapeNet, ModelNet, "
                     "ModelNetFewShot, ScanObjectNN, ScanObjectNN_hardest, Embedded, "
                     "EmbeddedShapes or EmbeddedProbe")


def _episode_from_config(base: Mapping[str, Any], others: Mapping[str, Any],
                         data_root: Optional[str], **kwargs) -> Dataset:
    """`way`/`shot`/`fold` (and optional `query`) on a plain classification set: a generated
    N-way K-shot episode of its `subset` split (see :mod:`recon_fast.data.fewshot`)."""
    from recon_fast.data.fewshot import FewShotEpisode

    episode = {k: others[k] for k in ("way", "shot", "fold", "query") if k in others}
    rest = {k: v for k, v in others.items() if k not in episode}
    source = f"others of a {base['NAME']} episode"
    split = "train" if rest["subset"] == "train" else "test"
    return FewShotEpisode(dataset_from_config(base, rest, data_root, **kwargs),
                          int(_get(episode, "way", source)), int(_get(episode, "shot", source)),
                          int(_get(episode, "fold", source)), split,
                          query=int(episode["query"]) if "query" in episode else None)


def _embedded_from_config(name: str, base: Mapping[str, Any], others: Mapping[str, Any],
                          subset: str, image: str, cache_dir: Optional[str],
                          progress: bool) -> Dataset:
    from recon_fast.data.embedded import prepare_embedded

    classes = base.get("CLASSES")
    embedded = prepare_embedded(cache_dir, seed=int(base.get("SEED", 0)),
                                classes=list(classes) if classes else None,
                                shapes_per_class=int(base.get("SHAPES_PER_CLASS", 32)),
                                test_per_class=int(base.get("TEST_PER_CLASS", 8)),
                                n_points=int(base.get("N_POINTS", 8192)), progress=progress)
    if name == "Embedded":
        return embedded.pretrain_dataset(subset, int(others.get("npoints", 1024)),
                                         whole=bool(others.get("whole", False)), image=image)
    return embedded.classification_dataset(subset)


def _probe_from_config(base: Mapping[str, Any], subset: str) -> Dataset:
    """NAME EmbeddedProbe: the harder embedded classification set (partial, rotated, noisy
    clouds; see recon_fast.data.embedded.probe), keys as EmbeddedShapes plus KEEP, ROTATE, NOISE."""
    from recon_fast.data.embedded.probe import EmbeddedProbe, ProbeConfig

    defaults = ProbeConfig()
    classes = base.get("CLASSES")
    config = ProbeConfig(seed=int(base.get("SEED", defaults.seed)),
                         classes=tuple(classes) if classes else defaults.classes,
                         shapes_per_class=int(base.get("SHAPES_PER_CLASS",
                                                       defaults.shapes_per_class)),
                         test_per_class=int(base.get("TEST_PER_CLASS", defaults.test_per_class)),
                         n_points=int(base.get("N_POINTS", defaults.n_points)),
                         keep=float(base.get("KEEP", defaults.keep)),
                         rotate=str(base.get("ROTATE", defaults.rotate)),
                         noise=float(base.get("NOISE", defaults.noise)))
    return EmbeddedProbe(config, "train" if subset == "train" else "test")
