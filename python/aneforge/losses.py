"""Losses as graphs: each returns a scalar ``af.Tensor`` built from native
ops, so it differentiates and compiles like the model.

Labels are graph inputs too (``af.input``): class ids as an fp16 vector
(exact up to 2048 classes) or one-hot rows.
"""

from __future__ import annotations

import numpy as np

from . import _aneforge as _af
from .exceptions import ShapeError


def _tensor(x, like):
    if isinstance(x, _af.Tensor):
        return x
    return _af.constant(np.asarray(x, dtype=np.float32), "fp16")


def mse(pred, target):
    """Mean squared error over every element."""
    target = _tensor(target, pred)
    if tuple(pred.shape) != tuple(target.shape):
        raise ShapeError(f"mse: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ; reshape one of them")
    d = pred - target
    return _af.mean(d * d)


def _one_hot(labels, logits, axis):
    shape = tuple(logits.shape)
    if tuple(labels.shape) == shape:
        return labels.cast("fp16") if labels.dtype != "fp16" else labels
    c = shape[axis]
    rest = tuple(d for k, d in enumerate(shape) if k != axis % len(shape))
    if tuple(labels.shape) != rest:
        raise ShapeError(
            f"softmax_cross_entropy: labels {tuple(labels.shape)} must be class ids of shape {rest} "
            f"or one-hot rows of shape {shape} for logits {shape}"
        )
    if axis % len(shape) != len(shape) - 1:
        raise ShapeError("softmax_cross_entropy: class ids need the classes on the last axis of the logits")
    ids = labels.cast("fp16") if labels.dtype != "fp16" else labels
    ids = ids.reshape(rest + (1,))
    classes = _af.constant(np.arange(c, dtype=np.float32).reshape((1,) * len(rest) + (c,)), "fp16")
    return _af.equal(ids, classes).cast("fp16")


def softmax_cross_entropy(logits, labels, axis=-1):
    """Mean over rows of ``-log softmax(logits)[label]``. ``labels``: class
    ids (one fewer axis than the logits) or one-hot / soft targets."""
    labels = _tensor(labels, logits)
    onehot = _one_hot(labels, logits, axis)
    logp = _af.log_softmax(logits, axis)
    return -_af.mean(_af.sum(logp * onehot, axis))


def binary_cross_entropy(pred, target, from_logits=True):
    """Mean binary cross entropy. With ``from_logits`` (default) ``pred`` is a
    logit and the stable form ``softplus(z) - z*y`` is used; otherwise
    ``pred`` is a probability, clipped to [1e-4, 1 - 1e-4] (fp16 range)."""
    target = _tensor(target, pred)
    if tuple(pred.shape) != tuple(target.shape):
        raise ShapeError(f"binary_cross_entropy: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if from_logits:
        return _af.mean(_af.softplus(pred) - pred * target)
    p = _af.clip(pred, 1e-4, 1.0 - 1e-4)
    return -_af.mean(target * _af.log(p) + (1.0 - target) * _af.log(1.0 - p))


__all__ = ["mse", "softmax_cross_entropy", "binary_cross_entropy"]
