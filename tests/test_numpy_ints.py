"""Counts given as numpy integers (what shapes, argmax and config arithmetic hand back) are
accepted wherever a Python int is, and turned into Python ints; bools are still refused."""

import numpy as np
import pytest
import torch

from recon_fast.attention import _check_num_heads
from recon_fast.data.loader import build_loader
from recon_fast.data.prompts import build_prompt, prompt_ids
from recon_fast.ops.validate import is_int


@pytest.mark.parametrize("value,ok", [(3, True), (np.int64(3), True), (np.int32(3), True),
                                      (torch.tensor(3), True), (True, False), (np.bool_(True), False),
                                      (3.0, False), ("3", False), (None, False)])
def test_is_int(value, ok):
    assert is_int(value) is ok


def test_loader_takes_numpy_counts():
    data = torch.utils.data.TensorDataset(torch.arange(10.0))
    loader = build_loader(data, np.int64(4), train=False, workers=np.int64(0))
    assert loader.batch_sampler.batch_size == 4
    assert type(loader.batch_sampler.batch_size) is int and type(loader.num_workers) is int
    assert len(list(loader)) == 3
    with pytest.raises(ValueError, match="batch_size"):
        build_loader(data, True, train=False, workers=0)


def test_attention_heads_and_prompt_ids_take_numpy_ints():
    assert _check_num_heads(np.int64(6)) == 6 and type(_check_num_heads(np.int64(6))) is int
    assert build_prompt("a chair", np.int64(0), np.int64(0)) == build_prompt("a chair", 0, 0)
    assert prompt_ids(np.int64(5)) == prompt_ids(5)
    with pytest.raises(ValueError, match="num_heads"):
        _check_num_heads(np.bool_(True))
