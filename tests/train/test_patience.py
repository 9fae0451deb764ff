"""Patience: a run stops after N evaluations without a new minimum validation loss, alone or in a stack."""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from lthbench.config.settings import Training
from lthbench.train.data import DeviceData
from helpers.synthetic import half_masks, synthetic_data, train_alone, train_together


def noisy_data(seed: int = 0) -> DeviceData:
    """The synthetic problem with a third of its training labels drawn at random: it overfits, and
    validation loss rises after a minimum."""
    data = synthetic_data(seed=seed)
    g = torch.Generator().manual_seed(seed)
    labels = data.train_labels.clone()
    flip = torch.rand(len(labels), generator=g) < 0.33
    labels[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=g)
    return dataclasses.replace(data, train_labels=labels)


def _nets(k: int) -> list[nn.Module]:
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)))
    return out


TRAINING = dict(optimizer="adam", lr=1e-2, batch_size=20, iterations=400, eval_every=10, validation_size=100)


def _without_new_minimum(val_loss: list[float]) -> int:
    """Evaluations at the end of a curve since its minimum."""
    return len(val_loss) - 1 - val_loss.index(min(val_loss))


def test_a_run_stops_after_patience_evaluations_without_a_new_minimum(one_thread):
    (model,) = _nets(1)
    result = train_alone(model, half_masks(model), noisy_data(), Training(patience=3, **TRAINING))
    curves = result.curves
    assert result.stopped_at is not None and result.stopped_at < 400
    assert curves.iteration[-1] == result.stopped_at
    assert _without_new_minimum(curves.val_loss) == 3
    full = train_alone(copy.deepcopy(_nets(1)[0]), half_masks(model), noisy_data(), Training(**TRAINING))
    assert full.stopped_at is None and full.curves.iteration[-1] == 400
    assert full.curves.val_loss[:len(curves.val_loss)] == curves.val_loss  # the same run, cut short


def test_a_stopped_run_of_a_stack_records_and_keeps_what_it_would_alone(one_thread):
    training = Training(patience=2, **TRAINING)
    models = _nets(3)
    masks = [half_masks(m) for m in models]
    datas = [noisy_data(seed=s) for s in range(3)]
    alone = [copy.deepcopy(m) for m in models]
    expected = [train_alone(m, mk, d, training) for m, mk, d in zip(alone, masks, datas)]
    assert len({r.stopped_at for r in expected}) > 1  # they stop at different iterations: the stack goes on
    results = train_together(models, masks, datas, training)
    for got, want, stacked, single in zip(results, expected, models, alone):
        assert got.stopped_at == want.stopped_at
        assert vars(got.curves) == vars(want.curves)
        for a, b in zip(stacked.parameters(), single.parameters()):
            assert torch.equal(a, b)
