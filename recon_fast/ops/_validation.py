"""Argument checks shared by the public ops: every failure is an InputError (a ValueError) naming
the argument. Other packages use them through :mod:`recon_fast.ops.validate`."""

from __future__ import annotations

import functools
import math
import operator

import numpy as np
import torch

from recon_fast.errors import InputError, NotCompiledError

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

_checks = {"data": True}


def set_checks(data: bool) -> None:
    """Turn the data-dependent input checks on or off (default: on).

    They reject NaN/inf coordinates and out-of-range lengths and indices. Reading the data costs
    a device synchronisation on CUDA, so a training loop that validated its dataset once may
    switch them off; shape, dtype and device checks always run, and the kernels stay memory-safe
    either way. Under ``torch.compile`` data-dependent checks are skipped (they cannot be traced).
    """
    _checks["data"] = bool(data)


class checks:
    """Context manager: data-dependent checks on or off inside a block, restored afterwards.

        with ops.checks(data=False):
            train()
    """

    def __init__(self, data: bool):
        self.data = bool(data)

    def __enter__(self) -> "checks":
        self.previous = _checks["data"]
        _checks["data"] = self.data
        return self

    def __exit__(self, *exc) -> None:
        _checks["data"] = self.previous


def data_checks_enabled() -> bool:
    return _checks["data"] and not torch.compiler.is_compiling()


def describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


@functools.lru_cache(maxsize=None)
def cuda_kernels_built() -> bool:
    """Whether the compiled extension holds CUDA kernels (False for a CPU-only build)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("recon_fast::fps", "CUDA")


def check_device_built(t: torch.Tensor, name: str) -> None:
    """A CUDA tensor given to a CPU-only build gets this message, not the dispatcher's."""
    if t.device.type == "cuda" and not cuda_kernels_built():
        raise NotCompiledError(f"{name} is on {t.device}, but recon_fast was built without CUDA "
                               "kernels: rebuild with nvcc (on a machine with the CUDA toolkit, "
                               "pip install --no-build-isolation -e .)")


