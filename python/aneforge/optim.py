"""Optimizers whose update is a graph.

Each optimizer builds, for every parameter ``p`` with gradient ``g``, the
tensors of its new value and of its new moments, so the Trainer compiles
forward, backward and update into one program. Moments are resident fp32
state (squared fp16 gradients underflow); the update math runs in fp32 and
the new weight is stored back as fp16. Per-step numbers (the scheduled
learning rate, Adam's bias correction, the loss scale) are fed as one small
input vector, so a schedule never recompiles.

The same classes also update f32 master weights on the host
(``Trainer(device_optimizer=False)``) with the identical formulas in numpy.
"""

from __future__ import annotations

import math

import numpy as np

from . import _aneforge as _af
from .exceptions import AneForgeError

# Layout of the per-step scalar input vector.
LR, DECAY, INV_SCALE, SCALE = 0, 1, 2, 3
N_SCALARS = 4


# --- learning-rate schedules (host side: they only produce the fed lr) ---


class Schedule:
    """A learning rate as a function of the step (0-based)."""

    def __call__(self, step: int) -> float:  # pragma: no cover - interface
        raise NotImplementedError


class Constant(Schedule):
    def __init__(self, lr: float):
        self.lr = float(lr)

    def __call__(self, step):
        return self.lr

    def __repr__(self):
        return f"Constant({self.lr})"


class StepLR(Schedule):
    """``lr * gamma ** (step // step_size)``."""

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1):
        if step_size <= 0:
            raise ValueError("StepLR: step_size must be >= 1")
        self.lr, self.step_size, self.gamma = float(lr), int(step_size), float(gamma)

    def __call__(self, step):
        return self.lr * self.gamma ** (step // self.step_size)


class Cosine(Schedule):
    """Cosine decay from ``lr`` to ``min_lr`` over ``total_steps``."""

    def __init__(self, lr: float, total_steps: int, min_lr: float = 0.0):
        if total_steps <= 0:
            raise ValueError("Cosine: total_steps must be >= 1")
        self.lr, self.total, self.min_lr = float(lr), int(total_steps), float(min_lr)

    def __call__(self, step):
        t = min(step, self.total) / self.total
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * t))


class Warmup(Schedule):
    """Linear warmup over ``steps``, then ``after`` (a schedule or a number)."""

    def __init__(self, after, steps: int):
        self.after = after if callable(after) else Constant(after)
        self.steps = int(steps)

    def __call__(self, step):
        base = self.after(max(0, step - self.steps)) if self.steps else self.after(step)
        if step < self.steps:
            return base * (step + 1) / self.steps
        return base


def step_lr(lr, step_size, gamma=0.1):
    return StepLR(lr, step_size, gamma)


def cosine(lr, total_steps, min_lr=0.0):
    return Cosine(lr, total_steps, min_lr)


def warmup(after, steps):
    return Warmup(after, steps)


# --- optimizers ---


class Optimizer:
    """Base class. ``lr`` is a number or a schedule (``step -> lr``)."""

    moments: tuple = ()

    def __init__(self, lr, weight_decay=0.0, params=None):
        self.schedule = lr if callable(lr) else Constant(lr)
        self.weight_decay = float(weight_decay)
        if params is not None:
            params = list(params)
            if not params:
                raise ValueError(f"{type(self).__name__}: given no parameters; pass the af.parameter tensors to train")
        self.params = params
        self.step_count = 0  # successful (not skipped) updates

    def lr(self, step=None) -> float:
        return float(self.schedule(self.step_count if step is None else step))

    # Device side -------------------------------------------------------
    def scalars(self, loss_scale: float) -> np.ndarray:
        """The fed per-step vector: [lr term, decay term, 1/scale, scale]."""
        s = np.zeros(N_SCALARS, np.float32)
        s[LR] = self._lr_term()
        s[DECAY] = self._decay_term()
        s[INV_SCALE] = 1.0 / loss_scale
        s[SCALE] = loss_scale
        return s

    def _lr_term(self):
        return self.lr()

    def _decay_term(self):
        return 0.0

    def init_state(self, p, k):
        """Resident moment tensors for parameter ``p`` (index ``k``)."""
        shape = tuple(p.shape)
        name = p.name or f"param{k}"
        return [_af.state(np.zeros(shape, np.float32), "fp32", f"{name}.{m}") for m in self.moments]

    def update(self, p, g, state, s):
        """New (param, *moments) for ``p`` given its fp32 gradient ``g``,
        moment tensors ``state`` and the fed scalars ``s`` (fp32 tensors)."""
        raise NotImplementedError

    # Host side ---------------------------------------------------------
    def host_init(self, master):
        return [np.zeros_like(master) for _ in self.moments]

    def host_update(self, master, g, state):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(lr={self.schedule!r}, weight_decay={self.weight_decay})"


