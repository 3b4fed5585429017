"""--recompute-bn: stale running statistics change what a measurement reports; recomputed ones
give the batch-statistics answer; the CLI switches follow the documented auto rule."""

import json
import os

import pytest
import torch

from recon_fast.data import fps_sample
from recon_fast.errors import ConfigError
from recon_fast.eval.batchnorm import (SHORT_RUN_STEPS, batchnorm_layers, recompute_bn_statistics,
                                       should_recompute)
from recon_fast.model import build_model

TINY = {"NAME": "PointTransformer", "trans_dim": 48, "encoder_dims": 48, "depth": 2,
        "num_heads": 4, "num_group": 16, "group_size": 16, "drop_path_rate": 0.0, "cls_dim": 3,
        "type": "full"}


def clouds(seed, count=96, n=256):
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(count, n, 3, generator=g) * 2 - 1
    return [{"points": points, "label": torch.arange(count) % 3}]


def logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(fps_sample(batch["points"], 256))


def batch_statistics_logits(model, batch):
    """Every BatchNorm normalises with the batch's own statistics (what exact statistics of
    that batch must reproduce), every other layer in eval mode."""
    model.eval()
    norms = batchnorm_layers(model)
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in norms]
    for m in norms:
        m.train()
    with torch.no_grad():
        out = model(fps_sample(batch["points"], 256))
    for m, (mean, var, count) in zip(norms, saved):
        m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(count)
    model.eval()
    return out


def test_stale_statistics_give_a_different_answer_than_recomputed_ones():
    torch.manual_seed(0)
    model = build_model(TINY)
    data = clouds(1)
    stale = logits(model, data[0])  # running statistics at their initial (0, 1)
    expected = batch_statistics_logits(model, data[0])
    assert recompute_bn_statistics(model, data, 256, torch.device("cpu")) == len(batchnorm_layers(model))
    fresh = logits(model, data[0])
    # Recomputed statistics reproduce the batch-statistics forward, up to the unbiased/biased
    # variance factor n/(n-1) (n = 96 clouds in the head's BatchNorm) ...
    torch.testing.assert_close(fresh, expected, rtol=2e-2, atol=2e-2)
    # ... and the stale ones are far from it: a measurement would report something else.
    assert (stale - expected).abs().max() > 20 * (fresh - expected).abs().max()
    assert (stale.argmax(-1) != fresh.argmax(-1)).any()
    assert all(m.momentum == 0.1 and not m.training for m in batchnorm_layers(model))


def test_auto_rule():
    assert should_recompute("auto", 10) and should_recompute("auto", SHORT_RUN_STEPS - 1)
    assert not should_recompute("auto", SHORT_RUN_STEPS)
    assert not should_recompute("auto", None)  # official checkpoints record no step count
    assert should_recompute("on", None) and not should_recompute("off", 1)
    with pytest.raises(ConfigError, match="--recompute-bn must be one of"):
        should_recompute("yes", 1)


@pytest.mark.parametrize("mode,expected", [("on", True), ("off", False), ("auto", True)])
def test_eval_recomputes_as_asked(tmp_path, capsys, mode, expected):
    from test_cli import common, model_section, modelnet_root, write_config

    from recon_fast.cli import main
    from recon_fast.model import save_checkpoint

    torch.manual_seed(0)
    model = build_model(model_section("PointTransformer", cls_dim=3, type="full"))
    ckpt = str(tmp_path / "short.pth")
    save_checkpoint(ckpt, model, global_step=12)  # a short run: auto recomputes
    base = {"NAME": "ModelNet", "DATA_PATH": str(modelnet_root(tmp_path)), "N_POINTS": 1100,
            "NUM_CATEGORY": 40}
    cfg = write_config(tmp_path, "cls", model_section("PointTransformer", cls_dim=3, type="full"),
                       base)
    assert main(["eval", "accuracy", "--config", cfg, "--ckpt", ckpt, "--recompute-bn", mode]
                + common(tmp_path)) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["recompute_bn"] is expected
    assert ("BatchNorm statistics of" in out) is expected
    saved = json.load(open(os.path.join(tmp_path, "run", "results.json")))
    assert saved["recompute_bn"] is expected and saved["checkpoint"] == ckpt
    assert saved["metrics"]["accuracy"] == result["accuracy"]
