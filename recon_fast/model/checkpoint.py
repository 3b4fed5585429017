"""Checkpoints in the official layout: load official pretrain/finetune files, save loadable ones.

Official checkpoints are ``torch.save({'base_model': state_dict, 'optimizer': ..., 'epoch': ...})``
(or ``{'model': state_dict}``); keys may carry ``module.`` (DataParallel/DDP). Downstream models
load pretraining checkpoints by dropping the ``MAE_encoder.`` / ``base_model.`` prefixes, as the
official ``load_model_from_ckpt`` does; the decoder and projection heads then stay unused and the
classification head stays missing, which the returned report lists. Teacher-encoder weights
(``img_encoder.*``, ``text_encoder.*``, present in the official ``ckpt-last.pth``) are skipped:
the models here take teacher features as inputs.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from recon_fast.errors import CheckpointError, CheckpointNotFoundError

logger = logging.getLogger("recon_fast.model")

STATE_KEYS = ("base_model", "model")  # where the official files keep the state dict
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers
TRUNK_PREFIXES = ("MAE_encoder.", "base_model.")  # dropped when a downstream model loads
TEACHER_PREFIXES = ("img_encoder.", "text_encoder.")


@dataclass
class LoadReport:
    """What a checkpoint load did; ``str(report)`` is a readable summary."""

    path: str
    model: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # model tensors not in the file
    unexpected: list[str] = field(default_factory=list)  # file tensors the model does not use
    skipped_teacher: list[str] = field(default_factory=list)  # img_encoder.* / text_encoder.*

    @property
    def complete(self) -> bool:
        """True when every model tensor came from the file."""
        return not self.missing

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {self.path} into {self.model}"]
        if self.missing:
            lines.append(f"missing from the checkpoint ({len(self.missing)}, left as "
                         f"initialised): {summarize_keys(self.missing)}")
        if self.unexpected:
            lines.append(f"unused checkpoint tensors ({len(self.unexpected)}): "
                         f"{summarize_keys(self.unexpected)}")
        if self.skipped_teacher:
            lines.append(f"skipped teacher-encoder tensors ({len(self.skipped_teacher)}): "
                         f"{summarize_keys(self.skipped_teacher)}")
        return "\n  ".join(lines)


def summarize_keys(keys: list[str]) -> str:
    """Group keys by their first name: 'MAE_decoder.* (46), mask_token, ...'."""
    groups: "OrderedDict[str, list[str]]" = OrderedDict()
    for key in keys:
        groups.setdefault(key.split(".", 1)[0], []).append(key)
    parts = []
    for head, members in groups.items():
        parts.append(members[0] if len(members) == 1 else f"{head}.* ({len(members)})")
    return ", ".join(parts)


def unwrap(model: nn.Module) -> nn.Module:
    """The module itself under DataParallel/DDP (``.module``) and torch.compile (``._orig_mod``)."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def read_state_dict(path: str | os.PathLike, *,
                    weights_only: bool = True) -> dict[str, torch.Tensor]:
    """Read the model state dict of a checkpoint file (wrapper prefixes removed).

    Accepts ``{'base_model': sd, ...}``, ``{'model': sd, ...}`` or a bare state dict.
    ``weights_only=True`` (default) refuses files holding arbitrary pickled objects.
    """
    ckpt = read_checkpoint(path, weights_only=weights_only)
    state = _find_state_dict(ckpt, path)
    return {_strip_wrappers(k): v for k, v in state.items()}


def _find_state_dict(ckpt: Mapping, path: Path) -> Mapping[str, torch.Tensor]:
    for key in STATE_KEYS:
        if isinstance(ckpt.get(key), Mapping):
            return ckpt[key]
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt  # a bare state dict
    raise CheckpointError(f"{path} has no model state dict: expected a 'base_model' or 'model' "
                          f"entry (or a bare state dict), found keys {sorted(map(str, ckpt))[:10]}")


