"""The built-in architectures: shapes, parameter counts, prunable layers, channel groups, seeded init."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from lthbench.protocols import ChannelGroup, Network
from lthbench_plugins.architectures import lthbench_architectures
from lthbench_plugins.architectures.timm_models import TimmParams

ARCHITECTURES = {architecture.name: architecture for architecture in lthbench_architectures()}
OWN = sorted(name for name in ARCHITECTURES if name != "timm:*")
MNIST, CIFAR = (1, 28, 28), (3, 32, 32)
SHAPES = [(MNIST, 10), (CIFAR, 10), (CIFAR, 100)]
#: Small timm models: a CNN and a ViT (the latter needs ``img_size``).
TIMM_MODELS = ["test_resnet", "test_vit"]


def build(name: str, input_shape: tuple[int, ...] = CIFAR, num_classes: int = 10) -> Network:
    """Build an architecture, or a timm model when ``name`` is ``timm:<model>``."""
    if name.startswith("timm:"):
        return ARCHITECTURES["timm:*"].build(input_shape, num_classes, TimmParams(name.split(":", 1)[1]))
    architecture = ARCHITECTURES[name]
    return architecture.build(input_shape, num_classes, architecture.Params())


def architecture_of(name: str):
    """The registered architecture that builds ``name``."""
    return ARCHITECTURES["timm:*" if name.startswith("timm:") else name]


def seeded(seed: int) -> torch.Generator:
    """A CPU generator in a fixed state."""
    return torch.Generator().manual_seed(seed)


def test_the_hook_returns_every_architecture_once_with_a_one_line_description():
    names = [architecture.name for architecture in lthbench_architectures()]
    assert sorted(names) == sorted([
        "lenet_300_100", "lenet5", "conv2", "conv4", "conv6", "vgg11", "vgg13", "vgg16", "vgg19",
        "resnet20", "resnet32", "resnet56", "resnet110", "resnet18", "timm:*",
    ])  # fmt: skip
    for architecture in ARCHITECTURES.values():
        assert architecture.description and "\n" not in architecture.description
        assert dataclasses.is_dataclass(architecture.Params)


# --------------------------------------------------------------------------- shapes and layers


@pytest.mark.parametrize("name", OWN)
@pytest.mark.parametrize(("input_shape", "num_classes"), SHAPES)
def test_forward_gives_one_logit_per_class(name, input_shape, num_classes):
    module = build(name, input_shape, num_classes).module.eval()
    with torch.no_grad():
        assert module(torch.zeros(2, *input_shape)).shape == (2, num_classes)


@pytest.mark.parametrize("name", OWN + [f"timm:{model}" for model in TIMM_MODELS])
def test_prunable_lists_exactly_the_conv_and_linear_weights(name):
    network = build(name)
    # Conv2d weights are the only 4-D parameters of these models, Linear weights the only 2-D ones.
    expected = [name for name, parameter in network.module.named_parameters() if parameter.dim() in (2, 4)]
    assert sorted(network.prunable) == sorted(expected)


@pytest.mark.parametrize(
    ("name", "output"),
    [("lenet_300_100", "fc3.weight"), ("lenet5", "classifier.4.weight"), ("conv6", "classifier.4.weight"),
     ("vgg16", "fc.weight"), ("resnet20", "fc.weight"), ("resnet18", "fc.weight"),
     ("timm:test_resnet", "fc.weight"), ("timm:test_vit", "head.weight")],
)  # fmt: skip
def test_output_is_the_final_classifier(name, output):
    network = build(name)
    assert network.output == output
    parameters = dict(network.module.named_parameters())
    with torch.no_grad():
        parameters[output].zero_()
        parameters[output.removesuffix("weight") + "bias"].zero_()
        logits = network.module.eval()(torch.randn(2, *CIFAR))
    assert torch.equal(logits, torch.zeros(2, 10))


def count(network: Network) -> int:
    """Number of parameters, weights and biases and BatchNorm affine terms."""
    return sum(parameter.numel() for parameter in network.module.parameters())


def test_lenet_300_100_has_the_papers_parameter_count():
    assert count(build("lenet_300_100", MNIST, 10)) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10


def test_lenet5_has_the_classic_parameter_count_on_mnist():
    convs = (1 * 6 * 25 + 6) + (6 * 16 * 25 + 16)
    dense = (16 * 5 * 5 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert count(build("lenet5", MNIST, 10)) == convs + dense == 61_706


def test_conv2_flattens_a_16x16_map_of_64_channels_on_cifar():
    convs = (3 * 64 * 9 + 64) + (64 * 64 * 9 + 64)
    dense = (64 * 16 * 16 * 256 + 256) + (256 * 256 + 256) + (256 * 10 + 10)
    assert count(build("conv2", CIFAR, 10)) == convs + dense


def test_resnet20_has_he_et_als_parameter_count_with_projection_shortcuts():
    def block(c_in: int, c_out: int) -> int:
        shortcut = c_in * c_out + 2 * c_out if c_in != c_out else 0
        return c_in * c_out * 9 + c_out * c_out * 9 + 4 * c_out + shortcut

    stem = 3 * 16 * 9 + 2 * 16
    widths = [(16, 16), (16, 32), (32, 64)]
    stages = sum(block(c_in, c_out) + 2 * block(c_out, c_out) for c_in, c_out in widths)
    total = stem + stages + 64 * 10 + 10
    assert count(build("resnet20", CIFAR, 10)) == total == 272_474


# --------------------------------------------------------------------------- channel groups


@pytest.mark.parametrize("name", OWN)
def test_channel_groups_agree_with_the_parameter_shapes(name):
    network = build(name)
    parameters = dict(network.module.named_parameters())
    for group in network.channel_groups:
        producer = parameters[group.producer]
        assert producer.dim() == 4 and group.producer in network.prunable
        channels = producer.shape[0]
        assert all(parameters[name].shape == (channels,) for name in group.coupled)
        for consumer, per_channel in group.consumers:
            assert parameters[consumer].shape[1] == channels * per_channel


@pytest.mark.parametrize(
    ("name", "input_shape", "groups", "last_consumer"),
    [("lenet_300_100", MNIST, 0, None), ("lenet5", MNIST, 2, ("classifier.0.weight", 25)),
     ("conv4", CIFAR, 4, ("classifier.0.weight", 64)), ("conv4", MNIST, 4, ("classifier.0.weight", 49)),
     ("vgg11", CIFAR, 8, ("fc.weight", 1)), ("resnet20", CIFAR, 9, ("stages.2.2.conv2.weight", 1)),
     ("timm:test_resnet", CIFAR, 0, None)],
)  # fmt: skip
def test_group_count_and_what_the_last_group_feeds(name, input_shape, groups, last_consumer):
    network = build(name, input_shape)
    assert len(network.channel_groups) == groups
    if groups:
        assert network.channel_groups[-1].consumers == (last_consumer,)


def test_resnet_groups_are_the_first_conv_of_each_block_only():
    network = build("resnet20")
    expected = [ChannelGroup(
        f"stages.{stage}.{block}.conv1.weight",
        (f"stages.{stage}.{block}.bn1.weight", f"stages.{stage}.{block}.bn1.bias"),
        ((f"stages.{stage}.{block}.conv2.weight", 1),),
    ) for stage in range(3) for block in range(3)]  # fmt: skip
    assert network.channel_groups == expected


def randomize_batch_norm(module: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial statistics, scale and shift, so a missed one shows."""
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            with torch.no_grad():
                layer.running_mean.normal_(generator=generator)
                layer.running_var.uniform_(0.5, 2.0, generator=generator)
                layer.weight.normal_(generator=generator)
                layer.bias.normal_(generator=generator)


