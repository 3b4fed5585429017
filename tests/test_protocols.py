"""Finetuning protocols frozen as the reference does: with model.type linear or mlp3 only the
parameters whose name contains "cls" train (runner_finetune), and they form the optimizer's
10x-lr head group (builder.build_opti_sche)."""

import functools

import pytest

from recon_fast.model import build_model
from recon_fast.train.config import load_config
from recon_fast.train.finetune import freeze_for_protocol
from recon_fast.train.optim import build_optimizer

FINETUNE = ["finetune_scan_hardest", "finetune_scan_objbg", "finetune_scan_objonly",
            "finetune_modelnet", "finetune_modelnet_8k", "fewshot"]
# Trainable counts of the reference runs (ReCon-base, 15 classes), as its code reports them.
REFERENCE_COUNTS = {("linear", 15): 23_823, ("mlp3", 15): 464_911}


def head_size(kind, classes, width=384):
    """The official heads on concat[cls, img, text, max-pooled patches] (4 x width), plus the
    cls token and its position (2 x width), restated from the reference model code."""
    pooled = 4 * width
    if kind == "linear":
        head = pooled * classes + classes
    else:  # mlp3 and full: Linear-BN-ReLU-Dropout twice (256 wide), then Linear
        head = (pooled * 256 + 256) + 2 * 256 + (256 * 256 + 256) + 2 * 256 + 256 * classes + classes
    return head + 2 * width


@functools.lru_cache(maxsize=None)
def model_for(model_type, classes):
    cfg = load_config(f"{model_type}/finetune_scan_hardest",
                      [f"model.cls_dim={classes}"])
    return build_model(cfg.model.to_dict())


@pytest.mark.parametrize("name", FINETUNE)
@pytest.mark.parametrize("model_type", ["full", "linear", "mlp3"])
def test_trainable_parameters_follow_the_reference_rule(model_type, name):
    cfg = load_config(f"{model_type}/{name}")
    model = model_for(model_type, cfg.model.cls_dim)
    trainable = freeze_for_protocol(model)
    by_rule = sum(p.numel() for n, p in model.named_parameters()
                  if model_type == "full" or "cls" in n)
    total = sum(p.numel() for p in model.parameters())
    assert trainable == by_rule
    optimizer = build_optimizer(model, cfg, finetune=True)
    in_optimizer = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert in_optimizer == trainable
    head_group = optimizer.param_groups[0]
    assert head_group["lr"] == pytest.approx(10 * cfg.optimizer.kwargs.lr)
    cls_params = {id(p) for n, p in model.named_parameters() if "cls" in n}
    assert {id(p) for p in head_group["params"]} == cls_params
    if model_type == "full":
        assert trainable == total
    else:
        assert trainable == head_size(model_type, cfg.model.cls_dim) < total / 40
        if (model_type, cfg.model.cls_dim) in REFERENCE_COUNTS:
            assert trainable == REFERENCE_COUNTS[(model_type, cfg.model.cls_dim)]
