"""Experiment configs: the official ReCon YAML format, `_base_` includes, overrides, validation.

Accepts the official files (cfgs/pretrain/base.yaml, cfgs/full/finetune_scan_hardest.yaml, ...)
as they are, plus the presets shipped in recon_fast/configs. A config is a nested `Config`
(a dict with attribute access). Every key is checked against the known schema, so a typo such
as `max_epochs` fails with a suggestion instead of being silently ignored.
"""

from __future__ import annotations

import copy
import difflib
import os
from typing import Any, Iterable

import yaml

from recon_fast.errors import ConfigError  # noqa: F401  (re-exported: its historical home)

PRESET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


class Config(dict):
    """A dict whose keys are also attributes (cfg.model.trans_dim), recursively."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r} (keys: {sorted(self)})") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __deepcopy__(self, memo):
        return Config({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def to_dict(self) -> dict:
        return {k: v.to_dict() if isinstance(v, Config) else v for k, v in self.items()}


def to_config(value: Any) -> Any:
    if isinstance(value, dict):
        return Config({k: to_config(v) for k, v in value.items()})
    if isinstance(value, list):
        return [to_config(v) for v in value]
    return value


# The keys a config may hold. A dict value is a nested schema; None accepts any value; the key
# "*" in a schema accepts any sub-key (e.g. the kwargs of an optimizer).
_ANY = None
# A dataset entry: `_base_` holds the dataset file (cfgs/dataset_configs/*.yaml) and `others`
# the per-split options (subset, npoints, bs, whole, way/shot/fold, ...).
_DATASET = {
    "_base_": {"NAME": _ANY, "DATA_PATH": _ANY, "N_POINTS": _ANY, "PC_PATH": _ANY,
               "IMG_PATH": _ANY, "TEXT_PATH": _ANY, "ratio": _ANY, "ROOT": _ANY,
               "NUM_CATEGORY": _ANY, "USE_NORMALS": _ANY, "*": _ANY},
    "others": {"*": _ANY},
}
SCHEMA: dict = {
    "optimizer": {"type": _ANY, "kwargs": {"*": _ANY}, "part": _ANY},
    "scheduler": {"type": _ANY, "kwargs": {"*": _ANY}},
    "bnmscheduler": {"type": _ANY, "kwargs": {"*": _ANY}},
    "dataset": {"train": _DATASET, "val": _DATASET, "test": _DATASET, "extra_train": _DATASET,
                "extra_val": _DATASET, "svm_train": _DATASET, "svm_test": _DATASET},
    "model": {
        "NAME": _ANY, "group_size": _ANY, "num_group": _ANY, "loss": _ANY,
        "transformer_config": {
            "mask_ratio": _ANY, "mask_type": _ANY, "trans_dim": _ANY, "encoder_dims": _ANY,
            "depth": _ANY, "drop_path_rate": _ANY, "num_heads": _ANY, "decoder_depth": _ANY,
            "decoder_num_heads": _ANY, "cls_dim": _ANY, "return_all_tokens": _ANY,
        },
        "img_encoder": _ANY, "text_encoder": _ANY, "self_contrastive": _ANY, "trans_dim": _ANY,
        "depth": _ANY, "drop_path_rate": _ANY, "cls_dim": _ANY, "num_heads": _ANY,
        "encoder_dims": _ANY, "type": _ANY, "ratio": _ANY, "img_queries": _ANY,
        "text_queries": _ANY, "attention_backend": _ANY,
        "stream": _ANY, "cls_sample": _ANY, "class_dim": _ANY,  # TwoTower (cfgs/*twotower*)
    },
    "npoints": _ANY, "total_bs": _ANY, "step_per_update": _ANY, "max_epoch": _ANY,
    "grad_norm_clip": _ANY, "validate": _ANY, "consider_metric": _ANY,
    # recon_fast additions (runtime options that the official code passes on its command line)
    "run": {"*": _ANY},
}


def _check_section(node: Any, schema: dict, path: str) -> None:
    """A section of the schema must be a mapping: `--set model.transformer_config=3` or an
    empty `transformer_config:` would otherwise build the default model without a word."""
    known = ", ".join(sorted(k for k in schema if k != "*"))
    if node is None or (node == {} and "*" not in schema):
        raise ConfigError(f"config section {path} is empty; it needs keys ({known})")
    if not isinstance(node, dict):
        raise ConfigError(f"config key {path} must be a section with keys "
                          f"({known or 'any'}), got {type(node).__name__} {node!r}")


def _check_keys(node: Any, schema: Any, path: str) -> None:
    if schema is None or not isinstance(schema, dict):
        return
    if path:
        _check_section(node, schema, path)
    elif not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in schema:
            _check_keys(value, schema[key], f"{path}.{key}" if path else key)
        elif "*" in schema:
            continue
        else:
            where = path or "the top level"
            close = difflib.get_close_matches(str(key), [k for k in schema if k != "*"], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config key {key!r} in {where}{hint} "
                              f"(known: {', '.join(sorted(k for k in schema if k != '*'))})")


def _resolve_base(base: str, config_file: str) -> str:
    """`_base_` paths are relative to the repository root in the official configs: try the config
    file's folder and its parents, the working directory, then our presets."""
    if os.path.isabs(base) and os.path.exists(base):
        return base
    folder = os.path.dirname(os.path.abspath(config_file))
    candidates = []
    while True:
        candidates.append(os.path.join(folder, base))
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    candidates += [os.path.join(os.getcwd(), base), os.path.join(PRESET_DIR, base),
                   preset_path(base), os.path.join(PRESET_DIR, os.path.basename(base))]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise ConfigError(f"{config_file}: cannot find the _base_ file {base!r} (looked next to the "
                      f"config, in its parent folders, the working directory and {PRESET_DIR})")


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def _merge(base: dict, new: dict, config_file: str) -> dict:
    """Merge `new` into `base` as the official merge_new_config does: a `_base_: <file>` entry is
    replaced by that file's (merged) contents, kept under the `_base_` key."""
    for key, value in new.items():
        if key == "_base_" and isinstance(value, str):
            included_path = _resolve_base(value, config_file)
            base["_base_"] = _merge({}, _read_yaml(included_path), included_path)
        elif isinstance(value, dict):
            node = base.setdefault(key, {})
            if not isinstance(node, dict):
                node = base[key] = {}
            _merge(node, value, config_file)
        else:
            base[key] = value
    return base


