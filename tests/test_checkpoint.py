"""Official-layout checkpoints: key names, loading official files, saving loadable ones."""

from __future__ import annotations

import logging

import pytest
import torch

from official_restatement import RefDownstream, RefReCon
from recon_fast.model import (ReCon, ReConClassifier, ReConConfig, ReConZeroShot,
                              load_official_checkpoint, read_state_dict, save_checkpoint)

TINY = dict(trans_dim=48, encoder_dims=48, depth=1, num_heads=3, decoder_depth=1,
            decoder_num_heads=3, num_group=16, group_size=8, img_feature_dim=20,
            text_feature_dim=12)

# The state dict of the official ReCon (models/ReCon.py @ 51a8be0, teachers excluded as its
# save_pretrain_model does) for depth 1 and decoder depth 1, in its order.
_BN = "weight bias running_mean running_var num_batches_tracked"
_BLOCK = ("norm1.weight norm1.bias norm2.weight norm2.bias mlp.fc1.weight mlp.fc1.bias "
          "mlp.fc2.weight mlp.fc2.bias attn.qkv.weight attn.proj.weight attn.proj.bias")
_CONTRAST = ("norm1_contrast.weight norm1_contrast.bias norm2_contrast.weight "
             "norm2_contrast.bias mlp_contrast.fc1.weight mlp_contrast.fc1.bias "
             "mlp_contrast.fc2.weight mlp_contrast.fc2.bias attn_contrast.q.weight "
             "attn_contrast.kv.weight attn_contrast.proj.weight attn_contrast.proj.bias")


def _prefixed(prefix, names):
    return [prefix + n for n in names.split()]


OFFICIAL_PRETRAIN_KEYS = (
    ["mask_token"]
    + _prefixed("MAE_encoder.", "cls_token cls_pos img_token text_token img_pos text_pos")
    + _prefixed("MAE_encoder.encoder.first_conv.0.", "weight bias")
    + _prefixed("MAE_encoder.encoder.first_conv.1.", _BN)
    + _prefixed("MAE_encoder.encoder.first_conv.3.", "weight bias")
    + _prefixed("MAE_encoder.encoder.second_conv.0.", "weight bias")
    + _prefixed("MAE_encoder.encoder.second_conv.1.", _BN)
    + _prefixed("MAE_encoder.encoder.second_conv.3.", "weight bias")
    + _prefixed("MAE_encoder.pos_embed.", "0.weight 0.bias 2.weight 2.bias")
    + _prefixed("MAE_encoder.blocks.blocks.0.", _BLOCK + " " + _CONTRAST)
    + _prefixed("MAE_encoder.norm.", "weight bias")
    + _prefixed("decoder_pos_embed.", "0.weight 0.bias 2.weight 2.bias")
    + _prefixed("MAE_decoder.blocks.0.", _BLOCK)
    + _prefixed("MAE_decoder.norm.", "weight bias")
    + ["increase_dim.0.weight", "increase_dim.0.bias"]
    + _prefixed("", "img_proj.weight img_proj.bias text_proj.weight text_proj.bias"))
OFFICIAL_MLP_HEAD_KEYS = (
    _prefixed("cls_head_finetune.0.", "weight bias") + _prefixed("cls_head_finetune.1.", _BN)
    + _prefixed("cls_head_finetune.4.", "weight bias") + _prefixed("cls_head_finetune.5.", _BN)
    + _prefixed("cls_head_finetune.8.", "weight bias"))


def config(**overrides):
    return ReConConfig(**{**TINY, **overrides})


def clouds(batch=2, n=64):
    return torch.rand(batch, n, 3) * 2 - 1


def official_pretrain_file(path, *, with_teachers=False, prefix="module."):
    """A file shaped like the official ckpt-last.pth: DDP prefix, optimizer, metrics, epoch."""
    ref = RefReCon(48, 1, 3, 16, 8, 1, 3, 0.0, 20, 12)
    for p in ref.parameters():
        torch.nn.init.normal_(p)
    state = {prefix + k: v for k, v in ref.state_dict().items()}
    if with_teachers:
        state[prefix + "img_encoder.blocks.0.weight"] = torch.zeros(4)
        state[prefix + "text_encoder.ln_final.weight"] = torch.zeros(4)
    torch.save({"base_model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 299,
                "metrics": {"acc": torch.tensor(0.0)}, "best_metrics": {}}, path)
    return ref


def test_state_dict_keys_are_the_official_ones_in_order():
    assert list(ReCon(config()).state_dict()) == OFFICIAL_PRETRAIN_KEYS
    classifier_keys = list(ReConClassifier(config(head_type="full")).state_dict())
    trunk = [k[len("MAE_encoder."):] for k in OFFICIAL_PRETRAIN_KEYS
             if k.startswith("MAE_encoder.")]
    assert classifier_keys == trunk + OFFICIAL_MLP_HEAD_KEYS


