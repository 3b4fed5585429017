"""Config loading, the official optimizer/schedule, RNG snapshots and atomic checkpoints."""

import math
import os

import pytest
import torch

from recon_fast.train.config import ConfigError, load_config
from recon_fast.train.optim import OfficialCosineSchedule, build_optimizer, param_groups
from recon_fast.train.state import capture_rng, load_checkpoint_file, restore_rng, save_atomic

PRETRAIN_YAML = """
optimizer : {type: AdamW, kwargs: {lr : 0.0005, weight_decay : 0.05}}
scheduler: {type: CosLR, kwargs: {epochs: 300, initial_epochs : 10}}
dataset : {
  train : { _base_: cfgs/dataset_configs/ShapeNet-55.yaml, others: {subset: 'train', npoints: 1024}},
  val : { _base_: cfgs/dataset_configs/ShapeNet-55.yaml, others: {subset: 'test', npoints: 1024}}}
model : {NAME: ReCon, group_size: 32, num_group: 64, loss: cdl2,
  transformer_config: {mask_ratio: 0.6, mask_type: 'rand', trans_dim: 384, encoder_dims: 384,
    depth: 12, drop_path_rate: 0.1, num_heads: 6, decoder_depth: 4, decoder_num_heads: 6},
  img_encoder: 'vit_base_patch16_224_in21k', text_encoder: 'ViT-B/32', self_contrastive: FALSE}
npoints: 1024
total_bs : 128
step_per_update : 1
max_epoch : 300
validate : 'none'
"""
DATASET_YAML = "NAME: ShapeNet\nDATA_PATH: data/ShapeNet-55\nN_POINTS: 8192\nratio: 1.0\n"


@pytest.fixture
def official_layout(tmp_path):
    """A repository-like folder: cfgs/pretrain/base.yaml with _base_ relative to the root."""
    (tmp_path / "cfgs" / "pretrain").mkdir(parents=True)
    (tmp_path / "cfgs" / "dataset_configs").mkdir()
    (tmp_path / "cfgs" / "pretrain" / "base.yaml").write_text(PRETRAIN_YAML)
    (tmp_path / "cfgs" / "dataset_configs" / "ShapeNet-55.yaml").write_text(DATASET_YAML)
    return tmp_path / "cfgs" / "pretrain" / "base.yaml"


def test_official_layout_loads_with_base_included(official_layout):
    cfg = load_config(str(official_layout))
    assert cfg.model.transformer_config.trans_dim == 384
    assert cfg.dataset.train._base_.NAME == "ShapeNet"
    assert cfg.dataset.train._base_.N_POINTS == 8192
    assert cfg.dataset.train.others.subset == "train"
    assert cfg.optimizer.kwargs.lr == 0.0005


def test_overrides_parse_values(official_layout):
    cfg = load_config(str(official_layout), ["max_epoch=2", "model.transformer_config.depth=4",
                                              "run.compile=true", "optimizer.kwargs.lr=1e-3"])
    assert cfg.max_epoch == 2 and cfg.model.transformer_config.depth == 4
    assert cfg.run.compile is True and cfg.optimizer.kwargs.lr == 1e-3


@pytest.mark.parametrize("override,match", [
    ("max_epochs=3", "unknown config key 'max_epochs'.*did you mean 'max_epoch'"),
    ("model.transformer_config.detph=3", "'detph' in model.transformer_config.*'depth'"),
    ("novalue", "must look like key.path=value"),
    ("npoints.x=1", "'npoints' is a value, not a section"),
])
def test_bad_overrides_name_the_key(official_layout, override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(str(official_layout), [override])


def test_missing_files_are_named(tmp_path, official_layout):
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        load_config(str(tmp_path / "nope.yaml"))
    # A _base_ file that is neither next to the config nor a shipped preset.
    os.remove(official_layout.parent.parent / "dataset_configs" / "ShapeNet-55.yaml")
    official_layout.write_text(PRETRAIN_YAML.replace("ShapeNet-55.yaml", "NoSuchSet.yaml"))
    with pytest.raises(ConfigError, match="cannot find the _base_ file .*NoSuchSet.yaml"):
        load_config(str(official_layout))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {NAME: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))


