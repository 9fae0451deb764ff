"""The built-in pruners on small networks with hand-set weights and hand-computed masks."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from helpers.synthetic import apply_masks
from lthbench.masks import full_masks
from lthbench.protocols import ChannelGroup, Network, PruningContext
from lthbench_plugins.pruners import (
    GlobalMagnitude,
    GlobalParams,
    L1Filter,
    LayerwiseMagnitude,
    LayerwiseParams,
    RandomParams,
    RandomPruner,
    lthbench_pruners,
)

PRUNERS = {pruner.name: pruner for pruner in lthbench_pruners()}


def make_context(network: Network, rate: float, output_rate: float | None = None,
                 masks: dict[str, torch.Tensor] | None = None, seed: int = 0) -> PruningContext:
    """A context over the network's current weights; ``delegate`` runs a built-in pruner with default params.

    ``output_rate`` defaults to half of ``rate``, as the engine's does when the schedule names none.
    """
    context = PruningContext(
        network=network,
        weights={name: p.detach() for name, p in network.module.named_parameters()},
        masks=full_masks(network) if masks is None else masks,
        rate=rate,
        output_rate=rate / 2 if output_rate is None else output_rate,
        generator=torch.Generator().manual_seed(seed),
        delegate=lambda name: PRUNERS[name].prune(context, PRUNERS[name].Params()),
    )
    return context


def linear(weight: list[list[float]]) -> nn.Linear:
    """A linear layer with the given weight matrix."""
    w = torch.tensor(weight)
    layer = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        layer.weight.copy_(w)
    return layer


def mlp(fc1: list[list[float]], fc2: list[list[float]], out: list[list[float]]) -> Network:
    """fc1 -> fc2 -> out, all prunable; ``out`` is the output layer."""
    module = nn.Sequential(OrderedDict(fc1=linear(fc1), fc2=linear(fc2), out=linear(out)))
    return Network(module, prunable=["fc1.weight", "fc2.weight", "out.weight"], output="out.weight")


def as_lists(masks: dict[str, torch.Tensor], names: list[str]) -> dict[str, list]:
    return {name: masks[name].tolist() for name in names}


LAYERS = ["fc1.weight", "fc2.weight", "out.weight"]


# --------------------------------------------------------------------------- layerwise magnitude


def paper_mlp() -> Network:
    return mlp(fc1=[[0.1, -0.4], [0.3, -0.2]], fc2=[[-0.5, 0.6], [0.05, 0.7]], out=[[0.9, -0.8], [0.7, 0.95]])


def test_layerwise_prunes_each_layer_at_its_rate_and_the_output_layer_at_output_rate():
    masks = LayerwiseMagnitude().prune(make_context(paper_mlp(), rate=0.5, output_rate=0.25), LayerwiseParams())
    assert as_lists(masks, LAYERS) == {
        "fc1.weight": [[False, True], [True, False]],  # 0.1 and 0.2 go
        "fc2.weight": [[False, True], [False, True]],  # 0.05 and 0.5 go
        "out.weight": [[True, True], [False, True]],  # one of four: 0.7
    }


def test_layerwise_prunes_the_output_layer_at_the_contexts_output_rate_not_at_the_rate():
    network = paper_mlp()
    masks = LayerwiseMagnitude().prune(make_context(network, rate=0.5, output_rate=0.25), LayerwiseParams())
    assert masks["out.weight"].tolist() == [[True, True], [False, True]]  # 0.25: one of four, not two
    masks = LayerwiseMagnitude().prune(make_context(network, rate=0.5, output_rate=0.75), LayerwiseParams())
    assert masks["out.weight"].tolist() == [[False, False], [False, True]]  # only 0.95 survives


def test_layerwise_layer_rates_override_the_round_rate():
    params = LayerwiseParams(layer_rates=(("fc2.weight", 0.25), ("out.weight", 0.0)))
    masks = LayerwiseMagnitude().prune(make_context(paper_mlp(), rate=0.5, output_rate=0.25), params)
    assert as_lists(masks, LAYERS) == {
        "fc1.weight": [[False, True], [True, False]],
        "fc2.weight": [[True, True], [False, True]],
        "out.weight": [[True, True], [True, True]],
    }


def test_layer_rates_compound_per_level_in_one_shot_mode():
    """One-shot level 2 at a per-round override of 0.5 keeps (1 - 0.5)^2 = 1/4 of the layer."""
    network = Network(nn.Sequential(OrderedDict(fc=nn.Linear(4, 4), out=nn.Linear(4, 2))),
                      prunable=["fc.weight", "out.weight"], output="out.weight")
    with torch.no_grad():
        network.module.fc.weight.copy_(torch.arange(1.0, 17.0).view(4, 4))
    context = make_context(network, rate=0.36, output_rate=0.0)
    context.level, context.one_shot = 2, True
    assert context.level_rate(0.5) == 0.75
    masks = LayerwiseMagnitude().prune(context, LayerwiseParams(layer_rates=(("fc.weight", 0.5),)))
    assert masks["fc.weight"].view(-1).tolist() == [False] * 12 + [True] * 4
    context.one_shot = False
    assert context.level_rate(0.5) == 0.5


def test_layerwise_rejects_unknown_layers_naming_the_valid_ones():
    params = LayerwiseParams(layer_rates=(("fc3.weight", 0.1),))
    with pytest.raises(ValueError, match=r"'fc3\.weight'.*fc1\.weight, fc2\.weight, out\.weight"):
        LayerwiseMagnitude().prune(make_context(paper_mlp(), rate=0.5), params)


def test_layerwise_params_reject_bad_rates_and_repeated_layers():
    with pytest.raises(ValueError, match="fc1"):
        LayerwiseParams(layer_rates=(("fc1.weight", 1.5),))
    with pytest.raises(ValueError, match="twice"):
        LayerwiseParams(layer_rates=(("fc1.weight", 0.1), ("fc1.weight", 0.2)))


def test_equal_magnitudes_are_pruned_lowest_index_first():
    network = mlp(fc1=[[1.0, -1.0, 1.0, -1.0]], fc2=[[2.0], [2.0]], out=[[-3.0, 3.0]])
    masks = LayerwiseMagnitude().prune(make_context(network, rate=0.5, output_rate=0.5), LayerwiseParams())
    assert as_lists(masks, LAYERS) == {
        "fc1.weight": [[False, False, True, True]],
        "fc2.weight": [[False], [True]],
        "out.weight": [[False, True]],
    }


def test_already_pruned_weights_stay_pruned_and_do_not_count_as_remaining():
    network = mlp(fc1=[[0.0, 0.5, 0.0, 0.2], [0.0, 0.9, 0.1, 0.0]], fc2=[[1.0]], out=[[1.0]])
    old = full_masks(network)
    old["fc1.weight"] = torch.tensor([[False, True, False, True], [False, True, True, False]])
    masks = LayerwiseMagnitude().prune(make_context(network, rate=0.5, masks=old), LayerwiseParams())
    # 4 of 8 remain; round two of a 50% schedule keeps 8 * 0.25 = 2: 0.1 and 0.2 go, the zeros are not chosen again.
    assert masks["fc1.weight"].tolist() == [[False, True, False, False], [False, True, False, False]]


# --------------------------------------------------------------------------- global magnitude


def scaled_mlp() -> Network:
    """fc2 is about 100 times larger than fc1."""
    return mlp(fc1=[[0.1, -0.3], [0.2, 40.0]], fc2=[[15.0, -25.0], [35.0, 45.0]], out=[[0.05, 20.0], [-30.0, 0.5]])


def test_global_shares_one_threshold_so_the_small_scale_layer_loses_more():
    masks = GlobalMagnitude().prune(make_context(scaled_mlp(), rate=0.5), GlobalParams())
    # Six smallest of twelve: 0.05, 0.1, 0.2, 0.3, 0.5, 15.
    assert as_lists(masks, LAYERS) == {
        "fc1.weight": [[False, False], [False, True]],
        "fc2.weight": [[False, True], [True, True]],
        "out.weight": [[False, True], [True, False]],
    }


def test_global_exclude_leaves_a_layer_out_of_the_ranking():
    masks = GlobalMagnitude().prune(make_context(scaled_mlp(), rate=0.5), GlobalParams(exclude=("out.weight",)))
    # Four smallest of fc1 and fc2: 0.1, 0.2, 0.3, 15.
    assert as_lists(masks, LAYERS) == {
        "fc1.weight": [[False, False], [False, True]],
        "fc2.weight": [[False, True], [True, True]],
        "out.weight": [[True, True], [True, True]],
    }


def test_global_rejects_unknown_or_all_excluded_layers():
    with pytest.raises(ValueError, match=r"'fc9\.weight'.*fc1\.weight"):
        GlobalMagnitude().prune(make_context(scaled_mlp(), rate=0.5), GlobalParams(exclude=("fc9.weight",)))
    with pytest.raises(ValueError, match="no prunable layer"):
        GlobalMagnitude().prune(make_context(scaled_mlp(), rate=0.5), GlobalParams(exclude=tuple(LAYERS)))


def test_global_ties_across_layers_go_to_the_earlier_layer_first():
    network = mlp(fc1=[[1.0, 5.0]], fc2=[[1.0, 6.0]], out=[[1.0, 7.0]])
    masks = GlobalMagnitude().prune(make_context(network, rate=1 / 3), GlobalParams())
    assert as_lists(masks, LAYERS) == {
        "fc1.weight": [[False, True]],
        "fc2.weight": [[False, True]],
        "out.weight": [[True, True]],
    }


def test_global_matches_torch_global_unstructured_over_two_rounds():
    generator = torch.Generator().manual_seed(0)
    # Distinct magnitudes (a permutation of 1..n), one layer scaled by 100.
    values = (torch.randperm(6 * 5 + 5 * 4 + 4 * 3, generator=generator).float() + 1).split([30, 20, 12])
    network = mlp(fc1=(values[0] / 100).view(6, 5).tolist(), fc2=(values[1] * 100).view(5, 4).tolist(),
                  out=values[2].view(4, 3).tolist())
    reference = copy.deepcopy(network.module)
    targets = [(reference.fc1, "weight"), (reference.fc2, "weight"), (reference.out, "weight")]
    masks = full_masks(network)
    for round_, amount in enumerate([0.2, None]):
        context = make_context(network, rate=0.2, masks=masks)
        masks = GlobalMagnitude().prune(context, GlobalParams())
        removed = sum(int(context.masks[n].sum()) - int(masks[n].sum()) for n in LAYERS)
        # Round one: torch's own fraction (round(0.2 * 62) = 12); later: the count our schedule removes,
        # which torch, like us, takes from the still unpruned weights only.
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured,
                                  amount=removed if amount is None else amount)
        for name, (layer, _) in zip(LAYERS, targets):
            assert masks[name].tolist() == layer.weight_mask.bool().tolist(), (round_, name)
        apply_masks(network.module, masks)


# --------------------------------------------------------------------------- iterative pruning


@pytest.mark.parametrize("pruner,params", [(LayerwiseMagnitude(), LayerwiseParams()),
                                           (GlobalMagnitude(), GlobalParams())])
def test_iterative_pruning_keeps_the_geometric_schedule_per_layer(pruner, params):
    torch.manual_seed(0)
    # A 13-weight layer is where rounding each round alone would drift: 13, 10, 8, 6 instead of 13, 10, 8, 7.
    module = nn.ModuleDict({"big": nn.Linear(100, 300), "small": nn.Linear(1, 13), "out": nn.Linear(300, 10)})
    network = Network(module, prunable=["big.weight", "small.weight", "out.weight"], output="out.weight")
    masks = full_masks(network)
    for k in range(1, 6):
        masks = pruner.prune(make_context(network, rate=0.2, masks=masks), params)
        apply_masks(module, masks)
        if isinstance(pruner, LayerwiseMagnitude):
            for name, size, rate in (("big.weight", 30000, 0.2), ("small.weight", 13, 0.2), ("out.weight", 3000, 0.1)):
                assert int(masks[name].sum()) == round(size * (1 - rate) ** k), (name, k)
        else:
            assert sum(int(m.sum()) for m in masks.values()) == round(33013 * 0.8**k)


# --------------------------------------------------------------------------- L1 filter pruning


def conv_bn_conv() -> tuple[Network, nn.Sequential]:
    """conv(2->4, 2x2) + BN + ReLU + conv(4->3, 1x1) with filter L1 norms 8, 3, 12, 1.6."""
    module = nn.Sequential(OrderedDict(conv1=nn.Conv2d(2, 4, 2), bn1=nn.BatchNorm2d(4), relu=nn.ReLU(),
                                       conv2=nn.Conv2d(4, 3, 1)))
    per_channel = torch.tensor([[1.0, -1.0], [0.5, 0.25], [-2.0, 1.0], [0.1, -0.3]])  # each fills a 2x2 kernel
    with torch.no_grad():
        module.conv1.weight.copy_(per_channel[:, :, None, None].expand(4, 2, 2, 2))
    group = ChannelGroup("conv1.weight", coupled=("conv1.bias", "bn1.weight", "bn1.bias"),
                         consumers=(("conv2.weight", 1),))
    network = Network(module, prunable=["conv1.weight", "conv2.weight"], output="conv2.weight",
                      channel_groups=[group])
    return network, module


def test_l1_filter_prunes_the_smallest_filters_with_their_bn_channels_and_consumer_inputs():
    network, _ = conv_bn_conv()
    masks = L1Filter().prune(make_context(network, rate=0.5), None)
    kept = [True, False, True, False]  # filters 3 (L1 1.6) and 1 (L1 3) go
    assert masks["conv1.weight"].tolist() == [[[[k] * 2] * 2] * 2 for k in kept]
    for name in ("conv1.bias", "bn1.weight", "bn1.bias"):
        assert masks[name].tolist() == kept
    assert masks["conv2.weight"][:, :, 0, 0].tolist() == [kept] * 3


def test_l1_filter_counts_only_the_remaining_filters():
    network, module = conv_bn_conv()
    first = L1Filter().prune(make_context(network, rate=0.5), None)
    apply_masks(module, first)
    second = L1Filter().prune(make_context(network, rate=0.5, masks=first), None)
    # 2 of 4 filters left; round two of a 50% schedule keeps 1: filter 0 (L1 8) goes, filter 2 (L1 12) stays.
    assert second["bn1.weight"].tolist() == [False, False, True, False]


def shrink_conv(conv: nn.Conv2d, outputs: torch.Tensor, inputs: torch.Tensor) -> nn.Conv2d:
    """A copy of ``conv`` with only the given output and input channels."""
    small = nn.Conv2d(len(inputs), len(outputs), conv.kernel_size)
    with torch.no_grad():
        small.weight.copy_(conv.weight[outputs][:, inputs])
        small.bias.copy_(conv.bias[outputs])
    return small


def test_l1_filter_masked_network_equals_a_physically_shrunk_copy():
    network, module = conv_bn_conv()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean"):
            getattr(module.bn1, name).copy_(torch.randn(4, generator=generator))
        module.bn1.running_var.copy_(torch.rand(4, generator=generator) + 0.5)
    masks = L1Filter().prune(make_context(network, rate=0.5), None)
    kept = torch.tensor([0, 2])
    bn = nn.BatchNorm2d(2)
    bn.load_state_dict({k: v[kept] if v.dim() else v for k, v in module.bn1.state_dict().items()})
    shrunk = nn.Sequential(shrink_conv(module.conv1, kept, torch.arange(2)), bn, nn.ReLU(),
                           shrink_conv(module.conv2, torch.arange(3), kept)).eval()
    apply_masks(module, masks)
    x = torch.randn(2, 2, 5, 5, generator=generator)
    torch.testing.assert_close(module.eval()(x), shrunk(x))


def test_l1_filter_before_a_flattened_linear_masks_per_channel_blocks():
    module = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 3, 1), relu=nn.ReLU(), flat=nn.Flatten(),
                                       fc=nn.Linear(3 * 2 * 2, 2)))
    with torch.no_grad():
        module.conv.weight.copy_(torch.tensor([0.5, -2.0, 1.0]).view(3, 1, 1, 1))
    group = ChannelGroup("conv.weight", coupled=("conv.bias",), consumers=(("fc.weight", 4),))
    network = Network(module, prunable=["conv.weight", "fc.weight"], output="fc.weight", channel_groups=[group])
    masks = L1Filter().prune(make_context(network, rate=1 / 3), None)
    assert masks["conv.bias"].tolist() == [False, True, True]
    assert masks["fc.weight"].tolist() == [[False] * 4 + [True] * 8] * 2
    kept = torch.tensor([1, 2])
    fc = nn.Linear(8, 2)
    with torch.no_grad():
        fc.weight.copy_(module.fc.weight[:, 4:])
        fc.bias.copy_(module.fc.bias)
    shrunk = nn.Sequential(shrink_conv(module.conv, kept, torch.arange(1)), nn.ReLU(), nn.Flatten(), fc)
    apply_masks(module, masks)
    x = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(module(x), shrunk(x))


def test_l1_filter_needs_channel_groups():
    with pytest.raises(ValueError, match="l1_filter needs an architecture with convolution filter groups; "
                                         "Sequential declares none"):
        L1Filter().prune(make_context(paper_mlp(), rate=0.5), None)


# --------------------------------------------------------------------------- random control


def random_mlp() -> Network:
    torch.manual_seed(3)
    module = nn.Sequential(OrderedDict(fc1=nn.Linear(10, 20), fc2=nn.Linear(20, 20), out=nn.Linear(20, 5)))
    return Network(module, prunable=LAYERS, output="out.weight")


def test_random_removes_as_many_weights_per_layer_as_the_like_pruner():
    network = random_mlp()
    old = full_masks(network)
    old["fc2.weight"][:5] = False
    for like in ("layerwise_magnitude", "global_magnitude"):
        context = make_context(network, rate=0.2, masks=old)
        reference = context.delegate(like)
        masks = RandomPruner().prune(context, RandomParams(like=like))
        for name in LAYERS:
            assert int(masks[name].sum()) == int(reference[name].sum()), (like, name)
            assert not bool((masks[name] & ~old[name]).any())
        assert not torch.equal(masks["fc1.weight"], reference["fc1.weight"])


def test_random_is_reproducible_from_the_generator_seed():
    network = random_mlp()
    draw = lambda seed: RandomPruner().prune(make_context(network, rate=0.5, seed=seed), RandomParams())
    first, again, other = draw(0), draw(0), draw(1)
    assert all(torch.equal(first[name], again[name]) for name in LAYERS)
    assert not torch.equal(first["fc1.weight"], other["fc1.weight"])


def test_random_refuses_to_mimic_a_structured_pruner():
    network, _ = conv_bn_conv()
    with pytest.raises(ValueError, match="unstructured pruners only; 'l1_filter'"):
        RandomPruner().prune(make_context(network, rate=0.5), RandomParams(like="l1_filter"))
    with pytest.raises(ValueError, match="like"):
        RandomParams(like="random")


def test_the_plugin_registers_the_four_pruners():
    assert sorted(PRUNERS) == ["global_magnitude", "l1_filter", "layerwise_magnitude", "random"]


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [("random", RandomParams(), "layerwise_magnitude"), ("random", RandomParams(like="global_magnitude"),
                                                         "global_magnitude"),
     ("layerwise_magnitude", LayerwiseParams(), None), ("global_magnitude", GlobalParams(), None),
     ("l1_filter", None, None)],
)
def test_the_random_control_names_the_pruner_it_mimics_and_no_other_pruner_is_a_control(name, params, expected):
    assert PRUNERS[name].mimics(params) == expected
