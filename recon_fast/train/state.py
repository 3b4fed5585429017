"""Run state that makes training reproducible and resumable: seeds and RNG snapshots (the
atomic checkpoint files are model.checkpoint.save_atomic / read_checkpoint, re-exported here)."""

from __future__ import annotations

import random

import numpy as np
import torch

from recon_fast.model.checkpoint import (NO_SPACE, _WriteTarget, read_checkpoint,  # noqa: F401
                                         save_atomic)


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


# The checkpoint file reader and writer live in model/checkpoint.py (one home, one except-policy);
# these names stay importable from here.
load_checkpoint_file = read_checkpoint
