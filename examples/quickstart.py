"""ANEForge in one screen: build a lazy graph, compile it, run it, check it.

    pip install . && python examples/quickstart.py
"""

import numpy as np

import aneforge as af

rng = np.random.default_rng(0)

# 1. Build: a lazy graph. Shapes are inferred as you go.
x = af.input((1, 3, 32, 32), name="image")  # an fp16 input port
W = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)  # baked into the program
y = af.conv(x, W, pad=1).relu().mean((2, 3))
print("graph output:", y)

# 2. Compile: one program. Off a Mac it runs on `sim`, the CPU engine with
#    the Neural Engine's numerics (fp16 storage between ops).
net = af.compile(y)
print(net)

# 3. Run with numpy arrays.
image = rng.random((1, 3, 32, 32)).astype(np.float16)
out = net(image)
print("output:", out.dtype, out.shape)
print(out[0, :8])

# 4. Check against plain numpy in float32.
xp = np.pad(image.astype(np.float32), ((0, 0), (0, 0), (1, 1), (1, 1)))
W16 = W.astype(np.float16).astype(np.float32)  # the program stores weights in fp16
ref = sum(
    np.einsum("oc,nchw->nohw", W16[:, :, i, j], xp[:, :, i : i + 32, j : j + 32]) for i in range(3) for j in range(3)
)
ref = np.maximum(ref, 0).mean((2, 3))
rel = np.abs(out.astype(np.float32) - ref).max() / np.abs(ref).max()
print(f"max relative difference to numpy float32: {rel:.2e}")
# fp16 storage plus the engine's fp16 accumulator in the 1024-element mean
# give errors of a few 1e-3; anything larger would be a bug.
assert rel < 1e-2, rel
print("OK: matches numpy within fp16 tolerance")

# Same program with f32 storage (weights kept in f32) and IEEE accumulation,
# a reference mode for debugging:
ref32 = sum(np.einsum("oc,nchw->nohw", W[:, :, i, j], xp[:, :, i : i + 32, j : j + 32]) for i in range(3) for j in range(3))
ref32 = np.maximum(ref32, 0).mean((2, 3))
exact = af.compile(y, precision="fp32", numerics="ieee")(image)
print(f"fp32 reference mode differs from numpy by {np.abs(exact - ref32).max() / np.abs(ref32).max():.1e}")
net.release()
