"""The one Python face of mama's custom ops.

Every op exists in three implementations with one contract (shared/DESIGN.md §3):
  * a plain-PyTorch reference in `mama.reference` (oracle for the tests, and the fallback),
  * a C++ CPU kernel in the extension `mama._C` (csrc/cpu/<op>.cpp),
  * a Triton kernel for CUDA (mama.kernels.<op>), registered here.
This module defines the public functions, the fake (meta) implementations that let
torch.compile trace the ops without graph breaks, and autograd over the `_<op>_backward` ops.

If the extension is not built, a warning says so and the reference is registered under the
same schemas, so every caller keeps working (slowly).
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from mama import reference

# The schemas as csrc/ops.cpp defines them; used only to register the fallback when the
# extension is missing. tests/ops/test_schemas.py checks that both stay identical.
SCHEMAS = {
    "correlation": "correlation(Tensor a, Tensor b, int pad, int kernel_size, int max_disp, "
    "int stride1, int stride2, float negative_slope) -> Tensor",
    "_correlation_backward": "_correlation_backward(Tensor grad_out, Tensor a, Tensor b, "
    "Tensor out, int pad, int kernel_size, int max_disp, int stride1, int stride2, "
    "float negative_slope) -> (Tensor, Tensor)",
    "warp": "warp(Tensor img, Tensor flow) -> Tensor",
    "_warp_backward": "_warp_backward(Tensor grad_out, Tensor img, Tensor flow) -> (Tensor, Tensor)",
    "warp_residual": "warp_residual(Tensor img0, Tensor img1, Tensor flow) -> (Tensor, Tensor)",
    "_warp_residual_backward": "_warp_residual_backward(Tensor grad_warped, Tensor grad_norm, "
    "Tensor img0, Tensor img1, Tensor flow, Tensor warped, Tensor norm) -> (Tensor, Tensor, Tensor)",
    "bottleneck_sim": "bottleneck_sim(Tensor x4, Tensor y4, Tensor x_y, Tensor z4, Tensor x_z, "
    "float margin) -> (Tensor, Tensor)",
    "_bottleneck_sim_backward": "_bottleneck_sim_backward(Tensor grad_motion, Tensor grad_label, "
    "Tensor x4, Tensor y4, Tensor x_y, Tensor z4, Tensor x_z, float margin) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    "patch_destroy_loss": "patch_destroy_loss(Tensor A, Tensor N, Tensor GT, Tensor G, "
    "Tensor BG, int patch, float ld) -> Tensor",
    "_patch_destroy_loss_backward": "_patch_destroy_loss_backward(Tensor grad, Tensor A, "
    "Tensor N, Tensor GT, Tensor G, Tensor BG, int patch, float ld) -> Tensor",
}

try:
    from mama import _C  # noqa: F401  (importing it registers the schemas and CPU kernels)

    HAS_EXTENSION = True
except ImportError as _exc:  # pragma: no cover - exercised only on a broken install
    HAS_EXTENSION = False
    warnings.warn(
        f"mama._C is not built ({_exc}); the plain-PyTorch reference ops are used instead. "
        "Build it with `make install` (pip install --no-build-isolation -e .).",
        stacklevel=2,
    )
    _fallback_lib = torch.library.Library("mama", "DEF")
    for _name, _schema in SCHEMAS.items():
        _fallback_lib.define(_schema)
        _fallback_lib.impl(_name, getattr(reference, _name), "CompositeExplicitAutograd")


def _register_triton(op: str, module: str, impls: dict[str, str]) -> None:
    """Register Triton launchers from mama.kernels.<module> as the CUDA kernels of `op`s.

    `impls` maps an op name (e.g. "correlation", "_correlation_backward") to the launcher's
    name in that module. Triton is imported lazily; without it CUDA tensors use the reference.
    """
    try:
        import importlib

        mod = importlib.import_module(f"mama.kernels.{module}")
    except ImportError as exc:  # pragma: no cover - triton ships with torch on Linux
        warnings.warn(f"Triton kernels for {op} unavailable ({exc}); CUDA uses the reference.")
        for name in impls:
            torch.library.register_kernel(f"mama::{name}", "cuda", getattr(reference, name))
        return
    for name, fn_name in impls.items():
        torch.library.register_kernel(f"mama::{name}", "cuda", getattr(mod, fn_name))


# =============================== correlation ===============================
# SECTION correlation: fake impls, autograd, triton registration, public function.

# =============================== warp, warp_residual ===============================
# SECTION warp: fake impls, autograd, triton registration, public functions.

# =============================== bottleneck_sim ===============================
# SECTION bottleneck_sim: fake impls, autograd, triton registration, public function.

# =============================== patch_destroy_loss ===============================
# SECTION patch_destroy_loss: fake impls, autograd, triton registration, public function.

# =============================== patch_noise ===============================
# SECTION patch_noise: vectorised plain PyTorch (DESIGN §3: no kernel unless it pays).
