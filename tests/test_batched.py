"""Batched trials: K stacked models train exactly as K separate runs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lthbench.batched import can_batch, train_batched
from lthbench.settings import Training
from lthbench.trainer import train
from test_training import half_masks, synthetic_data


def nets(k: int) -> list[nn.Module]:
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)))
    return out


@pytest.mark.parametrize("settings", [
    dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4),
    dict(optimizer="adam", lr=1e-2),
], ids=["sgd", "adam"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared-data", "own-data"])
def test_batched_training_equals_separate_runs(settings, shared):
    training = Training(batch_size=20, iterations=60, eval_every=20, validation_size=1, augment=True, **settings)
    models = nets(3)
    masks = [half_masks(m) for m in models]
    datas = [synthetic_data(augment=True)] * 3 if shared else [synthetic_data(seed=s, augment=True) for s in range(3)]
    separate = [copy.deepcopy(m) for m in models]
    expected = [train(m, mk, d, training) for m, mk, d in zip(separate, masks, datas)]
    results = train_batched(models, masks, datas, training)
    for got, want, batched_model, single_model, mask in zip(results, expected, models, separate, masks):
        assert got.curves.iteration == want.curves.iteration
        for key in ("train_loss", "val_loss", "val_accuracy", "test_accuracy"):
            torch.testing.assert_close(getattr(got.curves, key), getattr(want.curves, key), rtol=1e-5, atol=1e-6)
        for (name, a), b in zip(batched_model.named_parameters(), single_model.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
            if name in mask:
                assert torch.all(a[~mask[name]] == 0)


def test_batch_norm_networks_are_not_batched():
    assert can_batch(nets(1)[0])
    assert not can_batch(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
