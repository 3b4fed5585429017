"""Shipped presets: every official config under its official name, with the reference values,
and the embedded chain whose widths match."""

import pytest

from recon_fast.train.config import ConfigError, list_presets, load_config

# The reference values, restated from the official cfgs/ (qizekun/ReCon): (lr, epochs, cls_dim,
# num_group, npoints, drop_path) per finetune config and protocol (full, linear, mlp3).
FINETUNE = {
    "finetune_scan_hardest": (("2e-5", "1e-4", "1e-4"), 300, 15, 128, 2048, 0.2),
    "finetune_scan_objbg": (("2e-5", "1e-4", "1e-4"), 300, 15, 128, 2048, 0.2),
    "finetune_scan_objonly": (("2e-5", "1e-4", "1e-4"), 300, 15, 128, 2048, 0.2),
    "finetune_modelnet": (("1e-5", "1e-4", "1e-4"), 300, 40, 64, 1024, 0.2),
    "finetune_modelnet_8k": (("1e-5", "5e-5", "5e-5"), 300, 40, 512, 8192, 0.2),
    "fewshot": (("5e-4", "1e-3", "1e-3"), 150, 40, 64, 1024, 0.1),
}
DATASET_NAMES = {"finetune_scan_hardest": "ScanObjectNN_hardest", "finetune_scan_objbg": "ScanObjectNN",
                 "finetune_scan_objonly": "ScanObjectNN", "finetune_modelnet": "ModelNet",
                 "finetune_modelnet_8k": "ModelNet", "fewshot": "ModelNetFewShot"}
# zero-shot: (group_size, num_group, ratio, npoints)
ZEROSHOT = {"modelnet10": (32, 64, 0.2, 1024), "modelnet40": (32, 64, 0.25, 1024),
            "scan_hardest": (64, 64, 0.05, 2048), "scan_objbg": (64, 64, 0.1, 2048),
            "scan_objonly": (128, 32, 0.15, 2048)}


@pytest.mark.parametrize("name", sorted(FINETUNE))
@pytest.mark.parametrize("protocol", ["full", "linear", "mlp3"])
def test_finetune_presets_hold_the_reference_values(name, protocol):
    lrs, epochs, cls_dim, groups, npoints, drop_path = FINETUNE[name]
    cfg = load_config(f"{protocol}/{name}")
    assert cfg.optimizer.type == "AdamW" and cfg.optimizer.kwargs.weight_decay == 0.05
    assert cfg.optimizer.kwargs.lr == float(lrs[["full", "linear", "mlp3"].index(protocol)])
    assert cfg.scheduler.kwargs.epochs == epochs == cfg.max_epoch
    assert cfg.scheduler.kwargs.initial_epochs == 10
    m = cfg.model
    assert (m.NAME, m.type, m.cls_dim, m.num_group, m.group_size) == \
        ("PointTransformer", protocol, cls_dim, groups, 32)
    assert (m.trans_dim, m.encoder_dims, m.depth, m.num_heads, m.drop_path_rate) == \
        (384, 384, 12, 6, drop_path)
    assert (cfg.npoints, cfg.total_bs, cfg.grad_norm_clip) == (npoints, 32, 10)
    assert cfg.dataset.train._base_.NAME == DATASET_NAMES[name]
    assert cfg.dataset.val.others.subset == "test"
    # The official spelling of the path names the same preset.
    assert load_config(f"cfgs/{protocol}/{name}.yaml") == cfg


@pytest.mark.parametrize("size,dim,heads", [("base", 384, 6), ("small", 256, 4), ("tiny", 192, 3)])
def test_pretrain_presets(size, dim, heads):
    cfg = load_config(f"pretrain/{size}")
    t = cfg.model.transformer_config
    assert (t.trans_dim, t.encoder_dims, t.num_heads, t.decoder_num_heads) == (dim, dim, heads, heads)
    assert (t.depth, t.decoder_depth, t.mask_ratio, t.drop_path_rate) == (12, 4, 0.6, 0.1)
    assert (cfg.total_bs, cfg.max_epoch, cfg.optimizer.kwargs.lr) == (128, 300, 0.0005)
    assert cfg.model.img_encoder == "vit_base_patch16_224_in21k"
    base = cfg.dataset.train._base_
    assert (base.NAME, base.PC_PATH, base.N_POINTS) == ("ShapeNet", "data/ShapeNet55-34/shapenet_pc", 8192)


@pytest.mark.parametrize("name", sorted(ZEROSHOT))
def test_zeroshot_presets(name):
    group_size, num_group, ratio, npoints = ZEROSHOT[name]
    cfg = load_config(f"zeroshot/{name}")
    m = cfg.model
    assert (m.NAME, m.group_size, m.num_group, m.ratio, cfg.npoints) == \
        ("PointTransformerZeroShot", group_size, num_group, ratio, npoints)
    assert m.img_encoder == m.text_encoder == "ViT-B/32" and cfg.total_bs == 64


def test_svm_preset():
    cfg = load_config("svm/modelnet40")
    assert (cfg.model.NAME, cfg.npoints, cfg.total_bs) == ("PointTransformerSVM", 1024, 128)
    assert cfg.dataset.train._base_.DATA_PATH == "data/ModelNet/modelnet40_normal_resampled"


def test_every_official_config_is_a_preset():
    names = set(list_presets())
    official = ({f"{p}/{n}" for p in ("full", "linear", "mlp3") for n in FINETUNE}
                | {f"pretrain/{s}" for s in ("base", "small", "tiny")}
                | {f"zeroshot/{n}" for n in ZEROSHOT} | {"svm/modelnet40"})
    assert official <= names
    embedded = {"embedded", "embedded_finetune", "embedded_fewshot", "embedded_svm",
                "embedded_zeroshot"}
    assert embedded <= names
    assert not any(n.startswith("dataset_configs") for n in names)


def test_embedded_chain_widths_match():
    pretrain = load_config("embedded").model.transformer_config
    for name in ("embedded_finetune", "embedded_fewshot", "embedded_svm", "embedded_zeroshot"):
        m = load_config(name).model
        assert (m.trans_dim, m.encoder_dims, m.depth, m.num_heads) == \
            (pretrain.trans_dim, pretrain.encoder_dims, pretrain.depth, pretrain.num_heads), name
        assert (m.num_group, m.group_size) == (64, 32)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="full/finetune_scan_hardest"):
        load_config("full/finetune_scan_hardset")
