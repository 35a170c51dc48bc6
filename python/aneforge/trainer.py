"""``af.Trainer``: forward, backward and the optimizer update compiled into
one resident program (parameters and moments stay in its buffers between
steps; the host feeds the batch and four scalars), or, with
``device_optimizer=False``, forward + backward on the engine and the update
on f32 master weights on the host.
"""

from __future__ import annotations

import json
import struct
import time

import numpy as np

from . import _aneforge as _af
from . import optim as _optim
from .exceptions import AneForgeError, FileFormatError, ShapeError

_FP16_MAX_SCALE = 2.0**15


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


class _hybridmethod:
    """``Trainer.load(path)`` on the class returns a checkpoint; on an
    instance it restores into that trainer."""

    def __init__(self, f):
        self.f = f

    def __get__(self, obj, cls):
        def bound(*a, **k):
            return self.f(cls, obj, *a, **k)

        bound.__doc__ = self.f.__doc__
        return bound


class Checkpoint(dict):
    """Arrays by name plus ``metadata`` (a dict), as read from safetensors."""

    metadata: dict


def save_safetensors(path, tensors: dict, metadata: dict | None = None) -> None:
    """Writes float32 arrays in the safetensors format (no pickle)."""
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_safetensors(path) -> Checkpoint:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise FileFormatError(f"cannot read checkpoint {path!s}: {e}") from None
    try:
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + n])
    except Exception:
        raise FileFormatError(f"{path!s} is not a safetensors file") from None
    out = Checkpoint()
    out.metadata = header.pop("__metadata__", {})
    base = 8 + n
    dtypes = {"F32": "<f4", "F16": "<f2", "F64": "<f8"}
    for name, info in header.items():
        if info.get("dtype") not in dtypes:
            raise FileFormatError(f"{path!s}: tensor {name!r} has dtype {info.get('dtype')}; expected F32/F16/F64")
        a, b = info["data_offsets"]
        arr = np.frombuffer(raw[base + a : base + b], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
        out[name] = arr.astype(np.float32)
    return out


class Trainer:
    """Trains ``params`` to minimise the scalar ``loss``.

    ``inputs``: the ``af.input`` tensors a batch fills, in the order
    ``step(*batch)`` and ``fit(x, y)`` pass them. ``predict``: an optional
    tensor (e.g. logits) used by ``evaluate`` for the metric.
    ``loss_scale``: "dynamic" (default in fp16: start at 2**10, halve and
    skip the step on inf/NaN gradients, double after 200 good steps), a
    number (static; non-finite steps are still skipped), or None.
    """

    def __init__(
        self,
        loss,
        params,
        optimizer,
        inputs,
        device_optimizer=True,
        resident_state=True,
        predict=None,
        metric=None,
        loss_scale="dynamic",
        precision="fp16",
        growth_interval=200,
    ):
        if not isinstance(loss, _af.Tensor):
            raise TypeError(f"Trainer: loss must be an af.Tensor, got {type(loss).__name__}")
        if _numel(loss.shape) != 1:
            raise ShapeError(
                f"Trainer: the loss must be a scalar but has shape {tuple(loss.shape)}; reduce it, e.g. with af.mean(loss)"
            )
        _optim._check(optimizer)
        if params is None:
            params = optimizer.params
        params = list(params) if params is not None else []
        if not params:
            raise ValueError("Trainer: the optimizer was given no parameters; pass the af.parameter tensors to train")
        for p in params:
            if not isinstance(p, _af.Tensor) or p.op != "parameter":
                raise TypeError(f"Trainer: every parameter must be made with af.parameter, got {p!r}")
        inputs = [inputs] if isinstance(inputs, _af.Tensor) else list(inputs)
        for t in inputs:
            if not isinstance(t, _af.Tensor) or t.op != "input":
                raise TypeError(f"Trainer: inputs must be af.input tensors, got {t!r}")
        self.loss, self.params, self.optimizer, self.inputs = loss, params, optimizer, inputs
        self.device_optimizer, self.resident_state = bool(device_optimizer), bool(resident_state)
        self.predict, self.precision = predict, precision
        self.metric = metric or ("accuracy" if predict is not None else None)
        if loss_scale == "dynamic":
            self.dynamic = True
            self.scale = 1024.0 if precision == "fp16" else 1.0
        else:
            self.dynamic = False
            self.scale = float(loss_scale) if loss_scale else 1.0
        self.growth_interval = int(growth_interval)
        self._good = 0
        self.skipped = 0
        self.history = {"step_loss": [], "loss": [], "val_loss": [], "metric": [], "lr": [], "skipped": [], "loss_scale": [], "epoch_time": []}
        self._build()
        self._net = None

    # -- graph ---------------------------------------------------------
    def _build(self):
        s_in = _af.input((_optim.N_SCALARS,), name="train_scalars")
        self._scalars_input = s_in
        sf = s_in.cast("fp32")
        s = [sf[i : i + 1] for i in range(_optim.N_SCALARS)]
        seed = s_in[_optim.SCALE : _optim.SCALE + 1]
        # Raises (before any compile) for a parameter that does not reach the loss.
        grads = _af.grad(self.loss, self.params, seed)
        gf = [g.cast("fp32") for g in grads]
        # 0 when every gradient is finite, NaN otherwise (inf*0 = NaN).
        total = None
        for g in gf:
            t = _af.sum(g * 0.0)
            total = t if total is None else total + t
        ok = _af.equal(total, 0.0)
        g_true = [g * s[_optim.INV_SCALE] for g in gf]
        self._outputs = [self.loss, ok.cast("fp16")]
        self._updates = []
        self._moments = []
        if self.device_optimizer:
            for k, (p, g) in enumerate(zip(self.params, g_true)):
                st = self.optimizer.init_state(p, k)
                new = self.optimizer.update(p, g, st, s)
                old = [p.cast("fp32")] + st
                # A step with non-finite gradients leaves everything as it was.
                new = [_af.where(ok, n, o) for n, o in zip(new, old)]
                self._updates.append((p, new[0]))
                self._updates.extend(zip(st, new[1:]))
                self._moments.append(st)
        else:
            self._outputs += g_true
            self._master = [p.numpy().astype(np.float32) for p in self.params]
            self._host_state = [self.optimizer.host_init(m) for m in self._master]

    def _compile(self):
        if self._net is not None:
            return
        net = _af.compile_resident(self._outputs, self._updates, precision=self.precision)
        ports = sorted(self.inputs + [self._scalars_input], key=_af.input_order)
        if len(net.inputs) != len(ports):
            names = [p["name"] for p in net.inputs]
            raise ValueError(
                f"Trainer: the loss reads {len(net.inputs) - 1} graph input(s) ({', '.join(names)}) but inputs= lists "
                f"{len(self.inputs)}; list every af.input the loss depends on"
            )
        # Position in the program of each user input and of the scalars.
        orders = [_af.input_order(t) for t in ports]
        self._slot_of = [orders.index(_af.input_order(t)) for t in self.inputs]
        self._scalar_slot = orders.index(_af.input_order(self._scalars_input))
        self._net = net
        self._index = {}
        for k, p in enumerate(self.params):
            self._index[self._name(p, k)] = net.index_of(p)
            for m, t in zip(self.optimizer.moments, self._moments[k] if self._moments else []):
                self._index[f"{self._name(p, k)}.{m}"] = net.index_of(t)

    @staticmethod
    def _name(p, k):
        return p.name or f"param{k}"

    @property
    def net(self):
        """The compiled training program (a ResidentNet)."""
        self._compile()
        return self._net

    @property
    def host_transfers(self):
        """Bytes the training program moved across the host boundary."""
        return self.net.host_transfers

    # -- stepping --------------------------------------------------------
    def _check_batch(self, batch):
        if len(batch) != len(self.inputs):
            raise TypeError(f"Trainer.step takes {len(self.inputs)} array(s) (one per input), got {len(batch)}")
        out = []
        for a, t in zip(batch, self.inputs):
            a = np.asarray(a)
            if tuple(a.shape) != tuple(t.shape):
                raise ShapeError(
                    f"Trainer: a batch array of shape {tuple(a.shape)} for input {t.name or ''} of shape {tuple(t.shape)}; "
                    "the batch size is fixed when the graph is built (af.input((batch, ...)))"
                )
            out.append(a)
        return out

    def step(self, *batch):
        """One training step on one batch; returns the loss (float)."""
        batch = self._check_batch(batch)
        self._compile()
        self._prepare_offload()
        net = self._net
        args = [None] * (len(batch) + 1)
        for a, slot in zip(batch, self._slot_of):
            args[slot] = a
        lr = self.optimizer.lr()
        args[self._scalar_slot] = self.optimizer.scalars(self.scale)
        if self.device_optimizer and not self.resident_state:
            for k, v in enumerate(self._offload):
                net.write_state(k, v)
        outs = net(*args)
        loss, ok = float(outs[0].reshape(-1)[0]), bool(outs[1].reshape(-1)[0] != 0)
        if self.device_optimizer and not self.resident_state:
            self._offload = [net.read_state(k) for k in range(len(net.params))]
        if ok:
            if not self.device_optimizer:
                for k, (m, g, st) in enumerate(zip(self._master, outs[2:], self._host_state)):
                    self.optimizer.host_update(m, g.astype(np.float32), st)
                    net.write_state(net.index_of(self.params[k]), m)
            self.optimizer.step_count += 1
            self._good += 1
            if self.dynamic and self._good >= self.growth_interval and self.scale < _FP16_MAX_SCALE:
                self.scale *= 2.0
                self._good = 0
        else:
            self.skipped += 1
            self._good = 0
            if self.dynamic:
                self.scale = max(1.0, self.scale / 2.0)
        self.history["step_loss"].append(loss)
        self._last_lr = lr
        return loss

    def _prepare_offload(self):
        if self.device_optimizer and not self.resident_state and not hasattr(self, "_offload"):
            self._offload = [self._net.read_state(k) for k in range(len(self._net.params))]

    # -- loops -------------------------------------------------------------
    def fit(self, x, y=None, epochs=1, batch_size=None, shuffle=True, validation=None, progress=True, seed=0):
        """Trains for ``epochs`` over (x, y) in batches (the last partial
        batch is dropped: shapes are fixed); returns the history dict with
        per-epoch loss, val_loss, metric, lr, skipped and per-step loss."""
        arrays = list(x) if isinstance(x, (tuple, list)) else [x]
        if y is not None:
            arrays.append(y)
        arrays = [np.asarray(a) for a in arrays]
        B = self.inputs[0].shape[0]
        if batch_size is not None and batch_size != B:
            raise ShapeError(f"fit: batch_size={batch_size} but the inputs were built with batch {B}; build af.input((batch_size, ...))")
        n = len(arrays[0])
        if any(len(a) != n for a in arrays):
            raise ShapeError(f"fit: arrays of different lengths {[len(a) for a in arrays]}")
        steps = n // B
        if steps == 0:
            raise ShapeError(f"fit: {n} samples are fewer than one batch of {B}")
        self._compile()
        self._prepare_offload()
        rng = np.random.default_rng(seed)
        bar_mod = None
        if progress:
            try:
                import tqdm as bar_mod  # noqa: F811
            except ImportError:
                bar_mod = None
        for epoch in range(epochs):
            t0 = time.perf_counter()
            idx = rng.permutation(n) if shuffle else np.arange(n)
            skipped0 = self.skipped
            losses = []
            it = range(steps)
            bar = bar_mod.tqdm(it, desc=f"epoch {epoch + 1}/{epochs}", leave=False) if bar_mod else it
            for i in bar:
                b = idx[i * B : (i + 1) * B]
                losses.append(self.step(*[a[b] for a in arrays]))
                if bar_mod and i % 10 == 0:
                    bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if bar_mod:
                bar.close()
            h = self.history
            h["loss"].append(float(np.mean(losses)))
            h["lr"].append(self.optimizer.lr())
            h["skipped"].append(self.skipped - skipped0)
            h["loss_scale"].append(self.scale)
            h["epoch_time"].append(time.perf_counter() - t0)
            if validation is not None:
                r = self.evaluate(*validation)
                h["val_loss"].append(r["loss"])
                h["metric"].append(r.get(self.metric) if self.metric else None)
            if progress:
                msg = f"epoch {epoch + 1}/{epochs}: loss {h['loss'][-1]:.4f}"
                if validation is not None:
                    msg += f", val loss {h['val_loss'][-1]:.4f}"
                    if self.metric:
                        msg += f", val {self.metric} {h['metric'][-1]:.4f}"
                msg += f", {h['epoch_time'][-1]:.2f} s, skipped {h['skipped'][-1]}"
                print(msg)
        return self.history

    def _eval_net(self):
        outs = [self.loss] + ([self.predict] if self.predict is not None else [])
        net = _af.compile(outs, precision=self.precision)
        ports = sorted(self.inputs, key=_af.input_order)
        if len(net.inputs) != len(ports):
            raise ValueError("evaluate: the loss and predict tensors must read exactly the trainer's inputs")
        slot_of = [ports.index(t) for t in self.inputs]
        return net, slot_of

    def evaluate(self, x, y=None, batch_size=None):
        """Loss (and the metric, from ``predict``) over a whole dataset, with
        the current trained values. Returns a dict."""
        arrays = list(x) if isinstance(x, (tuple, list)) else [x]
        if y is not None:
            arrays.append(y)
        arrays = [np.asarray(a) for a in arrays]
        net, slot_of = self._eval_net()
        B = self.inputs[0].shape[0]
        n = len(arrays[0])
        losses, weights, preds = [], [], []
        for i in range(0, n, B):
            real = min(B, n - i)
            idx = np.arange(i, i + B) % n  # the last batch wraps around; only `real` rows count
            args = [None] * len(arrays)
            for a, slot in zip(arrays, slot_of):
                v = a[idx]
                args[slot] = v.astype(np.float32) if v.dtype.kind in "iub" else v
            out = net(*args)
            losses.append(float(np.asarray(out[0]).reshape(-1)[0]))
            weights.append(real)
            if self.predict is not None:
                preds.append(np.asarray(out[1], dtype=np.float32)[:real])
        net.release()
        r = {"loss": float(np.average(losses, weights=weights))}
        if self.predict is not None and self.metric == "accuracy" and y is not None:
            p = np.concatenate(preds)
            yy = np.asarray(y)
            labels = yy.argmax(-1) if yy.ndim == p.ndim else yy.astype(np.int64)
            r["accuracy"] = float((p.argmax(-1) == labels).mean())
        return r

    def predict_batches(self, x):
        """Runs ``predict`` over x (a single-input model), returns float32."""
        if self.predict is None:
            raise AneForgeError("predict_batches: the Trainer was built without predict=")
        net = _af.compile(self.predict, precision=self.precision)
        B = self.inputs[0].shape[0]
        x = np.asarray(x)
        out = []
        for i in range(0, len(x), B):
            real = min(B, len(x) - i)
            out.append(np.asarray(net(x[np.arange(i, i + B) % len(x)]), np.float32)[:real])
        net.release()
        return np.concatenate(out)

    # -- checkpoints -----------------------------------------------------
    def state_dict(self):
        """Parameters (and optimizer moments) by name, as float32 arrays."""
        self._compile()
        out = {}
        for name, k in self._index.items():
            if k is None:
                continue
            out[name] = self._net.read_state(k)
        if not self.device_optimizer:
            for k, (p, m) in enumerate(zip(self.params, self._master)):
                out[self._name(p, k)] = m.copy()
                for mname, st in zip(self.optimizer.moments, self._host_state[k]):
                    out[f"{self._name(p, k)}.{mname}"] = st.copy()
        return out

    def save(self, path):
        """Writes parameters, optimizer moments and the step counter to a
        safetensors file."""
        meta = {
            "format": "aneforge-trainer",
            "optimizer": type(self.optimizer).__name__,
            "step_count": self.optimizer.step_count,
            "loss_scale": self.scale,
            "skipped": self.skipped,
        }
        save_safetensors(path, self.state_dict(), meta)

    @_hybridmethod
    def load(cls, self, path):
        """``af.Trainer.load(path)`` returns the checkpoint (arrays by name
        and ``.metadata``); ``trainer.load(path)`` restores it into the
        trainer (matching names and shapes are required)."""
        ck = load_safetensors(path)
        if self is None:
            return ck
        self._compile()
        for name, k in self._index.items():
            if name not in ck:
                raise FileFormatError(f"{path!s} has no tensor {name!r}; it holds {sorted(ck)}")
            if k is not None:
                self._net.write_state(k, ck[name])
        for k, p in enumerate(self.params):
            _af.set_parameter(p, ck[self._name(p, k)])
        if not self.device_optimizer:
            for k, p in enumerate(self.params):
                self._master[k][...] = ck[self._name(p, k)]
                for mname, st in zip(self.optimizer.moments, self._host_state[k]):
                    st[...] = ck[f"{self._name(p, k)}.{mname}"]
        md = getattr(ck, "metadata", {})
        self.optimizer.step_count = int(md.get("step_count", self.optimizer.step_count))
        self.scale = float(md.get("loss_scale", self.scale))
        if hasattr(self, "_offload"):
            del self._offload
            self._prepare_offload()
        return self

    # -- plots -------------------------------------------------------------
    def plot(self, path):
        """Writes the training curves (step loss, epoch loss, validation
        loss and metric) as a PNG. Needs matplotlib."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise AneForgeError("trainer.plot needs matplotlib; install it with `pip install matplotlib`") from None
        h = self.history
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        ax = axes[0]
        sl = np.asarray(h["step_loss"], dtype=np.float64)
        if len(sl):
            ax.plot(sl, alpha=0.3, label="step loss")
            w = max(1, len(sl) // 50)
            if w > 1:
                ax.plot(np.arange(w - 1, len(sl)), np.convolve(sl, np.ones(w) / w, mode="valid"), label=f"mean of {w}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.legend()
        ax = axes[1]
        ep = np.arange(1, len(h["loss"]) + 1)
        ax.plot(ep, h["loss"], "o-", label="train loss")
        if h["val_loss"]:
            ax.plot(ep, h["val_loss"], "s-", label="val loss")
        ax.set_xlabel("epoch")
        ax.legend(loc="upper left")
        if h["metric"] and h["metric"][0] is not None:
            ax2 = ax.twinx()
            ax2.plot(ep, h["metric"], "^-", color="tab:green", label=f"val {self.metric}")
            ax2.set_ylabel(self.metric)
            ax2.legend(loc="upper right")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def release(self):
        """Writes trained values into the parameters and frees the program."""
        if self._net is not None:
            self._net.release()
            self._net = None


__all__ = ["Trainer", "Checkpoint", "save_safetensors", "load_safetensors"]
