"""Generated N-way K-shot episodes: the same classes in both splits, relabelled, deterministic,
and an error (never all classes) when the dataset cannot supply the episode."""

import numpy as np
import pytest
import torch

from recon_fast.data import dataset_from_config
from recon_fast.data.fewshot import EpisodeError, FewShotEpisode
from recon_fast.errors import ReconFastError


class Labelled(torch.utils.data.Dataset):
    def __init__(self, per_class, classes=6, offset=0):
        self.labels = np.repeat(np.arange(classes), per_class)
        self.class_names = [f"c{i}" for i in range(classes)]
        self.offset = offset

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"index": i, "points": torch.full((4, 3), float(i + self.offset)),
                "label": torch.tensor(self.labels[i])}


def test_episode_splits_share_classes_and_relabel():
    train, test = Labelled(7), Labelled(5, offset=1000)
    a = FewShotEpisode(train, way=3, shot=4, fold=2, split="train")
    b = FewShotEpisode(test, way=3, shot=4, fold=2, split="test", query=5)
    assert a.classes == b.classes and len(a.classes) == 3
    assert len(a) == 12 and len(b) == 15
    for episode, per_class in ((a, 4), (b, 5)):
        items = [episode[i] for i in range(len(episode))]
        assert sorted(int(x["label"]) for x in items) == sorted([0, 1, 2] * per_class)
        for x in items:  # the new label is the position of the original class
            assert episode.classes[int(x["label"])] == int(x["original_label"])
        indices = [int(x["index"]) for x in items]
        assert len(set(indices)) == len(indices)  # without replacement
    assert a.class_names == [f"c{c}" for c in a.classes]


def test_episodes_are_deterministic_and_differ_between_folds():
    data = Labelled(10, classes=12)
    first = FewShotEpisode(data, 5, 3, 0, "train")
    again = FewShotEpisode(data, 5, 3, 0, "train")
    assert first.indices == again.indices and first.classes == again.classes
    folds = {tuple(FewShotEpisode(data, 5, 3, f, "train").classes) for f in range(10)}
    assert len(folds) > 1


def test_impossible_episodes_are_errors():
    data = Labelled(4, classes=6)
    with pytest.raises(EpisodeError, match="7-way episode needs 7 classes; the dataset has 6"):
        FewShotEpisode(data, 7, 2, 0, "train")
    with pytest.raises(EpisodeError, match="shot=5 needs 5 train items of class"):
        FewShotEpisode(data, 3, 5, 0, "train")
    with pytest.raises(EpisodeError, match="query=20 needs 20 test items"):
        FewShotEpisode(data, 3, 2, 0, "test")  # the official 20 test items per class
    assert issubclass(EpisodeError, ReconFastError)


def test_dataset_config_builds_an_episode_of_a_plain_classification_set(tmp_path):
    from data_fixtures import write_scanobjectnn

    root = tmp_path / "main_split"
    write_scanobjectnn(str(root / "training_objectdataset_augmentedrot_scale75.h5"), count=90,
                       seed=0)
    base = {"NAME": "ScanObjectNN_hardest", "ROOT": str(root)}
    full = dataset_from_config(base, {"subset": "train"})
    episode = dataset_from_config(base, {"subset": "train", "way": 2, "shot": 2, "fold": 1})
    assert isinstance(episode, FewShotEpisode) and len(episode) == 4
    assert episode.name == "ScanObjectNN_hardest"  # keeps the dataset's augmentation
    assert all(full.labels[i] in episode.classes for i in episode.indices)
    with pytest.raises(ReconFastError, match="needs 40 train items"):
        dataset_from_config(base, {"subset": "train", "way": 2, "shot": 40, "fold": 1})
