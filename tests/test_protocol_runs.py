"""--protocol official | strict end to end on a 4-class embedded subset with tiny models:
finetune (+ voting), few-shot, SVM and zero-shot under both protocols; official >= strict where
official selects on test data, checked on the numbers the runs produce; what results.json records.
"""

import functools
import hashlib
import json
import os

import numpy as np
import pytest
import torch

import recon_fast
import recon_fast.train.finetune as finetune_module
from recon_fast.cli import main
from recon_fast.eval.classification import accuracy
from recon_fast.eval.protocol import carve_validation
from recon_fast.model import ReConConfig, build_model, save_checkpoint
from recon_fast.train.config import ConfigError, load_config
from recon_fast.train.finetune import plain_batches, split_dataset
from recon_fast.train.runtime import RunOptions

SMALL_SET = ["_base_.CLASSES=[sphere, cube, torus, chair]", "_base_.SHAPES_PER_CLASS=12",
             "_base_.TEST_PER_CLASS=4"]  # 8 train + 4 test shapes per class
TINY = dict(trans_dim=48, encoder_dims=48, depth=2, num_heads=4, num_group=16, group_size=16,
            drop_path_rate=0.0)
TINY_SETS = [f"model.{k}={v}" for k, v in TINY.items()] + ["total_bs=8"]