def zero_channel(
    state: dict[str, torch.Tensor], group: ChannelGroup, channel: int, consumers: bool
) -> dict[str, torch.Tensor]:
    """Zero one channel's producer filter and coupled entries (and its consumer columns)."""
    zeroed = {name: tensor.clone() for name, tensor in state.items()}
    for name in (group.producer, *group.coupled):
        zeroed[name][channel] = 0
    if consumers:
        for name, per_channel in group.consumers:
            zeroed[name][:, channel * per_channel : (channel + 1) * per_channel] = 0
    return zeroed


def remove_channel(
    state: dict[str, torch.Tensor], group: ChannelGroup, channel: int
) -> dict[str, torch.Tensor]:
    """The state of the same network with one channel cut out of every tensor that holds it."""
    channels = state[group.producer].shape[0]
    keep = torch.tensor([c for c in range(channels) if c != channel])
    owners = {name.rsplit(".", 1)[0] for name in group.coupled}
    statistics = [f"{owner}.{buffer}" for owner in owners for buffer in ("running_mean", "running_var")]
    removed = dict(state)
    for name in (group.producer, *group.coupled, *(s for s in statistics if s in state)):
        removed[name] = state[name][keep]
    for name, per_channel in group.consumers:
        columns = (keep[:, None] * per_channel + torch.arange(per_channel)).flatten()
        removed[name] = state[name][:, columns]
    return removed


