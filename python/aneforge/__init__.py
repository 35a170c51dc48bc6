"""ANEForge: compile a tensor graph into one Apple Neural Engine program.

Build a lazy graph, compile it, call it with numpy arrays::

    import aneforge as af, numpy as np
    x = af.input((1, 3, 32, 32))
    y = af.conv(x, np.random.randn(16, 3, 3, 3).astype(np.float32), pad=1).relu().mean((2, 3))
    net = af.compile(y)
    out = net(np.random.rand(1, 3, 32, 32).astype(np.float16))

Off a Mac, programs run on ``sim``: a CPU engine with the Neural Engine's
fp16 numerics.
"""

from . import exceptions
from ._aneforge import *  # noqa: F401,F403  (the op set and Tensor/Net)
from ._aneforge import Net, Tensor, __version__, compile  # noqa: F401
from ._aneforge import where as where_  # noqa: F401
from .exceptions import *  # noqa: F401,F403
from . import models  # noqa: E402,F401  (af.models.resnet18, ...)
from . import losses, optim  # noqa: E402,F401
from .trainer import Trainer  # noqa: E402,F401

__all__ = [name for name in dir() if not name.startswith("_")]
