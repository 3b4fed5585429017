"""Classification accuracy as the official finetune runner measures it."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Optional

import torch

from recon_fast.data import fps_indices, fps_sample, point_all_for, random_subset
from recon_fast.data.loader import to_device
from recon_fast.eval.protocol import seeded


@torch.no_grad()
def accuracy(model: torch.nn.Module, batches: Iterable[dict], npoints: int,
             device: torch.device, autocast=None) -> float:
    """Plain FPS to `npoints` (deterministic), argmax of the logits, accuracy over all items."""
    model.eval()
    correct = total = torch.zeros((), device=device, dtype=torch.long)
    for batch in batches:
        batch = to_device(batch, device)
        points = fps_sample(batch["points"], npoints)
        with autocast() if autocast else torch.autocast(device.type, enabled=False):
            logits = model(points)
        correct = correct + (logits.argmax(-1) == batch["label"]).sum()
        total = total + batch["label"].numel()
    return float(correct) / max(int(total), 1)


@torch.no_grad()
def vote_accuracy(model: torch.nn.Module, batches: Callable[[], Iterable[dict]], npoints: int,
                  device: torch.device, transform: Callable[[torch.Tensor], torch.Tensor], *,
                  votes: int = 10, rounds: int = 1, autocast=None,
                  seed: Optional[int] = None,
                  on_round: Optional[Callable[[int, float, float], None]] = None
                  ) -> tuple[float, list[float]]:
    """The official test-time voting: per batch, FPS to point_all once, then `votes` random
    npoints-subsets with the test transform; the votes' logits are averaged. Repeated for
    `rounds` rounds (the official --test runs 299); returns (best, every round's accuracy).
    With a `seed`, round r draws from seed + r (the caller's RNG untouched): reproducible, and
    round 0 is the strict protocol's single pass. `on_round(r, accuracy, best so far)` runs
    after each round (progress: the reference's 299 rounds take a while)."""
    model.eval()
    per_round = []
    for r in range(rounds):
        with seeded(seed + r, device) if seed is not None else contextlib.nullcontext():
            per_round.append(_vote_round(model, batches(), npoints, device, transform, votes,
                                         autocast))
        if on_round is not None:
            on_round(r, per_round[-1], max(per_round))
    return max(per_round), per_round


def round_reporter(log: Callable[[str], None], tag: str, rounds: int, votes: int
                   ) -> Optional[Callable[[int, float, float], None]]:
    """An `on_round` for vote_accuracy that logs each round as the reference's test mode does
    ("[TEST_VOTE_time r] acc, best acc"); None for a single round (the result line says it)."""
    if rounds <= 1:
        return None
    log(f"[{tag}] voting: {rounds} rounds of {votes} votes, the best reported")

    def report(r: int, accuracy: float, best: float) -> None:
        log(f"[{tag}] vote round {r + 1}/{rounds}: {accuracy * 100:.2f}% (best {best * 100:.2f}%)")
    return report


def _vote_round(model, batches, npoints, device, transform, votes, autocast) -> float:
    correct = total = 0
    for batch in batches:
        batch = to_device(batch, device)
        points = batch["points"]
        pool = fps_indices(points, point_all_for(npoints, points.shape[1]))
        logits = 0
        for _ in range(votes):
            sample = transform(random_subset(points, pool, npoints))
            with autocast() if autocast else torch.autocast(device.type, enabled=False):
                logits = logits + model(sample).float()
        correct += int((logits.argmax(-1) == batch["label"]).sum())
        total += batch["label"].numel()
    return correct / max(total, 1)
