"""The embedded preset chain end to end, as the README runs it: pretrain (`embedded`), then
finetune, few-shot, SVM and zero-shot from its checkpoint, each preset with its own widths
(no model --set). Only the data set and batch are shrunk (4 classes, batch 8, one epoch) to keep
it to about a minute on two cores."""

import json
import os

import pytest

from recon_fast.cli import main

SMALL_SET = ["_base_.CLASSES=[sphere, cube, torus, chair]", "_base_.SHAPES_PER_CLASS=12",
             "_base_.TEST_PER_CLASS=4"]


def shrink(*splits):
    sets = [f"dataset.{s}.{o}" for s in splits for o in SMALL_SET]
    return [x for s in sets + ["total_bs=8"] for x in ("--set", s)]


def run(args, capsys):
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_embedded_chain(tmp_path, capsys):
    cache = str(tmp_path / "cache")
    common = ["--workers", "0", "--no-progress", "--no-tensorboard", "--cache-dir", cache,
              "--device", "cpu"]
    pre = str(tmp_path / "pretrain")
    out = run(["pretrain", "--config", "embedded", "--teacher-weights", "random", "--epochs", "1",
               "--out", pre] + shrink("train", "extra_train", "extra_val") + common, capsys)
    assert "linear SVM accuracy" in out and "[pretrain] epoch 1 done" in out  # counted from 1
    ckpt = os.path.join(pre, "ckpt-last.pth")
    assert os.path.isfile(ckpt)
    results = json.load(open(os.path.join(pre, "results.json")))
    assert results["command"] == "pretrain" and results["config"] == "embedded"
    assert results["samples"] == results["global_step"] * 8 and results["samples_per_s"] > 0
    assert 0.0 <= results["metrics"]["best"] <= 1.0 and results["checkpoint"].endswith(".pth")
    assert results["data"]["train"] == "Embedded/train"

    out = run(["finetune", "--config", "embedded_finetune", "--init-ckpt", ckpt, "--epochs", "1",
               "--votes", "2", "--out", str(tmp_path / "finetune")]
              + shrink("train", "val", "test") + common,
              capsys)
    summary = json.loads(out.strip().splitlines()[-1])
    assert 0.0 <= summary["vote"] <= 1.0

    out = run(["fewshot", "--config", "embedded_fewshot", "--init-ckpt", ckpt, "--way", "3",
               "--shot", "4", "--folds", "0-1", "--epochs", "1", "--out", str(tmp_path / "few"),
               "--set", "dataset.val.others.query=4"] + shrink("train", "val") + common, capsys)
    assert "3-way 4-shot over 2 folds" in out

    for protocol, key, extra in (("svm", "svm_accuracy", []),
                                 ("zeroshot", "zero_shot_accuracy", ["--teacher-weights", "random"])):
        out = run(["eval", protocol, "--config", f"embedded_{protocol}", "--ckpt", ckpt,
                   "--out", str(tmp_path / protocol)] + extra + shrink("train", "test") + common,
                  capsys)
        result = json.loads(out.strip().splitlines()[-1])
        assert 0.0 <= result[key] <= 1.0
