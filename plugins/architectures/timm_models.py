"""Any timm model as an architecture: ``architecture = "timm:<model>"``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from lthbench.errors import suggest
from lthbench.protocols import Network

from .initialization import SeededInit, glorot_normal, kaiming_normal
from .network import prunable_weights


@dataclass(frozen=True)
class TimmParams:
    """Which timm model to build; filled from the part of the name after ``timm:``."""

    model: str = ""

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError('name a timm model after the colon, e.g. architecture = "timm:resnet18"')
        import timm  # imported when a timm model is named: importing it costs seconds at every start

        if not timm.is_model(self.model):
            raise ValueError(
                f"unknown timm model {self.model!r}{suggest(self.model, timm.list_models())}; "
                "timm.list_models() lists the valid names"
            )


def classifier_weight(module: nn.Module, prunable: list[str], model: str) -> str:
    """Name of the weight of the layer that timm's ``get_classifier()`` returns."""
    classifier = module.get_classifier()
    for name, layer in module.named_modules():
        if layer is classifier and f"{name}.weight" in prunable:
            return f"{name}.weight"
    raise ValueError(f"timm model {model!r} has no single Linear or Conv2d classifier")


class TimmModel(SeededInit):
    """Family entry for timm models, built without pretrained weights.

    timm's own initialisation draws from the global random state, so it is
    replaced: Kaiming-normal convolutions, Glorot-normal linear layers, zero
    biases, normalization scales one, and embeddings and tokens from a normal
    with standard deviation 0.02 (see ``initialize_parameters``).
    Model-specific choices of timm (zero-initialised last BatchNorm of a
    residual block, small layer scales) are not reproduced.
    """

    name = "timm:*"
    description = "Any timm model by name, e.g. timm:resnet18 (random init; structured pruning not supported)"
    Params = TimmParams
    conv_init = kaiming_normal
    linear_init = glorot_normal

    def build(self, input_shape: tuple[int, ...], num_classes: int, params: TimmParams) -> Network:
        """Create ``params.model`` for ``input_shape``; models with a fixed input size get ``img_size``."""
        import timm

        size: dict[str, Any] = {}
        if timm.get_pretrained_cfg_value(params.model, "fixed_input_size"):
            size["img_size"] = tuple(input_shape[1:])
        module = timm.create_model(
            params.model, pretrained=False, num_classes=num_classes, in_chans=input_shape[0], **size
        )
        prunable = prunable_weights(module)
        return Network(module, prunable, output=classifier_weight(module, prunable, params.model))
