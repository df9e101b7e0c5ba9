"""A small module using every custom op compiles with torch.compile(fullgraph=True) on CPU
(no graph break: the fake implementations give the shapes) and matches eager."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mama import ops


class AllOps(nn.Module):
    def forward(self, f1, f2, img0, img1, flow, feats, a, n, gt, g):
        corr = ops.correlation(f1, f2, pad=4, kernel_size=1, max_disp=4, stride1=1, stride2=2, negative_slope=0.1)
        warped, norm = ops.warp_residual(img0, img1, flow)
        w2 = ops.warp(img1, flow)
        sim_m, sim_l = ops.bottleneck_sim(*feats, margin=0.2)
        loss = ops.patch_destroy_loss(a, n, gt, g, torch.full_like(g, -1.0), patch=8, ld=4.0)
        return corr.sum() + warped.mean() + norm.mean() + w2.mean() + sim_m.sum() + sim_l.sum() + loss


@pytest.mark.compile
def test_fullgraph_compile_matches_eager():
    gen = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    args = (r(2, 6, 8, 8), r(2, 6, 8, 8), r(2, 3, 16, 16), r(2, 3, 16, 16), 2 * r(2, 2, 16, 16),
            [r(2, 16, 4, 4) for _ in range(5)], r(2, 3, 16, 16).tanh(), r(2, 3, 16, 16).tanh(),
            r(2, 3, 16, 16).tanh(), r(2, 3, 16, 16).tanh().requires_grad_())
    model = AllOps()
    eager = model(*args)
    (g_eager,) = torch.autograd.grad(eager, args[-1])
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="inductor")
    out = compiled(*args)
    (g_comp,) = torch.autograd.grad(out, args[-1])
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(g_comp, g_eager, rtol=1e-4, atol=1e-5)
