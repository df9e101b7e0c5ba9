// Every schema of the mama custom ops, defined once. Kernels register per dispatch key in
// their own files (csrc/cpu/<op>.cpp for CPU; kernels/<op>.py registers Triton for CUDA from
// Python). Autograd is registered in Python (mama/ops.py) over the `_<op>_backward` ops, so it
// is the same on every device and can be faked for torch.compile.
#include <Python.h>
#include <torch/library.h>

// Importing mama._C from Python runs the static registrations below.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(mama, m) {
  // FlowNetC cost volume; negative_slope 1.0 = no activation, 0.1 = FlowNetC's fused LeakyReLU.
  m.def(
      "correlation(Tensor a, Tensor b, int pad, int kernel_size, int max_disp, int stride1, "
      "int stride2, float negative_slope) -> Tensor");
  m.def(
      "_correlation_backward(Tensor grad_out, Tensor a, Tensor b, Tensor out, int pad, "
      "int kernel_size, int max_disp, int stride1, int stride2, float negative_slope) "
      "-> (Tensor, Tensor)");
  // Bilinear backward warp (FlowNet2 Resample2d semantics).
  m.def("warp(Tensor img, Tensor flow) -> Tensor");
  m.def("_warp_backward(Tensor grad_out, Tensor img, Tensor flow) -> (Tensor, Tensor)");
  // Fused warp + per-pixel L2 norm of img0 - warped: returns (warped, norm (B,1,H,W)).
  m.def("warp_residual(Tensor img0, Tensor img1, Tensor flow) -> (Tensor, Tensor)");
  m.def(
      "_warp_residual_backward(Tensor grad_warped, Tensor grad_norm, Tensor img0, Tensor img1, "
      "Tensor flow, Tensor warped, Tensor norm) -> (Tensor, Tensor, Tensor)");
  // F2LM bottleneck head: per-sample (sim_motion, sim_label), each of shape (B,).
  m.def(
      "bottleneck_sim(Tensor x4, Tensor y4, Tensor x_y, Tensor z4, Tensor x_z, float margin) "
      "-> (Tensor, Tensor)");
  m.def(
      "_bottleneck_sim_backward(Tensor grad_motion, Tensor grad_label, Tensor x4, Tensor y4, "
      "Tensor x_y, Tensor z4, Tensor x_z, float margin) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Destroyer loss summed over samples and patches (0-dim tensor); gradient to G only.
  m.def(
      "patch_destroy_loss(Tensor A, Tensor N, Tensor GT, Tensor G, Tensor BG, int patch, "
      "float ld) -> Tensor");
  m.def(
      "_patch_destroy_loss_backward(Tensor grad, Tensor A, Tensor N, Tensor GT, Tensor G, "
      "Tensor BG, int patch, float ld) -> Tensor");
  // Frozen 3x3 stride-1 conv (zero padding == dilation) by Winograd F(2x2,3x3) or F(4x4,3x3),
  // inference only (no autograd): u = ((t+2)^2, C, K) transformed filters, 16 or 36 rows for
  // tile t = 2 or 4; output channels_last.
  m.def("winograd_conv3x3(Tensor x, Tensor u, Tensor? bias, int dilation, bool relu) -> Tensor");
}