def test_official_pretraining_checkpoint_loads_into_recon(tmp_path, caplog):
    path = tmp_path / "ckpt-last.pth"
    ref = official_pretrain_file(path, with_teachers=True)
    model = ReCon(config())
    with caplog.at_level(logging.INFO, logger="recon_fast.model"):
        report = load_official_checkpoint(path, model)
    assert report.complete and not report.unexpected
    assert len(report.loaded) == len(OFFICIAL_PRETRAIN_KEYS)
    assert report.skipped_teacher == ["img_encoder.blocks.0.weight", "text_encoder.ln_final.weight"]
    assert "skipped teacher-encoder tensors (2)" in caplog.text
    for key, value in ref.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_pretraining_checkpoint_into_classifier_reports_head_and_decoder(tmp_path):
    path = tmp_path / "pretrain.pth"
    ref = official_pretrain_file(path)
    model = ReConClassifier(config(head_type="full", cls_dim=15))
    report = load_official_checkpoint(path, model)
    # BatchNorm's num_batches_tracked is filled in silently by PyTorch when absent.
    assert sorted(report.missing) == sorted(k for k in OFFICIAL_MLP_HEAD_KEYS
                                            if not k.endswith("num_batches_tracked"))
    assert set(report.unexpected) == {k for k in OFFICIAL_PRETRAIN_KEYS
                                      if not k.startswith("MAE_encoder.")}
    assert torch.equal(model.blocks.blocks[0].attn.qkv.weight,
                       ref.MAE_encoder.blocks.blocks[0].attn.qkv.weight)
    text = str(report)
    assert "missing from the checkpoint (14" in text and "cls_head_finetune.* (14)" in text
    assert "MAE_decoder.* (13)" in text and "mask_token" in text


def test_pretraining_checkpoint_into_zero_shot_takes_the_projections(tmp_path):
    path = tmp_path / "pretrain.pth"
    ref = official_pretrain_file(path, prefix="")
    model = ReConZeroShot(config(zeroshot_type="full", img_feature_dim=12, text_feature_dim=12))
    with pytest.raises(ValueError, match=r"'img_proj.weight' has shape \(20, 48\) but the model "
                                         r"expects \(12, 48\)"):
        load_official_checkpoint(path, model)
    model = ReConZeroShot(config(zeroshot_type="text"))
    report = load_official_checkpoint(path, model)
    assert report.complete
    assert torch.equal(model.text_proj.weight, ref.text_proj.weight)


def test_finetuned_checkpoint_with_base_model_prefix_and_model_entry(tmp_path):
    ref = RefDownstream(48, 1, 3, 16, 8, "classifier", head_type="linear", cls_dim=5)
    for p in ref.parameters():
        torch.nn.init.normal_(p)
    path = tmp_path / "finetuned.pth"
    torch.save({"model": {"module.base_model." + k: v for k, v in ref.state_dict().items()}}, path)
    model = ReConClassifier(config(head_type="linear", cls_dim=5)).eval()
    report = load_official_checkpoint(path, model, strict=True)
    assert report.complete and not report.unexpected
    pts = clouds()
    torch.testing.assert_close(model(pts), ref.eval()(pts), atol=1e-5, rtol=1e-5)


def test_our_checkpoint_loads_in_the_official_layout(tmp_path):
    model = ReCon(config())
    path = tmp_path / "ours.pth"
    save_checkpoint(path, model, epoch=3)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["config"]["trans_dim"] == 48
    # What the official resume does: strip "module." and load strictly.
    ref = RefReCon(48, 1, 3, 16, 8, 1, 3, 0.0, 20, 12)
    ref.load_state_dict({k.replace("module.", ""): v for k, v in ckpt["base_model"].items()},
                        strict=True)
    # And a compiled, reloaded copy of ours.
    again = ReCon(config())
    report = load_official_checkpoint(path, torch.compile(again), strict=True)
    assert report.complete
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_missing_file_and_bad_files_raise_clear_errors(tmp_path):
    model = ReCon(config())
    with pytest.raises(FileNotFoundError, match="checkpoint file not found: .*nope.pth"):
        load_official_checkpoint(tmp_path / "nope.pth", model)
    with pytest.raises(FileNotFoundError, match="not a file"):
        load_official_checkpoint(tmp_path, model)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        load_official_checkpoint(garbage, model)
    no_state = tmp_path / "no_state.pth"
    torch.save({"epoch": 1, "optimizer": {}}, no_state)
    with pytest.raises(ValueError, match=r"no model state dict.*'epoch', 'optimizer'"):
        read_state_dict(no_state)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"base_model": {}, "args": _Opaque()}, unsafe)
    with pytest.raises(ValueError, match="weights_only=False"):
        read_state_dict(unsafe)


class _Opaque:  # stands for an argparse.Namespace or similar pickled object
    pass


def test_shape_mismatch_names_the_key(tmp_path):
    path = tmp_path / "pretrain.pth"
    official_pretrain_file(path)
    with pytest.raises(ValueError, match=r"pretrain.pth: tensor 'mask_token' has shape "
                                         r"\(1, 1, 48\) but the model expects \(1, 1, 96\); "
                                         r".*and \d+ more"):
        load_official_checkpoint(path, ReCon(config(trans_dim=96, encoder_dims=96)))


def test_strict_load_lists_what_does_not_match(tmp_path):
    path = tmp_path / "pretrain.pth"
    official_pretrain_file(path)
    with pytest.raises(ValueError,
                       match=r"(?s)does not match the model exactly:\n.*missing.*unused"):
        load_official_checkpoint(path, ReConClassifier(config()), strict=True)