def test_missing_base_file_falls_back_to_the_shipped_preset(official_layout):
    # The official dataset configs ship as presets: a checkout without cfgs/dataset_configs
    # still loads, with the preset's values.
    os.remove(official_layout.parent.parent / "dataset_configs" / "ShapeNet-55.yaml")
    cfg = load_config(str(official_layout))
    assert cfg.dataset.train._base_.NAME == "ShapeNet"


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, 4))
        self.img_token = torch.nn.Parameter(torch.zeros(1, 1, 4))
        self.encoder = torch.nn.Linear(4, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.cls_head_finetune = torch.nn.Linear(4, 2)


def test_param_groups_follow_the_official_rules():
    model = _Tiny()
    head, no_decay, decay = param_groups(model, 1e-3, 0.05, finetune=True)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in head["params"]} == {"cls_token", "cls_head_finetune.weight",
                                                       "cls_head_finetune.bias"}
    assert head["lr"] == pytest.approx(1e-2)
    assert {names[id(p)] for p in no_decay["params"]} == {"img_token", "encoder.bias",
                                                           "norm.weight", "norm.bias"}
    assert no_decay["weight_decay"] == 0
    assert {names[id(p)] for p in decay["params"]} == {"encoder.weight"}
    _, pre_no_decay, _ = param_groups(model, 1e-3, 0.05, finetune=False)
    assert len(pre_no_decay["params"]) == 6  # cls params are ordinary in pretraining


def test_schedule_matches_timm_stepped_each_epoch():
    timm_scheduler = pytest.importorskip("timm.scheduler")
    opt = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 5e-4},
                             {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 5e-3}])
    timm_sched = timm_scheduler.CosineLRScheduler(opt, t_initial=300, lr_min=1e-6,
                                                  warmup_lr_init=1e-6, warmup_t=10,
                                                  cycle_limit=1, t_in_epochs=True)
    ours = OfficialCosineSchedule([5e-4, 5e-3], epochs=300, warmup_epochs=10)
    for epoch in range(302):  # the official loop runs epochs 0..max_epoch
        assert ours.lrs_for_epoch(epoch) == pytest.approx([g["lr"] for g in opt.param_groups],
                                                          abs=1e-15)
        timm_sched.step(epoch)


def test_schedule_shape_without_timm():
    s = OfficialCosineSchedule([1.0], epochs=100, warmup_epochs=10)
    assert s.lrs_for_epoch(0) == [1e-6] and s.lrs_for_epoch(1) == [1e-6]
    assert s.lrs_for_epoch(6)[0] == pytest.approx(1e-6 + 5 * (1 - 1e-6) / 10)
    assert s.lrs_for_epoch(51)[0] == pytest.approx(1e-6 + 0.5 * (1 - 1e-6) * (1 + math.cos(math.pi / 2)))
    assert s.lrs_for_epoch(101) == [1e-6]


def test_build_optimizer_rejects_unknown_type(official_layout):
    cfg = load_config(str(official_layout), ["optimizer.type=Lion"])
    with pytest.raises(ConfigError, match="optimizer.type 'Lion'"):
        build_optimizer(_Tiny(), cfg, finetune=False)


def test_rng_snapshot_restores_every_generator(tmp_path):
    import random

    import numpy as np

    snapshot = capture_rng()
    first = (torch.rand(3), np.random.rand(3), random.random())
    save_atomic({"rng": snapshot}, str(tmp_path / "ck.pth"))
    restore_rng(load_checkpoint_file(str(tmp_path / "ck.pth"))["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and (first[1] == again[1]).all() and first[2] == again[2]


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = str(tmp_path / "ckpt-last.pth")
    save_atomic({"epoch": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_atomic({"epoch": 2, "bad": Unpicklable()}, path)
    assert load_checkpoint_file(path)["epoch"] == 1
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")] == []


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        load_checkpoint_file(str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint .*junk.pth"):
        load_checkpoint_file(str(junk))