def sets(splits, *extra):
    values = [f"dataset.{s}.{o}" for s in splits for o in SMALL_SET] + TINY_SETS + list(extra)
    return [x for v in values for x in ("--set", v)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("protocol_cache"))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A randomly initialised tiny ReCon checkpoint in the official layout."""
    torch.manual_seed(0)
    model = build_model(ReConConfig(**TINY, img_feature_dim=512, text_feature_dim=512))
    path = str(tmp_path_factory.mktemp("pretrained") / "pretrain.pth")
    save_checkpoint(path, model)
    return path


def common(out, cache):
    return ["--out", str(out), "--workers", "0", "--no-progress", "--no-tensorboard",
            "--cache-dir", cache, "--device", "cpu"]


def run(args, capsys) -> dict:
    assert main(args) == 0, capsys.readouterr().err
    capsys.readouterr()
    return json.load(open(os.path.join(args[args.index("--out") + 1], "results.json")))


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def assert_records(results, protocol, checkpoint):
    assert results["protocol"] == protocol
    assert results["checkpoint_sha256"] == sha256(checkpoint)
    assert results["recon_fast"] == recon_fast.__version__
    assert results["seed"] == results["seeds"]["run"] == 0 and "eval" in results["seeds"]
    assert "split_sizes" in results


# ---- the validation split ---------------------------------------------------------------------

class Labelled(torch.utils.data.Dataset):
    name = "Toy"

    def __init__(self, labels):
        self.labels = np.array(labels)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"index": i, "points": torch.zeros(4, 3), "label": torch.tensor(self.labels[i])}


def test_validation_split_is_stratified_disjoint_and_deterministic():
    data = Labelled([0] * 10 + [1] * 5 + [2] * 1)
    train, val = carve_validation(data)
    # 20% per class, rounded, at least one when a class has two or more: 2 + 1 + 0.
    assert sorted(val.labels.tolist()) == [0, 0, 1]
    assert len(train) == 13 and not set(train.indices) & set(val.indices)
    assert sorted(train.indices + val.indices) == list(range(16))
    assert carve_validation(data)[1].indices == val.indices  # same split every time
    assert val.name == "Toy" and int(val[0]["label"]) == int(data.labels[val.indices[0]])
    with pytest.raises(ValueError, match="validation split"):
        carve_validation(Labelled([0, 1, 2]))  # no class can spare a shape


# ---- finetune -----------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::UserWarning")
def test_finetune_both_protocols(tmp_path, cache, pretrained, capsys, monkeypatch):
    splits = ("train", "val", "test")
    config = load_config("embedded_finetune", sets(splits)[1::2])
    opts = RunOptions(cache_dir=cache, workers=0, progress=False)
    test_set = split_dataset(config, "test", opts)
    test_curve = {}

    def test_accuracy_each_epoch(epoch, model):
        """What official selection would look at: the test accuracy of every epoch's model."""
        test_curve[epoch] = accuracy(model, plain_batches(test_set, 8, 0), 1024,
                                     torch.device("cpu"))

    monkeypatch.setattr(finetune_module, "run_finetune",
                        functools.partial(finetune_module.run_finetune,
                                          on_validated=test_accuracy_each_epoch))
    base = ["finetune", "--config", "embedded_finetune", "--init-ckpt", pretrained,
            "--epochs", "3", "--votes", "2"] + sets(splits)
    strict = run(base + common(tmp_path / "strict", cache), capsys)
    assert_records(strict, "strict", tmp_path / "strict" / "ckpt-best.pth")
    assert strict["init_checkpoint_sha256"] == sha256(pretrained)
    assert strict["split_sizes"] == {"train": 24, "val": 8, "test": 16}
    assert strict["seeds"]["validation_split"] == 0
    val_curve = {int(e): a for e, a in strict["epoch_metrics"].items()}
    assert len(val_curve) == 3 == len(test_curve)
    chosen = max(val_curve, key=lambda e: (val_curve[e], -e))  # first best validation epoch
    metrics = strict["metrics"]
    assert strict["selected_epoch"] == chosen and metrics["val_accuracy"] == val_curve[chosen]
    assert "best" not in metrics and "last_metric" not in metrics  # validation numbers
    # strict tests the validation-chosen model once; best-of-test over the same run's epochs
    # (the official selection) can only be higher or equal.
    assert metrics["test_accuracy"] == test_curve[chosen]
    assert max(test_curve.values()) >= metrics["test_accuracy"]
    assert 0.0 <= metrics["vote"] <= 1.0

    test_curve.clear()
    official = run(base + ["--protocol", "official", "--vote-rounds", "3"]
                   + common(tmp_path / "official", cache), capsys)
    assert_records(official, "official", tmp_path / "official" / "ckpt-best.pth")
    assert official["split_sizes"] == {"train": 32, "val": 16, "test": 16}
    epochs = {int(e): a for e, a in official["epoch_metrics"].items()}
    assert epochs == test_curve  # official validates on the test split
    metrics = official["metrics"]
    assert metrics["best"] == metrics["test_accuracy"] == max(epochs.values())
    assert len(official["vote_rounds"]) == 3 and metrics["vote"] == max(official["vote_rounds"])

    # Voting with the same checkpoint: the best of 3 seeded rounds >= the strict single pass,
    # which is round 0.
    ckpt = str(tmp_path / "official" / "ckpt-best.pth")
    evals = {}
    for protocol, rounds in (("official", "3"), ("strict", "1")):
        evals[protocol] = run(["eval", "vote", "--config", "embedded_finetune", "--ckpt", ckpt,
                               "--votes", "2", "--vote-rounds", rounds, "--protocol", protocol]
                              + sets(("train", "test")) + common(tmp_path / protocol[0], cache),
                              capsys)
        assert_records(evals[protocol], protocol, ckpt)
    rounds = evals["official"]["rounds"]
    assert evals["official"]["metrics"]["vote_accuracy"] == max(rounds)
    assert evals["strict"]["metrics"]["vote_accuracy"] == rounds[0]
    assert max(rounds) >= evals["strict"]["metrics"]["vote_accuracy"]


