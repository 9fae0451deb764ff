"""The trainer: masks survive every optimizer, schedules, augmentation, divergence, determinism."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lthbench.train.checkpoint import Snapshots, TrainingHooks
from lthbench.train.data import augment_batch, seeded_generator
from lthbench.config.settings import Training
from lthbench.train.optim import lr_factor, make_optimizer
from lthbench.train.stack import ModuleStack, VmapStack, make_stack
from helpers.synthetic import half_masks, small_net, synthetic_data, train_alone


@pytest.mark.parametrize("settings", [
    dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4),
    dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    dict(optimizer="adam", lr=1e-2, weight_decay=1e-4),
], ids=["sgd-momentum-wd", "sgd-nesterov", "adam"])
def test_pruned_weights_stay_exactly_zero(settings):
    model = small_net()
    masks = half_masks(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    training = Training(batch_size=20, iterations=100, eval_every=50, validation_size=1, **settings)
    result = train_alone(model, masks, synthetic_data(), training)
    assert not result.diverged
    for name, param in model.named_parameters():
        if name in masks:
            assert torch.all(param[~masks[name]] == 0), name
            assert not torch.equal(param[masks[name]], before[name][masks[name]]), f"{name} did not train"


def test_training_learns_and_records_early_stop():
    training = Training(optimizer="adam", lr=1e-2, batch_size=20, iterations=200, eval_every=40, validation_size=1)
    result = train_alone(small_net(), {}, synthetic_data(), training)
    curves = result.curves
    assert curves.iteration == [40, 80, 120, 160, 200]
    assert curves.test_accuracy[-1] > 0.5
    summary = result.summary()
    best = min(range(5), key=lambda i: curves.val_loss[i])
    assert summary["early_stop_iteration"] == curves.iteration[best]
    assert summary["early_stop_test_accuracy"] == curves.test_accuracy[best]
    assert summary["final_test_accuracy"] == curves.test_accuracy[-1]


def test_training_is_deterministic_on_cpu():
    training = Training(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=20, iterations=60, eval_every=20,
                        validation_size=1, augment=True)
    a, b = small_net(), small_net()
    ra = train_alone(a, half_masks(a), synthetic_data(augment=True), training)
    rb = train_alone(b, half_masks(b), synthetic_data(augment=True), training)
    assert ra.curves == rb.curves
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_non_finite_loss_is_recorded_as_diverged():
    training = Training(optimizer="sgd", lr=1e12, batch_size=20, iterations=200, eval_every=10, validation_size=1)
    result = train_alone(small_net(), {}, synthetic_data(), training)
    assert result.diverged
    assert result.curves.iteration[-1] < 200


def test_state_is_saved_at_requested_iterations_and_resuming_matches():
    training = Training(optimizer="sgd", lr=0.05, momentum=0.0, batch_size=20, iterations=50, eval_every=25,
                        validation_size=1)
    saved = {}
    model = small_net()
    keep = lambda k, stack: saved.update({k: stack.module_state(0)})
    train_alone(model, {}, synthetic_data(), training, hooks=TrainingHooks(snapshots=Snapshots(frozenset({30}), keep)))
    assert list(saved) == [30]
    # 30 iterations from scratch reach exactly the saved θ_30 (same data order, same schedule)
    fresh = small_net()
    train_alone(fresh, {}, synthetic_data(), Training(**{**vars(training), "iterations": 30}))
    assert all(torch.equal(fresh.state_dict()[n], saved[30][n]) for n in saved[30])


def test_lr_schedule_warmup_steps_and_cosine():
    step = Training(lr=1.0, warmup_iterations=4, lr_milestones=(10, 20), lr_gamma=0.1)
    assert [lr_factor(step, i, 30) for i in (0, 1, 3, 9)] == [0.25, 0.5, 1.0, 1.0]
    assert lr_factor(step, 10, 30) == pytest.approx(0.1)
    assert lr_factor(step, 25, 30) == pytest.approx(0.01)
    cosine = Training(lr=1.0, lr_schedule="cosine")
    assert lr_factor(cosine, 0, 100) == 1.0
    assert lr_factor(cosine, 50, 100) == pytest.approx(0.5)
    assert lr_factor(cosine, 100, 100) == pytest.approx(0.0)


def test_augmentation_is_a_shifted_and_maybe_flipped_copy():
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6) + 1
    out = augment_batch(images, seeded_generator("t", 0), padding=2)
    assert out.shape == images.shape
    padded = nn.functional.pad(images, (2,) * 4)
    for i in range(2):
        candidates = [padded[i, :, dy:dy + 6, dx:dx + 6] for dy in range(5) for dx in range(5)]
        candidates += [c.flip(2) for c in candidates]
        assert any(torch.equal(out[i], c) for c in candidates)
    again = augment_batch(images, seeded_generator("t", 0), padding=2)
    assert torch.equal(out, again)


def test_seeded_generator_is_stable_and_distinct():
    a = torch.rand(3, generator=seeded_generator("x", 1))
    assert torch.equal(a, torch.rand(3, generator=seeded_generator("x", 1)))
    assert not torch.equal(a, torch.rand(3, generator=seeded_generator("x", 2)))
    assert math.isfinite(float(a.sum()))


@pytest.mark.parametrize("settings", [dict(optimizer="adam", lr=1e-3), dict(optimizer="sgd", lr=0.1, momentum=0.9)])
def test_optimizers_are_multi_tensor_on_the_cpu(settings):
    optimizer = make_optimizer(Training(**settings), list(nn.Linear(3, 2).parameters()))
    assert optimizer.defaults["foreach"] is True and not optimizer.defaults["fused"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_optimizers_are_fused_on_a_gpu():
    optimizer = make_optimizer(Training(optimizer="adam", lr=1e-3), list(nn.Linear(3, 2).cuda().parameters()))
    assert optimizer.defaults["fused"] is True


def test_a_snapshot_that_stops_training_recomputes_the_state_the_full_training_passed_through():
    training = Training(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=20, iterations=50, eval_every=25,
                        validation_size=1, lr_schedule="cosine")
    full, stopped = {}, {}
    train_alone(small_net(), {}, synthetic_data(), training,
                hooks=TrainingHooks(snapshots=Snapshots(frozenset({30}), lambda k, s: full.update(s.module_state(0)))))
    result = train_alone(small_net(), {}, synthetic_data(), training, hooks=TrainingHooks(
        snapshots=Snapshots(frozenset({30}), lambda k, s: stopped.update(s.module_state(0)), stop=True)))
    assert result.curves.iteration == [25]  # stopped before the second evaluation
    assert full.keys() == stopped.keys() and all(torch.equal(full[n], stopped[n]) for n in full)


def test_only_networks_that_cannot_stack_train_as_modules():
    assert isinstance(make_stack([small_net()], [{}], "fp32"), VmapStack)
    assert isinstance(make_stack([small_net()], [{}], "bf16"), ModuleStack)
    batch_norm = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.BatchNorm1d(10))
    assert isinstance(make_stack([batch_norm], [{}], "fp32"), ModuleStack)
    with pytest.raises(ValueError, match="train stacked"):
        make_stack([batch_norm, batch_norm], [{}, {}], "fp32")
