"""The torchvision model zoo, built natively on the engine's ops.

Each function returns a compiled :class:`aneforge.Net` taking ``input``
float16 ``[batch, 3, 224, 224]`` (normalised as torchvision expects) and
returning ``logits`` ``[batch, 1000]``::

    net = af.models.resnet18("resnet18.safetensors")   # torchvision state-dict names
    logits = net(images)

``weights`` is a safetensors file holding torchvision's state-dict names
(BatchNorm is folded into the convolutions at load), or ``None`` for seeded
random weights (``seed``). ``compile=False`` returns the lazy logits
:class:`aneforge.Tensor` instead, to extend the graph before compiling; other
keyword arguments go to :func:`aneforge.compile`.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from ._aneforge import _vision_model, compile as _compile

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["resnet18", "resnet34", "resnet50", "vit_b_16"]


def _make(arch: str, weights: Optional[PathLike], batch: int, seed: int, compile: bool, kwargs: Any):
    y = _vision_model(arch, None if weights is None else os.fspath(weights), batch, seed)
    return _compile(y, **kwargs) if compile else y


def resnet18(weights: Optional[PathLike] = None, *, batch: int = 1, seed: int = 0, compile: bool = True, **kwargs: Any):
    """torchvision ResNet-18."""
    return _make("resnet18", weights, batch, seed, compile, kwargs)


def resnet34(weights: Optional[PathLike] = None, *, batch: int = 1, seed: int = 0, compile: bool = True, **kwargs: Any):
    """torchvision ResNet-34."""
    return _make("resnet34", weights, batch, seed, compile, kwargs)


def resnet50(weights: Optional[PathLike] = None, *, batch: int = 1, seed: int = 0, compile: bool = True, **kwargs: Any):
    """torchvision ResNet-50 (v1.5: stride on the 3x3 convolution)."""
    return _make("resnet50", weights, batch, seed, compile, kwargs)


def vit_b_16(weights: Optional[PathLike] = None, *, batch: int = 1, seed: int = 0, compile: bool = True, **kwargs: Any):
    """torchvision ViT-B/16 (224x224, 16x16 patches)."""
    return _make("vit_b_16", weights, batch, seed, compile, kwargs)
