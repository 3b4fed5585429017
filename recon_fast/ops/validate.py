"""The argument checks of the point ops, for code built on them (compat shims, attention, model).

Every check raises :class:`recon_fast.errors.InputError` (a ``ValueError``) naming the argument
and the shape, dtype or value seen. ``data_checks_enabled()`` tells whether the checks that read
tensor values (NaN/inf, coordinate range: one host sync each) are on; :func:`recon_fast.ops.checks`
switches them.
"""

from __future__ import annotations

import torch

from recon_fast.ops._validation import (FLOAT_DTYPES, as_int, is_int, check_count, check_pair,
                                        check_points, check_same_dim, data_checks_enabled, describe,
                                        length_vector, lengths_or_full)

__all__ = [
    "FLOAT_DTYPES", "accumulation_dtype", "as_int", "is_int", "check_count", "check_pair", "check_points",
    "check_same_dim",
    "data_checks_enabled", "describe", "length_vector", "lengths_or_full",
]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The type sums and distances accumulate in: float64 for float64 inputs, float32 for the
    others (float16/bfloat16 included), as every op of the package does."""
    return torch.float64 if dtype == torch.float64 else torch.float32