def _strip_wrappers(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def _is_pretraining_model(model: nn.Module) -> bool:
    return hasattr(model, "MAE_encoder")


def _adapt_keys(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Downstream models take the student from ``MAE_encoder.*`` (official rule)."""
    if _is_pretraining_model(model):
        return dict(state)
    adapted = {}
    for key, value in state.items():
        for prefix in TRUNK_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        adapted[key] = value
    return adapted


def load_official_checkpoint(path: str | os.PathLike, model: nn.Module, *, strict: bool = False,
                             weights_only: bool = True, log: bool = True) -> LoadReport:
    """Load an official (or our) ReCon checkpoint into `model`.

    Args:
        path: a ``.pth`` file as the official code saves it.
        model: a :class:`~recon_fast.model.ReCon` (pretraining) or downstream model, possibly
            wrapped by DDP or torch.compile.
        strict: raise CheckpointError when tensors are missing or unused (teacher tensors aside).
        weights_only: passed to torch.load; keep True for files you did not make.
        log: log the summary on the "recon_fast.model" logger.

    Returns:
        A :class:`LoadReport` (loaded / missing / unexpected / skipped teacher keys).

    Raises:
        CheckpointNotFoundError (a FileNotFoundError): no such file. CheckpointError (a
        ValueError): unreadable file, no state dict, a tensor whose shape differs from the model's
        (named), or an incomplete load with strict=True.
    """
    target = unwrap(model)
    state = _adapt_keys(read_state_dict(path, weights_only=weights_only), target)
    teacher = [k for k in state if k.startswith(TEACHER_PREFIXES)]
    state = {k: v for k, v in state.items() if not k.startswith(TEACHER_PREFIXES)}
    own = target.state_dict()
    _check_shapes(path, state, own)
    result = target.load_state_dict(state, strict=False)
    report = LoadReport(path=str(path), model=type(target).__name__,
                        loaded=[k for k in state if k in own], missing=list(result.missing_keys),
                        unexpected=list(result.unexpected_keys), skipped_teacher=teacher)
    if log:
        logger.info("%s", report)
    if strict and (report.missing or report.unexpected):
        raise CheckpointError(f"checkpoint does not match the model exactly:\n  {report}")
    return report


def _check_shapes(path, state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> None:
    """ValueError naming every tensor (up to 5) whose shape differs from the model's."""
    wrong = [f"tensor {key!r} has shape {tuple(value.shape)} but the model expects "
             f"{tuple(own[key].shape)}"
             for key, value in state.items()
             if key in own and tuple(value.shape) != tuple(own[key].shape)]
    if wrong:
        more = f" (and {len(wrong) - 5} more)" if len(wrong) > 5 else ""
        raise CheckpointError(f"{path}: {'; '.join(wrong[:5])}{more}. The checkpoint was made with "
                         "other sizes (trans_dim, group_size, cls_dim or teacher widths)")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> None:
    """Save ``{'base_model': state_dict, 'config': ..., **extra}``, the official layout.

    Keys are the official names, so the official code loads the file as it loads its own;
    ``extra`` (epoch, optimizer state, metrics) should hold tensors and plain Python values so
    that the file stays loadable with ``weights_only=True``.
    """
    target = unwrap(model)
    payload: dict[str, Any] = {"base_model": target.state_dict()}
    config = getattr(target, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        payload["config"] = config.to_dict()
    payload.update(extra)
    save_atomic(payload, os.fspath(path))


# ------------------------------------------------------------------ checkpoint files (one home)

def read_checkpoint(path: str | os.PathLike, map_location="cpu", *,
                    weights_only: bool = True) -> dict:
    """torch.load a checkpoint dict; every failure is a CheckpointError naming the file.

    ``weights_only=True`` (default) refuses files holding arbitrary pickled objects.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint path is not a file: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for damaged files
        # A refused class (not damage) reads "Unsupported global"; damage is anything else.
        if isinstance(err, pickle.UnpicklingError) and "Unsupported global" in str(err):
            raise CheckpointError(
                f"{path} holds objects that torch.load(weights_only=True) refuses to unpickle "
                f"({err}); if you trust the file, pass weights_only=False") from err
        raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") \
            from err
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


class _WriteTarget:
    """The file torch.save writes to. torch's zip writer turns an OSError of `write` into a
    RuntimeError ("unexpected pos ..."); this remembers the original, so that a full disk is
    reported as one."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.file.flush()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def save_atomic(obj: dict, path: str) -> None:
    """torch.save to a temporary file in the same folder, then rename: a crash mid-write never
    leaves a truncated checkpoint behind (the previous one stays valid; the trainer's next run
    removes the temporary file). The file gets the mode that the umask
    gives new files (mkstemp's own is 0600). A full disk is a CheckpointError saying so."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pth", dir=folder)
    target = None
    try:
        with os.fdopen(fd, "wb") as f:
            target = _WriteTarget(f)
            torch.save(obj, target)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        cause = target.error if target is not None and target.error is not None else err
        if isinstance(cause, OSError) and cause.errno in NO_SPACE:
            raise CheckpointError(f"no space left writing {path} (the previous checkpoint there, "
                                  "if any, is intact); free some space and resume") from err
        raise