class SGD(Optimizer):
    """SGD with optional momentum (PyTorch's form, no dampening), Nesterov
    momentum and L2 weight decay."""

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, params=None):
        super().__init__(lr, weight_decay, params)
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov needs momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.moments = ("momentum",) if momentum > 0 else ()

    def update(self, p, g, state, s):
        pf = p.cast("fp32")
        if self.weight_decay:
            g = g + pf * self.weight_decay
        if self.moments:
            buf = state[0] * self.momentum + g
            d = g + buf * self.momentum if self.nesterov else buf
            return [pf - s[LR] * d, buf]
        return [pf - s[LR] * g]

    def host_update(self, master, g, state):
        lr = self.lr()
        if self.weight_decay:
            g = g + self.weight_decay * master
        if self.moments:
            state[0] *= self.momentum
            state[0] += g
            d = g + self.momentum * state[0] if self.nesterov else state[0]
        else:
            d = g
        master -= lr * d


class Adam(Optimizer):
    """Adam. The bias correction is folded into the fed learning rate
    (``lr * sqrt(1 - b2^t) / (1 - b1^t)``), as in the original paper's
    efficient form. ``weight_decay`` is the L2 (coupled) kind; see AdamW."""

    moments = ("m", "v")
    decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, params=None):
        super().__init__(lr, weight_decay, params)
        self.b1, self.b2 = (float(b) for b in betas)
        self.eps = float(eps)

    def _lr_term(self):
        t = self.step_count + 1
        return self.lr() * math.sqrt(1 - self.b2**t) / (1 - self.b1**t)

    def _decay_term(self):
        return self.lr() * self.weight_decay if self.decoupled else 0.0

    def update(self, p, g, state, s):
        pf = p.cast("fp32")
        if self.weight_decay and not self.decoupled:
            g = g + pf * self.weight_decay
        m = state[0] * self.b1 + g * (1 - self.b1)
        v = state[1] * self.b2 + (g * g) * (1 - self.b2)
        step = s[LR] * m / (_af.sqrt(v) + self.eps)
        if self.decoupled and self.weight_decay:
            pf = pf - s[DECAY] * pf
        return [pf - step, m, v]

    def host_update(self, master, g, state):
        if self.weight_decay and not self.decoupled:
            g = g + self.weight_decay * master
        m, v = state
        m *= self.b1
        m += (1 - self.b1) * g
        v *= self.b2
        v += (1 - self.b2) * g * g
        if self.decoupled and self.weight_decay:
            master -= self.lr() * self.weight_decay * master
        master -= self._lr_term() * m / (np.sqrt(v) + self.eps)


class AdamW(Adam):
    """Adam with decoupled weight decay (``p -= lr * wd * p``)."""

    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, params=None):
        super().__init__(lr, betas, eps, weight_decay, params)


def _check(opt):
    if not isinstance(opt, Optimizer):
        raise AneForgeError(f"optimizer must be an af.optim optimizer (SGD, Adam, AdamW), got {type(opt).__name__}")


__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "StepLR", "Cosine", "Warmup", "Constant", "step_lr", "cosine", "warmup"]
