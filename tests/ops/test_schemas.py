"""The op schemas are defined once in C++; the Python fallback copy must not drift from them,
and every op has its CPU kernel, fake implementation and autograd registered."""
from __future__ import annotations

import torch

from mama import ops


def test_fallback_schemas_equal_the_extension():
    assert ops.HAS_EXTENSION, "mama._C is not built: run `make install`"
    for name, schema in ops.SCHEMAS.items():
        registered = str(getattr(torch.ops.mama, name).default._schema)
        assert registered == f"mama::{schema}", name


def test_every_op_has_cpu_and_cuda_kernels():
    for name in ops.SCHEMAS:
        op = getattr(torch.ops.mama, name).default
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CPU"), f"{name}: no CPU kernel"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CUDA"), f"{name}: no CUDA (Triton) kernel"


def test_every_op_traces_with_fake_tensors():
    """The fake impls give shapes without running a kernel (what torch.compile needs)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        a = torch.empty(2, 8, 6, 6)
        assert ops.correlation(a, a, 2, 1, 2, 1, 1).shape == (2, 25, 6, 6)
        img, flow = torch.empty(2, 3, 10, 12), torch.empty(2, 2, 10, 12)
        assert ops.warp(img, flow).shape == img.shape
        w, n = ops.warp_residual(img, img, flow)
        assert w.shape == img.shape and n.shape == (2, 1, 10, 12)
        f = torch.empty(3, 16, 4, 4)
        sm, sl = ops.bottleneck_sim(f, f, f, f, f)
        assert sm.shape == sl.shape == (3,)
        x = torch.empty(2, 3, 16, 16)
        assert ops.patch_destroy_loss(x, x, x, x, x, patch=8).shape == ()
