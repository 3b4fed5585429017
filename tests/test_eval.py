"""Evaluation protocols with small known models: accuracy, voting, SVM, zero-shot, few-shot."""

import math

import numpy as np
import pytest
import torch

from recon_fast.eval import accuracy, summarize_folds, svm_accuracy, vote_accuracy, zero_shot_accuracy
from recon_fast.eval.svm import recompute_bn_statistics


class Centroid(torch.nn.Module):
    """'Classifies' a cloud by the sign pattern of its centroid's x coordinate."""

    def forward(self, points):
        x = points.mean(dim=1)[:, 0]
        return torch.stack([-x, x], dim=-1)  # (B, 2) logits


def batches(n=8, n_points=1300):
    torch.manual_seed(0)
    points = torch.rand(n, n_points, 3) * 0.2
    labels = torch.arange(n) % 2
    points[:, :, 0] += torch.where(labels[:, None] == 1, 0.5, -0.5)
    return [{"points": points[:4], "label": labels[:4]}, {"points": points[4:], "label": labels[4:]}]


def test_accuracy_counts_every_item():
    data = batches()
    assert accuracy(Centroid(), data, 1024, torch.device("cpu")) == 1.0
    flipped = [{"points": b["points"], "label": 1 - b["label"]} for b in data]
    assert accuracy(Centroid(), flipped, 1024, torch.device("cpu")) == 0.0


def test_vote_accuracy_averages_votes_and_reports_the_best_round():
    calls = []

    class Counting(Centroid):
        def forward(self, points):
            calls.append(points.shape)
            return super().forward(points)

    best, rounds = vote_accuracy(Counting(), lambda: batches(), 1024, torch.device("cpu"),
                                 lambda p: p, votes=3, rounds=2)
    assert best == 1.0 and rounds == [1.0, 1.0]
    assert len(calls) == 2 * 2 * 3 and all(s == (4, 1024, 3) for s in calls)


def test_svm_separates_separable_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    assert svm_accuracy((x[:40], y[:40]), (x[40:], y[40:])) >= 0.9
    shuffled = rng.permutation(y[:40])
    assert svm_accuracy((x[:40], shuffled), (x[40:], y[40:])) < 0.9


def test_recompute_bn_statistics_gives_exact_averages():
    model = torch.nn.Sequential(torch.nn.Flatten(1), torch.nn.Linear(1024 * 3, 4),
                                torch.nn.BatchNorm1d(4))
    data = batches()
    recompute_bn_statistics(model, data, 1024, torch.device("cpu"))
    from recon_fast.data import fps_sample

    feats = [model[1](model[0](fps_sample(b["points"], 1024))).detach() for b in data]
    bn = model[2]
    torch.testing.assert_close(bn.running_mean, torch.stack([f.mean(0) for f in feats]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([f.var(0) for f in feats]).mean(0))
    assert bn.momentum == 0.1 and not bn.training


def test_zero_shot_uses_cosine_similarity_to_class_embeddings():
    class Feature(torch.nn.Module):
        def forward(self, points):
            x = points.mean(dim=1)[:, 0:1]
            return torch.cat([x, torch.zeros_like(x)], dim=-1) * 1000  # scale must not matter

    classes = torch.tensor([[-3.0, 0.1], [5.0, 0.1]])  # not normalised: cosine ignores norms
    assert zero_shot_accuracy(Feature(), classes, batches(), 1024, torch.device("cpu")) == 1.0


def test_summarize_folds():
    mean, std = summarize_folds([0.9, 1.0])
    assert mean == pytest.approx(95.0) and std == pytest.approx(5.0)
    with pytest.raises(ValueError, match="no fold"):
        summarize_folds([])
    assert math.isclose(summarize_folds([0.5])[1], 0.0)
