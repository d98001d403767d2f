"""ResumableSampler and make_loader: seeded order, epochs, exact resume, DDP sharding."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from img2img.data import DataError, ResumableSampler, SampleKey, make_loader


class Keys(Dataset):
    """Returns the key it was asked for, as tensors, so the loader's order is visible."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: SampleKey) -> dict:
        return {"index": torch.tensor(key.index), "epoch": torch.tensor(key.epoch)}


def indices(sampler: ResumableSampler) -> list[int]:
    return [k.index for k in sampler]


def test_order_is_a_permutation_fixed_by_seed_and_epoch() -> None:
    a, b = ResumableSampler(20, seed=1), ResumableSampler(20, seed=1)
    first = indices(a)
    assert sorted(first) == list(range(20)) and first != list(range(20))
    assert indices(b) == first
    b.set_epoch(1)
    assert indices(b) != first
    assert indices(ResumableSampler(20, seed=2)) != first
    assert indices(ResumableSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


def test_plain_epoch_loop_advances_epochs_and_set_epoch_wins() -> None:
    s = ResumableSampler(10, seed=0)
    e0 = list(s)
    e1 = list(s)
    assert {k.epoch for k in e0} == {0} and {k.epoch for k in e1} == {1}
    assert [k.index for k in e1] == s.order(1)
    s.set_epoch(5)
    assert {k.epoch for k in s} == {5}


def test_skip_resumes_exactly_and_state_round_trips() -> None:
    s = ResumableSampler(12, seed=3)
    s.set_epoch(2)
    full = list(s)
    resumed = ResumableSampler(12, seed=3)
    saved = {**s.state_dict(), "epoch": 2, "start": 5}
    resumed.load_state_dict(saved)
    assert list(resumed) == full[5:]
    assert len(list(resumed)) == 12  # the skip applies to one iteration only (then epoch 3, in full)


def test_load_state_refuses_another_dataset() -> None:
    s = ResumableSampler(12, seed=3)
    with pytest.raises(DataError, match="length was 12, now 13"):
        ResumableSampler(13, seed=3).load_state_dict(s.state_dict())


@pytest.mark.parametrize("drop_last", [False, True])
def test_replicas_shard_the_epoch_like_distributed_sampler(drop_last) -> None:
    n, r = 10, 3
    shards = [
        indices(ResumableSampler(n, seed=7, num_replicas=r, rank=k, drop_last=drop_last)) for k in range(r)
    ]
    order = ResumableSampler(n, seed=7).order(0)
    lengths = {len(s) for s in shards}
    if drop_last:
        assert lengths == {3} and sorted(sum(shards, [])) == sorted(order[:9])
    else:
        padded = order + order[:2]  # wrapped to 12 = 4 per replica
        assert lengths == {4} and all(shards[k] == padded[k::r] for k in range(r))
    assert len(ResumableSampler(n, num_replicas=r, rank=0, drop_last=drop_last)) == (3 if drop_last else 4)


def test_make_loader_batches_and_drop_last_default() -> None:
    train = make_loader(Keys(10), batch_size=4, seed=0)
    assert [len(b["index"]) for b in train] == [4, 4]  # shuffle=True drops the ragged batch
    evaluation = make_loader(Keys(10), batch_size=4, shuffle=False)
    batches = list(evaluation)
    assert [b["index"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert isinstance(train.sampler, ResumableSampler)


def test_make_loader_refuses_a_batch_larger_than_the_data() -> None:
    with pytest.raises(DataError, match="fewer than the batch size 8"):
        make_loader(Keys(5), batch_size=8)
    assert len(list(make_loader(Keys(5), batch_size=8, shuffle=False))) == 1