def preset_path(name: str) -> str:
    """configs/<name>.yaml for a preset name such as "full/finetune_scan_hardest"; the official
    spelling "cfgs/full/finetune_scan_hardest.yaml" names the same preset."""
    name = name[len("cfgs/"):] if name.startswith("cfgs/") else name
    return os.path.join(PRESET_DIR, name if name.endswith(".yaml") else name + ".yaml")


def resolve_config_path(name_or_path: str) -> str:
    """A file, else the shipped preset of that name ("embedded", "full/finetune_scan_hardest",
    or an official path such as "cfgs/pretrain/base.yaml" when no such file exists here)."""
    if os.path.isfile(name_or_path):
        return name_or_path
    preset = preset_path(name_or_path)
    if os.path.isfile(preset):
        return preset
    raise ConfigError(f"config {name_or_path!r} is neither a file nor a preset "
                      f"(presets: {', '.join(list_presets())})")


def list_presets() -> list[str]:
    """Runnable presets, e.g. "embedded", "full/finetune_scan_hardest" (the dataset files that
    they include, dataset_configs/*, are not runs)."""
    names = []
    for folder, _, files in os.walk(PRESET_DIR):
        rel = os.path.relpath(folder, PRESET_DIR)
        if rel.split(os.sep)[0] == "dataset_configs":
            continue
        names += [os.path.normpath(os.path.join(rel, f[:-5])).replace(os.sep, "/")
                  for f in files if f.endswith(".yaml")]
    return sorted(names)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'model.transformer_config.depth=4' -> (['model', 'transformer_config', 'depth'], 4)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        # YAML 1.1 reads "1e-3" as a string; a user typing it on the command line means a number.
        try:
            value = float(value)
        except ValueError:
            pass
    return key.split("."), value


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def load_config(name_or_path: str, overrides: Iterable[str] = ()) -> Config:
    """Read a config file (or preset name), merge its `_base_` files, apply `key=value`
    overrides, and validate every key."""
    path = resolve_config_path(name_or_path)
    data = _merge({}, _read_yaml(path), path)
    data = apply_overrides(data, overrides)
    _check_keys(data, SCHEMA, "")
    return to_config(data)


def save_config(config: Config, path: str) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(config.to_dict(), f, sort_keys=False)