@pytest.mark.parametrize("consumers", [True, False], ids=["with-consumers", "producer-only"])
@pytest.mark.parametrize(
    ("name", "group_index"),
    [("lenet5", 1), ("conv4", 0), ("conv4", 3), ("vgg11", 0), ("vgg11", 7), ("resnet20", 0), ("resnet20", 3)],
)
def test_zeroing_a_channel_equals_removing_it(name, group_index, consumers):
    network = build(name)
    architecture_of(name).initialize(network.module, seeded(0))
    randomize_batch_norm(network.module, seeded(1))
    module = network.module.eval()
    state = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    state = {key: value.detach() for key, value in state.items()}
    group, channel = network.channel_groups[group_index], 1
    images = torch.randn(2, *CIFAR, generator=seeded(2))
    with torch.no_grad():
        zeroed = functional_call(module, zero_channel(state, group, channel, consumers), (images,))
        removed = functional_call(module, remove_channel(state, group, channel), (images,))
        intact = functional_call(module, state, (images,))
    torch.testing.assert_close(zeroed, removed)
    assert not torch.allclose(intact, removed)


# --------------------------------------------------------------------------- initialization


def full_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer."""
    return {name: tensor.clone() for name, tensor in module.state_dict().items()}


#: One architecture per family (deeper members share their family's code).
FAMILY_REPRESENTATIVES = ["lenet_300_100", "lenet5", "conv6", "vgg11", "resnet20", "resnet18"]


@pytest.mark.parametrize("name", FAMILY_REPRESENTATIVES + [f"timm:{model}" for model in TIMM_MODELS])
def test_initialize_is_a_function_of_the_generator_alone(name):
    torch.manual_seed(1)
    network = build(name)
    first = network.module
    torch.manual_seed(2)  # a different construction-time draw, all of it to be overwritten
    second = build(name).module
    with torch.no_grad():
        second(torch.randn(2, *CIFAR))  # move BatchNorm statistics away from their reset values
    architecture = architecture_of(name)
    global_state = torch.get_rng_state()
    architecture.initialize(first, seeded(7))
    architecture.initialize(second, seeded(7))
    assert torch.equal(torch.get_rng_state(), global_state)
    first_state, second_state = full_state(first), full_state(second)
    assert all(torch.equal(first_state[key], second_state[key]) for key in first_state)
    architecture.initialize(second, seeded(8))
    for weight in network.prunable:
        assert not torch.equal(first_state[weight], second.state_dict()[weight])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cpu_generator_gives_a_cuda_module_the_weights_it_gives_a_cpu_module():
    on_cpu, on_cuda = build("resnet20").module, build("resnet20").module.cuda()
    ARCHITECTURES["resnet20"].initialize(on_cpu, seeded(3))
    ARCHITECTURES["resnet20"].initialize(on_cuda, seeded(3))
    for key, value in on_cpu.state_dict().items():
        assert torch.equal(on_cuda.state_dict()[key].cpu(), value)


def test_lenet_weights_are_gaussian_glorot_and_biases_zero():
    network = build("lenet_300_100", MNIST)
    ARCHITECTURES["lenet_300_100"].initialize(network.module, seeded(0))
    module = network.module
    assert module.fc1.weight.mean().abs() < 1e-3
    assert module.fc1.weight.std().item() == pytest.approx(math.sqrt(2 / (784 + 300)), rel=0.02)
    assert torch.equal(module.fc1.bias, torch.zeros(300))


def test_resnet_weights_are_kaiming_normal_and_batch_norm_starts_at_identity():
    network = build("resnet20")
    ARCHITECTURES["resnet20"].initialize(network.module, seeded(0))
    block = network.module.stages[2][1]
    assert block.conv1.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.02)
    assert torch.equal(block.bn1.weight, torch.ones(64)) and torch.equal(block.bn1.bias, torch.zeros(64))
    assert torch.equal(block.bn1.running_var, torch.ones(64))


def test_timm_embeddings_are_drawn_with_std_0_02_and_norm_scales_are_one():
    network = build("timm:test_vit")
    ARCHITECTURES["timm:*"].initialize(network.module, seeded(0))
    module = network.module
    assert module.pos_embed.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.equal(module.norm.weight, torch.ones_like(module.norm.weight))


# --------------------------------------------------------------------------- timm


@pytest.mark.parametrize(
    ("model", "input_shape"), [("test_resnet", MNIST), ("test_resnet", CIFAR), ("test_vit", CIFAR)]
)
def test_timm_models_build_for_the_data_set_shape(model, input_shape):
    network = build(f"timm:{model}", input_shape, 10)
    assert network.channel_groups == []
    with torch.no_grad():
        assert network.module.eval()(torch.zeros(2, *input_shape)).shape == (2, 10)


def test_an_unknown_timm_model_is_a_value_error_pointing_to_list_models():
    message = r"unknown timm model 'resnet1' \(did you mean 'resnet18'\?\); timm.list_models\(\) lists"
    with pytest.raises(ValueError, match=message):
        TimmParams("resnet1")


def test_an_empty_timm_model_name_is_a_value_error():
    with pytest.raises(ValueError, match="timm:resnet18"):
        TimmParams("")
