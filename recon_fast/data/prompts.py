"""Text prompts of the CLIP text teacher: 20 prefixes x class description x 3 suffixes.

Prompt id convention (the official zero-shot code's): ``prompt_id = prefix_id + 20 * suffix_id``,
so ids 0..59 enumerate every (prefix, suffix) pair. During pretraining each sample draws a
uniform prefix and a uniform suffix independently.
"""

from __future__ import annotations

from typing import Sequence

import torch
from recon_fast.ops.validate import is_int

PROMPT_PREFIXES: tuple[str, ...] = (
    "", "A ", "A model of ", "A model of a ", "A image of ", "A image of a ", "A 3D model of ",
    "A 3D model of a ", "A rendering model of ", "A rendering model of a ", "A point cloud of ",
    "A point cloud of a ", "A point cloud model of ", "A point cloud model of a ",
    "A 3D rendering model of ", "A 3D rendering model of a ", "A rendering image of ",
    "A rendering image of a ", "A 3D rendering image of ", "A 3D rendering image of a ",
)
PROMPT_SUFFIXES: tuple[str, ...] = (".", " with white background.", " with black context.")
NUM_PREFIXES = len(PROMPT_PREFIXES)
NUM_SUFFIXES = len(PROMPT_SUFFIXES)
NUM_PROMPTS = NUM_PREFIXES * NUM_SUFFIXES


def _check_id(value: int, name: str, count: int) -> int:
    if not is_int(value) or not 0 <= value < count:
        raise ValueError(f"{name} must be an int in [0, {count - 1}], got {value!r}")
    return int(value)


def build_prompt(text: str, prefix_id: int, suffix_id: int) -> str:
    """``PROMPT_PREFIXES[prefix_id] + text + PROMPT_SUFFIXES[suffix_id]``."""
    prefix = PROMPT_PREFIXES[_check_id(prefix_id, "prefix_id", NUM_PREFIXES)]
    return prefix + text + PROMPT_SUFFIXES[_check_id(suffix_id, "suffix_id", NUM_SUFFIXES)]


def prompt_ids(prompt_id: int) -> tuple[int, int]:
    """Split a prompt id 0..59 into (prefix_id, suffix_id) = (id % 20, id // 20)."""
    _check_id(prompt_id, "prompt_id", NUM_PROMPTS)
    return prompt_id % NUM_PREFIXES, prompt_id // NUM_PREFIXES


def all_prompts(texts: Sequence[str]) -> list[str]:
    """Every prompt of every class, ordered as a (num_classes, 20, 3) table flattened row-major."""
    return [build_prompt(t, p, s) for t in texts
            for p in range(NUM_PREFIXES) for s in range(NUM_SUFFIXES)]


def draw_prompt_ids(generator: torch.Generator | None = None) -> tuple[int, int]:
    """A uniformly random (prefix_id, suffix_id) pair from torch's RNG (per-worker seeded)."""
    pair = torch.randint(0, NUM_PROMPTS, (1,), generator=generator).item()
    return pair % NUM_PREFIXES, pair // NUM_PREFIXES
