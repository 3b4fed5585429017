"""Finding and reading teacher weights offline, and naming them for cache keys.

Nothing here downloads: weights come from an explicit file, from caches a previous download
filled (``~/.cache/clip``, the Hugging Face hub cache, torch hub checkpoints), or - only when
asked for by ``weights="random"`` - from a seeded random initialisation with a loud warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
import zipfile
from dataclasses import dataclass
from typing import Iterable, Optional

import torch

from recon_fast.errors import TeacherWeightsError, TeacherWeightsNotFoundError  # noqa: F401

logger = logging.getLogger("recon_fast.teachers")

RANDOM = "random"


class RandomTeacherWarning(UserWarning):
    """A teacher runs with random weights: its features carry no knowledge (smoke runs only)."""


@dataclass(frozen=True)
class WeightsSource:
    """Where a teacher's weights come from: a file (with its content hash) or a random seed."""

    path: Optional[str]
    sha256: Optional[str]
    seed: Optional[int] = None

    @property
    def is_random(self) -> bool:
        return self.path is None

    @property
    def tag(self) -> str:
        """Stable identity for cache keys: 'sha256:<hex>' or 'random:seed=<n>'."""
        return f"random:seed={self.seed}" if self.is_random else f"sha256:{self.sha256}"


_hash_memo: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str) -> str:
    """SHA-256 of a file, memoised on (path, size, mtime) within the process."""
    stat = os.stat(path)
    memo_key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _hash_memo:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _hash_memo[memo_key] = digest.hexdigest()
    return _hash_memo[memo_key]


def file_source(path: str) -> WeightsSource:
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise TeacherWeightsNotFoundError(f"teacher weights file not found: {path}")
    return WeightsSource(path, file_sha256(path))


def random_source(seed: int, what: str) -> WeightsSource:
    message = (f"{what} uses RANDOM weights (teacher_weights='random', seed={seed}): its features "
               "are meaningless and distillation learns nothing useful. Use this for smoke runs "
               "only; pass a weights file for real training.")
    warnings.warn(message, RandomTeacherWarning, stacklevel=3)
    logger.warning(message)
    return WeightsSource(None, None, seed)


def first_existing(paths: Iterable[Optional[str]]) -> Optional[str]:
    for path in paths:
        if path and os.path.isfile(path):
            return path
    return None


def hf_cached_file(repo_id: str, filenames: Iterable[str]) -> Optional[str]:
    """A file of `repo_id` already in the local Hugging Face cache (never downloads)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in filenames:
        try:
            found = try_to_load_from_cache(repo_id, name)
        except Exception:  # malformed repo ids or cache layouts: treat as not cached
            found = None
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def _is_torchscript_archive(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(name.endswith("constants.pkl") or "/code/" in name for name in names)


def load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors, a torch checkpoint (weights_only) or a TorchScript
    archive (the OpenAI CLIP ``ViT-B-32.pt``). Unwraps ``state_dict``/``model`` nesting and a
    ``module.`` prefix. Errors name the file."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        elif _is_torchscript_archive(path):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
                state = torch.jit.load(path, map_location="cpu").state_dict()
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # many loaders, many exception types; all mean "unreadable"
        raise TeacherWeightsError(f"cannot read teacher weights {path}: {type(e).__name__}: {e}") \
            from e
    for key in ("state_dict", "model", "base_model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TeacherWeightsError(f"teacher weights {path} do not hold a state dict of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """Strict load with an error that lists what did not match and names the file."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        details = "; ".join(f"{label}: {keys[:6]}{' ...' if len(keys) > 6 else ''}"
                            for label, keys in (("missing", missing), ("unexpected", unexpected),
                                                ("shape mismatch", wrong)) if keys)
        raise TeacherWeightsError(f"teacher weights {path} do not fit "
                                  f"{type(module).__name__}: {details}")
    module.load_state_dict(state, strict=True)
