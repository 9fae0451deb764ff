"""Batched trials: K stacked models train exactly as K separate runs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lthbench.train.checkpoint import Checkpointer, TrainingHooks
from lthbench.train.stack import can_batch
from lthbench.store import load_state
from lthbench.config.settings import Training
from helpers.synthetic import half_masks, synthetic_data, train_alone, train_together


def nets(k: int, conv: bool = False) -> list[nn.Module]:
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        if conv:
            out.append(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10)))
        else:
            out.append(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)))
    return out


def train_both_ways(settings, shared, conv):
    training = Training(batch_size=20, iterations=60, eval_every=20, validation_size=1, augment=True, **settings)
    models = nets(3, conv)
    masks = [half_masks(m) for m in models]
    datas = [synthetic_data(augment=True)] * 3 if shared else [synthetic_data(seed=s, augment=True) for s in range(3)]
    separate = [copy.deepcopy(m) for m in models]
    expected = [train_alone(m, mk, d, training) for m, mk, d in zip(separate, masks, datas)]
    results = train_together(models, masks, datas, training)
    for got, want, batched_model, single_model, mask in zip(results, expected, models, separate, masks):
        assert got.curves.iteration == want.curves.iteration
        for (name, a), b in zip(batched_model.named_parameters(), single_model.parameters()):
            if name in mask:
                assert torch.all(a[~mask[name]] == 0)
        yield got.curves, want.curves, list(batched_model.parameters()), list(single_model.parameters())


SETTINGS = [dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4), dict(optimizer="adam", lr=1e-2)]
CURVES = ("train_loss", "val_loss", "val_accuracy", "test_accuracy")


@pytest.mark.parametrize("settings", SETTINGS, ids=["sgd", "adam"])
@pytest.mark.parametrize("shared, conv", [(True, False), (False, False), (True, True)],
                         ids=["dense-shared-data", "dense-own-data", "conv-shared-data"])
def test_batched_training_equals_separate_runs_bit_for_bit_on_the_cpu(settings, shared, conv, request):
    if conv:
        # With several intra-op threads torch splits the stack's (K x channels) convolution
        # unlike a lone one, so there they agree to rounding only; one thread orders the sums alike.
        request.getfixturevalue("one_thread")
    for got, want, batched_params, single_params in train_both_ways(settings, shared, conv):
        for key in CURVES:
            assert getattr(got, key) == getattr(want, key), key
        for a, b in zip(batched_params, single_params):
            assert torch.equal(a, b)


@pytest.mark.parametrize("settings", SETTINGS, ids=["sgd", "adam"])
def test_convolutions_with_one_batch_per_model_agree_to_rounding(settings):
    # vmap runs them as one grouped convolution, which orders its sums unlike a lone convolution.
    for got, want, batched_params, single_params in train_both_ways(settings, shared=False, conv=True):
        for key in CURVES:
            torch.testing.assert_close(getattr(got, key), getattr(want, key), rtol=1e-5, atol=1e-6)
        for a, b in zip(batched_params, single_params):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class Interrupt(Exception):
    pass


def test_an_interrupted_stack_resumes_from_its_checkpoint_to_the_same_numbers(tmp_path):
    training = Training(batch_size=20, iterations=60, eval_every=20, validation_size=1, augment=True,
                        optimizer="adam", lr=1e-2)
    datas = [synthetic_data(seed=s, augment=True) for s in range(3)]
    masks = [half_masks(m) for m in nets(3)]
    expected = train_together(reference := nets(3), masks, datas, training)

    def stop_at_30(done, total, losses):
        if done == 30:
            raise Interrupt

    checkpointer = Checkpointer(tmp_path / "group.pt", 20)
    with pytest.raises(Interrupt):
        train_together(nets(3), masks, datas, training, hooks=TrainingHooks(checkpointer, stop_at_30))
    assert load_state(tmp_path / "group.pt")["iteration"] == 20
    lines = []
    resumed = train_together(models := nets(3), masks, datas, training,
                             hooks=TrainingHooks(checkpointer, log=lines.append))
    assert lines == ["resumed the batched group of 3 runs from its checkpoint at iteration 20"]
    for got, want in zip(resumed, expected):
        assert vars(got.curves) == vars(want.curves) and got.diverged == want.diverged
    for model, ref in zip(models, reference):
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ref.parameters()))


def test_batch_norm_networks_are_not_batched():
    assert can_batch(nets(1)[0])
    assert not can_batch(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    assert not can_batch(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)))
    assert can_batch(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.0)))
