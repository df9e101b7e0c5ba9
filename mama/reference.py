"""Plain-PyTorch versions of every mama op, written for clarity, not speed.

They are the oracle of the tests and the fallback when the C++ extension is not built.
Each function has exactly the signature of its op's schema in csrc/ops.cpp. The
`_<op>_backward` references take the vector-Jacobian product of the forward reference
with torch.autograd, so forward and backward can never disagree.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _vjp(fn, inputs: tuple[Tensor, ...], grads: tuple[Tensor, ...], wrt: tuple[int, ...]):
    """Gradients of fn(*inputs) (a tensor or tuple) against grads, for the inputs in `wrt`."""
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_(i in wrt) for i, x in enumerate(inputs)]
        outs = fn(*leaves)
        outs = outs if isinstance(outs, tuple) else (outs,)
        pairs = [(o, g) for o, g in zip(outs, grads) if g is not None]
        got = torch.autograd.grad(
            [o for o, _ in pairs], [leaves[i] for i in wrt], [g for _, g in pairs],
            allow_unused=True,
        )
    return tuple(
        torch.zeros_like(inputs[i]) if g is None else g for i, g in zip(wrt, got)
    )


# =============================== correlation ===============================
# SECTION correlation

# =============================== warp, warp_residual ===============================
# SECTION warp

# =============================== bottleneck_sim ===============================
# SECTION bottleneck_sim

# =============================== patch_destroy_loss ===============================
# SECTION patch_destroy_loss