# ---- few-shot -----------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fewshot_both_protocols(tmp_path, cache, pretrained, capsys):
    """Same seed, same episodes, same training (validation draws nothing from the training RNG):
    official keeps each fold's best test accuracy over epochs, strict its last epoch's."""
    args = ["fewshot", "--config", "embedded_fewshot", "--init-ckpt", pretrained, "--way", "3",
            "--shot", "4", "--folds", "0-1", "--epochs", "3"] + \
        sets(("train", "val"), "dataset.val.others.query=4", "model.cls_dim=16")
    folds = {}
    for protocol in ("strict", "official"):
        folds[protocol] = run(args + ["--protocol", protocol]
                              + common(tmp_path / protocol, cache), capsys)
        results = folds[protocol]
        assert results["protocol"] == protocol and results["seeds"]["run"] == 0
        assert results["split_sizes"] == {"train": 12, "val": 0 if protocol == "strict" else 12,
                                          "test": 12}
        accs = [results["folds"][f]["accuracy"] for f in ("0", "1")]
        mean = 100 * sum(accs) / 2
        assert results["metrics"]["fewshot_mean_percent"] == pytest.approx(mean, abs=1e-9)
        assert results["metrics"]["fewshot_std_percent"] == pytest.approx(
            abs(100 * accs[0] - mean), abs=1e-9)  # population std of two values
    ckpt_of = {"strict": "ckpt-last.pth", "official": "ckpt-best.pth"}
    for fold in ("0", "1"):
        for protocol in ("strict", "official"):
            assert folds[protocol]["folds"][fold]["checkpoint_sha256"] == sha256(
                tmp_path / protocol / f"fold{fold}" / ckpt_of[protocol])
        official, strict = (folds[p]["folds"][fold] for p in ("official", "strict"))
        epochs = official["epoch_metrics"]  # test accuracy after each epoch, keyed from 1
        assert official["accuracy"] == max(epochs.values())
        assert strict["epoch_metrics"] == {}  # strict looked at nothing before the end
        assert strict["accuracy"] == epochs["3"]  # the same training run, tested at its end
        assert official["accuracy"] >= strict["accuracy"]
    assert folds["official"]["metrics"]["fewshot_mean_percent"] >= \
        folds["strict"]["metrics"]["fewshot_mean_percent"]


# ---- SVM and zero-shot --------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::UserWarning")
def test_svm_and_zeroshot_both_protocols(tmp_path, cache, pretrained, capsys):
    out = {}
    for method, extra in (("svm", []), ("zeroshot", ["--teacher-weights", "random"])):
        for protocol in ("strict", "official"):
            out[method, protocol] = run(
                ["eval", method, "--config", f"embedded_{method}", "--ckpt", pretrained,
                 "--protocol", protocol, "--recompute-bn", "off"] + extra
                + sets(("train", "test")) + common(tmp_path / f"{method}_{protocol}", cache),
                capsys)
            assert_records(out[method, protocol], protocol, pretrained)
    # SVM: fit on train, score test once under both protocols.
    for protocol in ("strict", "official"):
        assert out["svm", protocol]["split_sizes"] == {"train": 32, "test": 16}
    assert out["svm", "strict"]["metrics"] == out["svm", "official"]["metrics"]
    # Zero-shot: strict counts the 16 test clouds, official the 32 train clouds too; the test
    # part is the same draw, so official's correct count minus strict's is a train count.
    strict, official = (out["zeroshot", p] for p in ("strict", "official"))
    assert strict["split_sizes"] == {"test": 16}
    assert official["split_sizes"] == {"train": 32, "test": 16}
    strict_correct = strict["metrics"]["zero_shot_accuracy"] * 16
    train_correct = official["metrics"]["zero_shot_accuracy"] * 48 - strict_correct
    assert strict_correct == pytest.approx(round(strict_correct), abs=1e-6)
    assert train_correct == pytest.approx(round(train_correct), abs=1e-6)
    assert 0 <= round(train_correct) <= 32


