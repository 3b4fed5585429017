"""The run folder (`--out`) and the rules that keep a run's work from being lost.

- A folder that already holds a run (``ckpt-last.pth`` or ``config.yaml``) is refused unless the
  command says what to do with it: ``--resume`` continues it, ``--overwrite`` starts over and
  keeps the old checkpoints as ``*.previous.pth`` until the new run writes its first checkpoint.
- ``--resume`` continues only the run it was asked to continue: the stored config must equal the
  requested one except for the keys in ``MAY_CHANGE_ON_RESUME``, and the number of processes
  must be the same (each rank resumes its own random state and data shard).
- Temporary files of a checkpoint write that was killed (``.tmp-*.pth``) are removed at the
  next start.
"""

from __future__ import annotations

import glob
import os
from typing import Any, Iterable

from recon_fast.train.config import ConfigError

LAST = "ckpt-last.pth"
BEST = "ckpt-best.pth"
CONFIG = "config.yaml"
RUN_FILES = (LAST, CONFIG)
BACKUP_SUFFIX = ".previous.pth"
TEMPORARY_GLOB = ".tmp-*.pth"

# Config keys (dotted paths) that a resumed run may change: how long to train (what --epochs
# sets; the cosine schedule is rescaled for the remaining epochs), how often to validate, and
# the attention implementation (same maths). Everything else -- batch size, learning rate,
# masking, model, dataset -- would silently train a different run, so it is refused. Runtime
# flags that are not part of the config (--workers, --log-every, --checkpoint-every,
# --max-steps, --device, --no-progress, ...) may always change.
MAY_CHANGE_ON_RESUME = frozenset({
    "max_epoch", "scheduler.kwargs.epochs", "scheduler.kwargs.initial_epochs",
    "validate", "run.val_freq", "run.precise_bn", "model.attention_backend",
})


def backup_path(name: str, out_dir: str) -> str:
    """ckpt-last.pth -> <out_dir>/ckpt-last.previous.pth"""
    return os.path.join(out_dir, name[: -len(".pth")] + BACKUP_SUFFIX)


def existing_run_files(out_dir: str) -> list[str]:
    return [name for name in RUN_FILES if os.path.isfile(os.path.join(out_dir, name))]


def remove_stale_temporaries(out_dir: str) -> list[str]:
    """Delete the temporary files that a killed checkpoint write left behind; returns them."""
    stale = sorted(glob.glob(os.path.join(out_dir, TEMPORARY_GLOB)))
    for path in stale:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
    return stale


def claim_run_dir(out_dir: str, *, resume: bool, overwrite: bool,
                  prepare: bool = True) -> list[str]:
    """Check that this run may write into `out_dir` (before anything is written there) and, with
    `prepare` (the main rank), prepare it. Returns lines for the run's log saying what was done.

    Raises ConfigError when `out_dir` holds a run and neither `resume` nor `overwrite` is set; every
    rank checks, so that all of them stop rather than wait for a rank 0 that has stopped.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: --resume continues the "
                          "run in --out, --overwrite starts it over")
    events = [f"removed {p}, left by an interrupted checkpoint write"
              for p in (remove_stale_temporaries(out_dir) if prepare else [])]
    found = existing_run_files(out_dir)
    if not found or resume or (overwrite and not prepare):
        return events
    if not overwrite:
        raise ConfigError(f"--out {out_dir} already holds a run ({', '.join(found)}): pass "
                          "--resume to continue it, --overwrite to start it over (the old "
                          "checkpoint is kept until the new run writes one), or another --out")
    for name in (LAST, BEST):
        path = os.path.join(out_dir, name)
        if os.path.isfile(path):
            os.replace(path, backup_path(name, out_dir))
            events.append(f"--overwrite: kept {path} as {backup_path(name, out_dir)} until this "
                          "run writes its first checkpoint")
    return events


def drop_backups(out_dir: str) -> list[str]:
    """After the new run's first checkpoint: the old run's checkpoints are no longer needed."""
    dropped = []
    for name in (LAST, BEST):
        path = backup_path(name, out_dir)
        if os.path.isfile(path):
            os.remove(path)
            dropped.append(path)
    return dropped


# ------------------------------------------------------------------------- what --resume resumes


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: node}


def config_differences(stored: dict, requested: dict,
                       may_change: Iterable[str] = MAY_CHANGE_ON_RESUME) -> dict[str, tuple]:
    """{dotted key: (stored value, requested value)} for the keys that differ and may not."""
    old, new = _flatten(stored), _flatten(requested)
    allowed = set(may_change)
    missing = object()
    return {key: (old.get(key, "<absent>"), new.get(key, "<absent>"))
            for key in sorted(set(old) | set(new))
            if old.get(key, missing) != new.get(key, missing) and key not in allowed}


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _check_identity(path: str, ckpt: dict, requested: dict) -> None:
    # Checkpoints written before identities were stored carry none: nothing to compare.
    stored = ckpt.get("identity")
    if not isinstance(stored, dict):
        return
    differences = {key: (stored.get(key), value) for key, value in requested.items()
                   if stored.get(key) != value}
    if differences:
        listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in differences.items())
        raise ConfigError(f"--resume {path}: the run was started otherwise ({listed}); resume it "
                          "with its own settings (e.g. the same --protocol), or start a new --out")


def check_resumable(path: str, ckpt: dict, requested_config: dict, world: int,
                    identity: dict | None = None) -> None:
    """Refuse a resume that would silently train something else than the stored run: another
    config, process count, or identity (e.g. the finetune protocol: strict and official train
    on different splits)."""
    _check_identity(path, ckpt, identity or {})
    stored = ckpt.get("config")
    if isinstance(stored, dict):
        differences = config_differences(stored, requested_config)
        if differences:
            listed = "; ".join(f"{key}: {_short(old)} -> {_short(new)}"
                               for key, (old, new) in differences.items())
            raise ConfigError(f"--resume {path}: the requested config differs from the run's in "
                              f"{', '.join(differences)} ({listed}); only "
                              f"{', '.join(sorted(MAY_CHANGE_ON_RESUME))} may change on resume "
                              "(start a new --out, with --init-ckpt for the weights)")
    stored_world = int(ckpt.get("world_size", 1))
    if stored_world != world:
        raise ConfigError(f"--resume {path}: the run was written by {stored_world} "
                              f"process(es), this one has {world}; an exact resume needs the same "
                              "number (each rank continues its own random state and data shard). "
                              "Resume with the original number, or start a new --out with "
                              "--init-ckpt for the weights")