def check_points(t, name: str, channels: int | None = 3, *, any_dim: bool = False) -> None:
    """`t` is a (B, N, channels) floating point cloud (any last dimension if channels is None).
    any_dim: (B, N, D) points of any dimension D >= 1 whose distances the op sums over D."""
    if any_dim:
        channels = None
    if not isinstance(t, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    check_device_built(t, name)
    want = f"(B, N, {channels})" if channels else "(B, N, C)"
    if t.dim() != 3:
        raise InputError(f"{name} must have shape {want}, got {describe(t)}")
    if channels and t.shape[2] != channels:
        raise InputError(f"{name} must have shape {want} (last dimension {channels}), "
                         f"got {describe(t)}")
    if any_dim and t.shape[2] == 0:
        raise InputError(f"{name} must have points of dimension D >= 1, got {describe(t)}")
    if t.dtype not in FLOAT_DTYPES:
        raise InputError(f"{name} must be float16, bfloat16, float32 or float64, got {describe(t)}")
    if data_checks_enabled() and t.numel() > 0:
        # One host read answers both checks: amax is NaN/inf exactly when an entry is. detach:
        # the check must not join the autograd graph of a tensor that requires grad.
        worst = float(t.detach().abs().amax())
        if not math.isfinite(worst):
            raise InputError(f"{name} contains NaN or infinite values ({describe(t)})")
        if channels == 3 or any_dim:
            # Squared distances of larger coordinates overflow the accumulation type; a sum over
            # D coordinates has D terms (the limits hold for D = 3 and shrink as 1 / sqrt(D)).
            limit = (1e150 if t.dtype == torch.float64 else 1e18) * math.sqrt(3 / max(t.shape[2], 3))
            if worst > limit:
                raise InputError(f"{name} has coordinates above {limit:g} in magnitude, whose "
                                 f"squared distances overflow {'float64' if limit > 1e18 else 'float32'}"
                                 f" ({describe(t)}); rescale the clouds")


def check_same_dim(a, a_name: str, b, b_name: str) -> None:
    """Two point clouds (B, M, D) and (B, N, D) of the same point dimension D."""
    if a.shape[-1] != b.shape[-1]:
        raise InputError(f"{a_name} and {b_name} must have the same point dimension D, got "
                         f"{a_name} of shape {tuple(a.shape)} (D = {a.shape[-1]}) and {b_name} of "
                         f"shape {tuple(b.shape)} (D = {b.shape[-1]})")


def check_pair(a, a_name: str, b, b_name: str) -> None:
    if a.device != b.device:
        raise InputError(f"{a_name} is on {a.device} but {b_name} is on {b.device}; "
                         "move both to the same device")
    if a.dtype != b.dtype:
        raise InputError(f"{a_name} has dtype {a.dtype} but {b_name} has dtype {b.dtype}; "
                         "cast one of them")
    if a.shape[0] != b.shape[0]:
        raise InputError(f"{a_name} has batch size {a.shape[0]} but {b_name} has batch size "
                         f"{b.shape[0]} (shapes {tuple(a.shape)} and {tuple(b.shape)})")


def is_int(value) -> bool:
    """Whether `value` is an integer that Python ints stand for: an int or any integer type that
    supports ``operator.index`` (numpy integers, 0-d integer tensors), but not a bool."""
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def as_int(value, name: str) -> int:
    """`value` as a Python int: ints and any integer type that supports ``operator.index``
    (numpy integers, 0-d integer tensors); bools and floats are refused."""
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be an int, got {type(value).__name__}")
    try:
        return operator.index(value)
    except TypeError:
        raise InputError(f"{name} must be an int, got {type(value).__name__}") from None


def check_count(value, name: str, low: int, high: int, what: str) -> int:
    """`value` as a Python int in [low, high]."""
    value = as_int(value, name)
    if not low <= value <= high:
        raise InputError(f"{name} must be in [{low}, {high}] ({what}), got {value}")
    return value


def check_backward_indices(idx: torch.Tensor, name: str, size: int) -> None:
    """The backward kernels skip indices outside [-1, size) rather than fault (they stay
    memory-safe); with the data checks on, the autograd boundary refuses such indices instead of
    dropping their gradient silently. The forward ops only produce or accept in-range indices,
    so this guards the backward kernels' contract (e.g. against a kernel bug), not users."""
    # Under torch.compile the backward is traced with fake tensors that hold no values.
    if data_checks_enabled() and idx.numel() > 0 and torch._guards.detect_fake_mode(idx) is None:
        low, high = int(idx.min()), int(idx.max())
        if low < -1 or high >= size:
            raise InputError(f"{name} saved for the backward pass holds values in [{low}, {high}], "
                             f"outside [-1, {size}); its gradient would be dropped")


def length_vector(lengths, name: str, batch: int, device: torch.device, low: int, high: int,
                  why: str) -> torch.Tensor:
    """`lengths` as an int64 (B,) tensor on `device`, its values (when data checks are on) in
    [low, high]; `why` explains the bound in the error message."""
    if not isinstance(lengths, torch.Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise InputError(f"{name} must have shape (B,) = ({batch},), got {describe(lengths)}")
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise InputError(f"{name} must hold integers, got {describe(lengths)}")
    lengths = lengths.to(device=device, dtype=torch.int64)
    if data_checks_enabled() and batch > 0:
        seen_low, seen_high = int(lengths.min()), int(lengths.max())
        if seen_low < low or seen_high > high:
            raise InputError(f"{name} must lie in [{low}, {high}] ({why}), got values in "
                             f"[{seen_low}, {seen_high}]")
    return lengths


def lengths_or_full(lengths, name: str, points: torch.Tensor, points_name: str) -> torch.Tensor:
    """An int64 (B,) lengths tensor on the points' device; all N when `lengths` is None."""
    B, N = points.shape[0], points.shape[1]
    if lengths is None:
        return torch.full((B,), N, dtype=torch.int64, device=points.device)
    return length_vector(lengths, name, B, points.device, 0, N,
                         f"the padded size of {points_name}")