# ---- mistakes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["finetune", "--config", "embedded_finetune"],
    ["fewshot", "--config", "embedded_fewshot", "--way", "3", "--shot", "4"],
    ["eval", "vote", "--config", "embedded_finetune", "--ckpt", "x.pth"],
])
def test_unknown_protocol_is_a_clear_error(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(command + ["--protocol", "best"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--protocol" in err and "'best'" in err and "official" in err and "strict" in err


def test_strict_refuses_the_best_of_several_vote_rounds(tmp_path, cache, pretrained, capsys):
    assert main(["eval", "vote", "--config", "embedded_finetune", "--ckpt", pretrained,
                 "--vote-rounds", "3"] + common(tmp_path, cache)) == 2
    err = capsys.readouterr().err
    assert "--vote-rounds 3" in err and "--protocol official" in err
    with pytest.raises(ConfigError, match="--protocol must be one of official, strict"):
        finetune_module.run_finetune(load_config("embedded_finetune"), RunOptions(),
                                     protocol="best")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_resume_keeps_the_runs_protocol(tmp_path, cache, pretrained, capsys):
    """strict and official finetuning train on different splits: a resume under the other
    protocol is refused, naming it; under the run's own protocol it continues."""
    splits = ("train", "val", "test")
    base = ["finetune", "--config", "embedded_finetune", "--init-ckpt", pretrained,
            "--epochs", "2", "--vote-rounds", "0"] + sets(splits) + common(tmp_path, cache)
    assert main(base + ["--max-steps", "1"]) == 0, capsys.readouterr().err  # stops after a step
    capsys.readouterr()
    last = tmp_path / "ckpt-last.pth"
    stored = torch.load(last, map_location="cpu", weights_only=False)
    assert stored["identity"] == {"protocol": "strict", "select_on": "validation"}
    assert main(base + ["--resume", "--protocol", "official"]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "'strict' -> 'official'" in err and "protocol" in err
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 1
    results = run(base + ["--resume", "--protocol", "strict"], capsys)
    assert results["protocol"] == "strict" and results["global_step"] > 1


@pytest.mark.parametrize("protocol, asked, expected", [
    ("official", [], 299),  # the reference's test mode: for time in range(1, 300)
    ("strict", [], 1), ("official", ["--vote-rounds", "3"], 3)])
def test_eval_vote_rounds_default_to_the_protocols(protocol, asked, expected, monkeypatch,
                                                    tmp_path, cache, pretrained, capsys):
    import recon_fast.train.evaluate as evaluate_module

    seen = {}

    def record(method, config, opts, **kwargs):
        seen.update(kwargs)
        raise ConfigError("recorded")  # stop before any work: only the arguments matter

    monkeypatch.setattr(evaluate_module, "run_evaluation", record)
    assert main(["eval", "vote", "--config", "embedded_finetune", "--ckpt", pretrained,
                 "--protocol", protocol] + asked + common(tmp_path, cache)) == 2
    assert "recorded" in capsys.readouterr().err
    assert seen["vote_rounds"] == expected and seen["protocol"] == protocol


def test_voting_rounds_report_their_progress():
    """Many rounds take a while (the reference's 299): each round is logged with the best so far,
    as the reference's [TEST_VOTE_time r] lines; one round logs nothing extra."""
    from recon_fast.eval.classification import round_reporter, vote_accuracy

    class FirstCoordinate(torch.nn.Module):  # "class 1" when the subset's mean x is positive
        def forward(self, points):
            x = points[..., 0].mean(dim=1)
            return torch.stack([-x, x], dim=1)

    clouds = torch.randn(4, 1200, 3, generator=torch.Generator().manual_seed(0))
    batch = {"points": clouds, "label": torch.tensor([0, 1, 0, 1])}
    lines = []
    best, rounds = vote_accuracy(FirstCoordinate(), lambda: [batch], 1024, torch.device("cpu"),
                                 lambda p: p, votes=2, rounds=3, seed=0,
                                 on_round=round_reporter(lines.append, "eval", 3, 2))
    assert lines[0] == "[eval] voting: 3 rounds of 2 votes, the best reported"
    assert len(lines) == 4 and best == max(rounds)
    for r, line in enumerate(lines[1:]):
        assert line == (f"[eval] vote round {r + 1}/3: {rounds[r] * 100:.2f}% "
                        f"(best {max(rounds[:r + 1]) * 100:.2f}%)")
    assert round_reporter(lines.append, "eval", 1, 10) is None


@pytest.mark.parametrize("command, words", [
    (["eval", "vote", "--vote-rounds", "0", "--protocol", "official"], "--vote-rounds must be >= 1, got 0"),
    (["eval", "vote", "--vote-rounds", "-2", "--protocol", "official"], "--vote-rounds must be >= 1, got -2"),
    (["eval", "vote", "--votes", "0"], "--votes must be >= 1, got 0"),
    (["finetune", "--vote-rounds", "-1"], "--vote-rounds must be >= 0, got -1"),
    (["finetune", "--votes", "0"], "--votes must be >= 1, got 0")])
def test_vote_counts_that_vote_on_nothing_are_refused_first(command, words, tmp_path, capsys):
    """Refused before the checkpoint (here a missing file) or any data is read."""
    ckpt = ["--ckpt", str(tmp_path / "missing.pth")] if command[0] == "eval" else \
        ["--init-ckpt", str(tmp_path / "missing.pth")]
    assert main(command + ["--config", "embedded_finetune", "--out", str(tmp_path / "run")]
                + ckpt) == 2
    err = capsys.readouterr().err
    assert words in err and "missing.pth" not in err
