"""The op schemas are defined once in C++; the Python fallback copy must not drift from them,
and every op has its CPU kernel, fake implementation and autograd registered."""
from __future__ import annotations

import pytest
import torch

from mama import ops, reference


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
        y = ops.winograd_conv3x3(torch.empty(2, 8, 6, 6), torch.empty(36, 8, 4))
        assert y.shape == (2, 4, 6, 6) and y.is_contiguous(memory_format=torch.channels_last)


BAD_INPUTS = [  # (op, arguments a kernel must refuse, words of the message)
    ("correlation", lambda: (torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 8), 1, 2, 1, 1, 1, 1.0), "kernel_size must be odd"),
    ("warp", lambda: (torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)), "flow must have shape"),
    ("bottleneck_sim", lambda: (*[torch.zeros(2, 4, 3, 3)] * 4, torch.zeros(2, 4, 3, 2), 0.2), "x_z has shape"),
    ("patch_destroy_loss", lambda: (*[torch.zeros(1, 3, 16, 16)] * 5, 5, 4.0), "must be multiples of patch"),
    ("winograd_conv3x3", lambda: (torch.zeros(1, 4, 6, 6), torch.zeros(25, 4, 5), None, 1, False), "u must be"),
]


@pytest.mark.parametrize("name,make,words", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_the_cpu_kernel_and_its_reference_refuse_alike(name, make, words):
    # The reference is the fallback without the extension: the same error type and words.
    with pytest.raises(RuntimeError, match=words):
        getattr(torch.ops.mama, name)(*make())
    with pytest.raises(RuntimeError, match=words):
        getattr(reference, name)(*make())


def test_triton_block_sizes_are_powers_of_two_and_refuse_what_does_not_fit():
    from mama.kernels import blocks

    assert [blocks.block(n, "op", "width") for n in (1, 2, 3, 17, 64)] == [1, 2, 4, 32, 64]
    assert blocks.fit(300, budget=4096, per=64) == 64 and blocks.fit(3, budget=4096, per=64) == 4
    assert blocks.fit(300, budget=100, per=4096) == 1  # at least one
    with pytest.raises(RuntimeError, match=r"op \(Triton\): width 65 > 64 is unsupported"):
        blocks.block(65, "op", "width", limit=64)
