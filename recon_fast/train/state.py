"""Run state that makes training reproducible and resumable: seeds, RNG snapshots, atomic
checkpoint files."""

from __future__ import annotations

import errno
import os
import random
import tempfile

import numpy as np
import torch

from recon_fast.errors import CheckpointError, CheckpointNotFoundError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict:
    """All RNG states as plain tensors/lists, so checkpoints load with weights_only=True."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    leaves a truncated checkpoint behind (the previous one stays valid; the next run removes the
    temporary file, see rundir.remove_stale_temporaries). The file gets the mode that the umask
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


def load_checkpoint_file(path: str, map_location="cpu") -> dict:
    """torch.load with weights_only=True and a clear error for a missing or unreadable file."""
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for bad files
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(ckpt).__name__}, expected a dict "
                         "with 'base_model'")
    return ckpt
