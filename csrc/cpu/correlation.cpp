// CPU kernels of mama::correlation (schema in csrc/ops.cpp): the FlowNetC cost volume.
//
// Geometry (the same in mama/reference.py and kernels/correlation.py). With the inputs
// zero-padded by `pad`, output pixel (oy, ox) centres a kernel_size x kernel_size window at
// padded position (oy*stride1 + border, ox*stride1 + border), border = max_disp + (k-1)/2.
// In unpadded coordinates the window's top-left tap is (oy*stride1 + off, ox*stride1 + off)
// with off = max_disp - pad. Channel d = dyi*grid + dxi holds displacement
// (dy, dx) = ((dyi - R)*stride2, (dxi - R)*stride2), R = max_disp/stride2, grid = 2R+1.
// Taps that fall in the zero padding contribute nothing, so they are skipped instead of
// materialising padded copies.
//
// Layout: both inputs are transposed to channels-last (B,H,W,C) so every tap is a
// contiguous dot product (forward) or axpy (backward) over C, which the compiler vectorises.
// Work is split over (batch, row): output rows in the forward, input-gradient rows in the
// backward (a gather, so no two threads write the same element and no atomics are needed).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace {

struct CorrGeometry {
  int64_t B, C, H, W;
  int64_t pad, k, max_disp, s1, s2;
  int64_t radius;  // R: displacements per side
  int64_t grid;    // 2R + 1
  int64_t off;     // max_disp - pad: unpadded coordinate of output 0's first tap
  int64_t out_h, out_w;
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

CorrGeometry check_and_measure(const at::Tensor& a, const at::Tensor& b, int64_t pad,
                               int64_t kernel_size, int64_t max_disp, int64_t stride1,
                               int64_t stride2, double negative_slope) {
  TORCH_CHECK(a.dim() == 4, "correlation: a must be (B,C,H,W), got ", a.dim(), " dims");
  TORCH_CHECK(a.sizes() == b.sizes(), "correlation: a and b must have the same shape, got ",
              a.sizes(), " and ", b.sizes());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(),
              "correlation: a and b must have the same dtype, got ", a.scalar_type(), " and ",
              b.scalar_type());
  TORCH_CHECK(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble,
              "correlation: dtype must be float32 or float64, got ", a.scalar_type());
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu(),
              "correlation: CPU kernel got tensors on ", a.device(), " and ", b.device());
  TORCH_CHECK(kernel_size >= 1 && kernel_size % 2 == 1,
              "correlation: kernel_size must be odd and >= 1, got ", kernel_size);
  TORCH_CHECK(pad >= 0 && max_disp >= 0, "correlation: pad and max_disp must be >= 0, got ",
              pad, " and ", max_disp);
  TORCH_CHECK(stride1 >= 1 && stride2 >= 1, "correlation: stride1 and stride2 must be >= 1, got ",
              stride1, " and ", stride2);
  TORCH_CHECK(negative_slope >= 0.0,
              "correlation: negative_slope must be >= 0 (the backward reads the LeakyReLU "
              "mask from the output), got ",
              negative_slope);
  CorrGeometry g;
  g.B = a.size(0);
  g.C = a.size(1);
  g.H = a.size(2);
  g.W = a.size(3);
  g.pad = pad;
  g.k = kernel_size;
  g.max_disp = max_disp;
  g.s1 = stride1;
  g.s2 = stride2;
  g.radius = max_disp / stride2;
  g.grid = 2 * g.radius + 1;
  g.off = max_disp - pad;
  const int64_t border = max_disp + (kernel_size - 1) / 2;
  const int64_t span_h = g.H + 2 * pad - 2 * border;
  const int64_t span_w = g.W + 2 * pad - 2 * border;
  TORCH_CHECK(span_h > 0 && span_w > 0, "correlation: input ", g.H, "x", g.W,
              " is too small for pad ", pad, ", max_disp ", max_disp, " and kernel_size ",
              kernel_size, " (needs H + 2*pad > 2*(max_disp + (kernel_size-1)/2))");
  TORCH_CHECK(g.C > 0, "correlation: inputs must have at least one channel");
  g.out_h = ceil_div(span_h, stride1);
  g.out_w = ceil_div(span_w, stride1);
  return g;
}

// The inner loops over channels. Built twice (ifunc dispatch at load time): for AVX2+FMA
// CPUs, where they run 8 floats per instruction, and for any x86-64 (the build's baseline).
#if defined(__x86_64__) && defined(__GNUC__)
#define MAMA_SIMD_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define MAMA_SIMD_CLONES
#endif

template <typename T>
T dot_impl(const T* x, const T* y, int64_t n) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < n; ++c) sum += x[c] * y[c];
  return sum;
}
MAMA_SIMD_CLONES float dot(const float* x, const float* y, int64_t n) { return dot_impl(x, y, n); }
MAMA_SIMD_CLONES double dot(const double* x, const double* y, int64_t n) {
  return dot_impl(x, y, n);
}

// Four dot products sharing x: one load of x feeds four FMAs. out[k] += x . y[k].
template <typename T>
void dot4_impl(const T* x, const T* const* y, T* out, int64_t n) {
  const T *y0 = y[0], *y1 = y[1], *y2 = y[2], *y3 = y[3];
  T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t c = 0; c < n; ++c) {
    const T xc = x[c];
    s0 += xc * y0[c];
    s1 += xc * y1[c];
    s2 += xc * y2[c];
    s3 += xc * y3[c];
  }
  out[0] += s0;
  out[1] += s1;
  out[2] += s2;
  out[3] += s3;
}
MAMA_SIMD_CLONES void dot4(const float* x, const float* const* y, float* out, int64_t n) {
  dot4_impl(x, y, out, n);
}
MAMA_SIMD_CLONES void dot4(const double* x, const double* const* y, double* out, int64_t n) {
  dot4_impl(x, y, out, n);
}

// y += sum_k alpha[k] * x[k] over four vectors: one load and store of y per four FMAs.
template <typename T>
void axpy4_impl(const T* alpha, const T* const* x, T* y, int64_t n) {
  const T a0 = alpha[0], a1 = alpha[1], a2 = alpha[2], a3 = alpha[3];
  const T *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3];
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) y[c] += a0 * x0[c] + a1 * x1[c] + a2 * x2[c] + a3 * x3[c];
}
MAMA_SIMD_CLONES void axpy4(const float* alpha, const float* const* x, float* y, int64_t n) {
  axpy4_impl(alpha, x, y, n);
}
MAMA_SIMD_CLONES void axpy4(const double* alpha, const double* const* x, double* y, int64_t n) {
  axpy4_impl(alpha, x, y, n);
}

template <typename T>
void axpy_impl(T alpha, const T* x, T* y, int64_t n) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) y[c] += alpha * x[c];
}
MAMA_SIMD_CLONES void axpy(float alpha, const float* x, float* y, int64_t n) {
  axpy_impl(alpha, x, y, n);
}
MAMA_SIMD_CLONES void axpy(double alpha, const double* x, double* y, int64_t n) {
  axpy_impl(alpha, x, y, n);
}

template <typename T>
void forward_kernel(const T* a_cl, const T* b_cl, T* out, const CorrGeometry& g, T slope) {
  const int64_t C = g.C, H = g.H, W = g.W, G = g.grid, D = G * G;
  const T scale = T(1) / T(g.k * g.k * g.C);
  at::parallel_for(0, g.B * g.out_h, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> acc(g.out_w * G);  // one output row for one dy: (ox, dxi)
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / g.out_h, oy = row % g.out_h;
      const T* a_n = a_cl + n * H * W * C;
      const T* b_n = b_cl + n * H * W * C;
      for (int64_t dyi = 0; dyi < G; ++dyi) {
        const int64_t dy = (dyi - g.radius) * g.s2;
        std::fill(acc.begin(), acc.end(), T(0));
        for (int64_t j = 0; j < g.k; ++j) {
          const int64_t ya = oy * g.s1 + g.off + j, yb = ya + dy;
          if (ya < 0 || ya >= H || yb < 0 || yb >= H) continue;  // zero padding
          const T* a_row = a_n + ya * W * C;
          const T* b_row = b_n + yb * W * C;
          for (int64_t ox = 0; ox < g.out_w; ++ox) {
            T* acc_x = acc.data() + ox * G;
            for (int64_t i = 0; i < g.k; ++i) {
              const int64_t xa = ox * g.s1 + g.off + i;
              if (xa < 0 || xa >= W) continue;
              const T* a_vec = a_row + xa * C;
              // dxi with b's column inside the image form one contiguous range [lo, hi).
              int64_t lo = 0, hi = G;
              while (lo < G && xa + (lo - g.radius) * g.s2 < 0) ++lo;
              while (hi > lo && xa + (hi - 1 - g.radius) * g.s2 >= W) --hi;
              const T* b_first = b_row + (xa + (lo - g.radius) * g.s2) * C;
              const int64_t b_step = g.s2 * C;
              int64_t dxi = lo;
              for (; dxi + 4 <= hi; dxi += 4) {
                const T* b_vecs[4];
                for (int q = 0; q < 4; ++q) b_vecs[q] = b_first + (dxi - lo + q) * b_step;
                dot4(a_vec, b_vecs, acc_x + dxi, C);
              }
              for (; dxi < hi; ++dxi) acc_x[dxi] += dot(a_vec, b_first + (dxi - lo) * b_step, C);
            }
          }
        }
        for (int64_t dxi = 0; dxi < G; ++dxi) {
          T* out_row = out + ((n * D + dyi * G + dxi) * g.out_h + oy) * g.out_w;
          for (int64_t ox = 0; ox < g.out_w; ++ox) {
            const T v = acc[ox * G + dxi] * scale;
            out_row[ox] = v >= T(0) ? v : v * slope;  // fused LeakyReLU (slope 1: identity)
          }
        }
      }
    }
  });
}

// One input gradient, as a gather over the outputs that read each of its rows.
// For grad_a (is_b false) row y is tap j of output row oy when y = oy*s1 + off + j, and its
// partner is b's row y + dy; for grad_b the tap sits at y = oy*s1 + off + j + dy and its
// partner is a's row y - dy. Columns likewise. `g_cl` is the masked, scaled upstream
// gradient in (B, out_h, out_w, D) layout so all displacements of one pixel are adjacent.
template <typename T>
void backward_kernel(const T* g_cl, const T* partner_cl, T* grad_cl, const CorrGeometry& g,
                     bool is_b) {
  const int64_t C = g.C, H = g.H, W = g.W, G = g.grid, D = G * G;
  const int64_t sign = is_b ? -1 : 1;
  at::parallel_for(0, g.B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> coeffs(G * g.k);
    std::vector<const T*> vecs(G * g.k);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / H, y = row % H;
      T* grad_row = grad_cl + (n * H + y) * W * C;
      std::fill(grad_row, grad_row + W * C, T(0));
      const T* p_n = partner_cl + n * H * W * C;
      const T* g_n = g_cl + n * g.out_h * g.out_w * D;
      for (int64_t dyi = 0; dyi < G; ++dyi) {
        const int64_t dy = (dyi - g.radius) * g.s2;
        const int64_t yp = y + sign * dy;
        if (yp < 0 || yp >= H) continue;  // partner in the zero padding
        const T* p_row = p_n + yp * W * C;
        for (int64_t j = 0; j < g.k; ++j) {
          const int64_t t = y - g.off - j - (is_b ? dy : 0);  // = oy * s1
          if (t < 0 || t % g.s1 != 0 || t / g.s1 >= g.out_h) continue;
          const T* g_row = g_n + (t / g.s1) * g.out_w * D;
          for (int64_t x = 0; x < W; ++x) {
            // Collect every (coefficient, partner vector) pair of this pixel, then add them
            // four at a time.
            int64_t count = 0;
            for (int64_t dxi = 0; dxi < G; ++dxi) {
              const int64_t dx = (dxi - g.radius) * g.s2;
              const int64_t xp = x + sign * dx;
              if (xp < 0 || xp >= W) continue;
              for (int64_t i = 0; i < g.k; ++i) {
                const int64_t u = x - g.off - i - (is_b ? dx : 0);  // = ox * s1
                if (u < 0 || u % g.s1 != 0 || u / g.s1 >= g.out_w) continue;
                coeffs[count] = g_row[(u / g.s1) * D + dyi * G + dxi];
                vecs[count++] = p_row + xp * C;
              }
            }
            T* grad_vec = grad_row + x * C;
            int64_t q = 0;
            for (; q + 4 <= count; q += 4) axpy4(&coeffs[q], &vecs[q], grad_vec, C);
            for (; q < count; ++q) axpy(coeffs[q], vecs[q], grad_vec, C);
          }
        }
      }
    }
  });
}

at::Tensor correlation_cpu(const at::Tensor& a, const at::Tensor& b, int64_t pad,
                           int64_t kernel_size, int64_t max_disp, int64_t stride1,
                           int64_t stride2, double negative_slope) {
  const CorrGeometry g =
      check_and_measure(a, b, pad, kernel_size, max_disp, stride1, stride2, negative_slope);
  const at::Tensor a_cl = a.permute({0, 2, 3, 1}).contiguous();
  const at::Tensor b_cl = b.permute({0, 2, 3, 1}).contiguous();
  at::Tensor out = at::empty({g.B, g.grid * g.grid, g.out_h, g.out_w}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "correlation_cpu", [&] {
    forward_kernel<scalar_t>(a_cl.data_ptr<scalar_t>(), b_cl.data_ptr<scalar_t>(),
                             out.data_ptr<scalar_t>(), g, static_cast<scalar_t>(negative_slope));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> correlation_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& a, const at::Tensor& b, const at::Tensor& out,
    int64_t pad, int64_t kernel_size, int64_t max_disp, int64_t stride1, int64_t stride2,
    double negative_slope) {
  const CorrGeometry g =
      check_and_measure(a, b, pad, kernel_size, max_disp, stride1, stride2, negative_slope);
  const std::vector<int64_t> out_shape = {g.B, g.grid * g.grid, g.out_h, g.out_w};
  TORCH_CHECK(grad_out.sizes() == out_shape && out.sizes() == out_shape,
              "correlation backward: grad_out and out must have shape ", out_shape, ", got ",
              grad_out.sizes(), " and ", out.sizes());
  TORCH_CHECK(grad_out.scalar_type() == a.scalar_type() && out.scalar_type() == a.scalar_type(),
              "correlation backward: grad_out and out must have dtype ", a.scalar_type());
  TORCH_CHECK(grad_out.device().is_cpu() && out.device().is_cpu(),
              "correlation backward: CPU kernel got grad_out on ", grad_out.device(),
              " and out on ", out.device());
  // LeakyReLU's derivative from the output's sign (slope >= 0, so out > 0 iff input > 0),
  // and the 1/(k*k*C) normalisation, folded into the upstream gradient once.
  const double scale = 1.0 / double(kernel_size * kernel_size * g.C);
  const at::Tensor g_masked =
      negative_slope == 1.0
          ? grad_out * scale
          : at::where(out > 0, grad_out * scale, grad_out * (negative_slope * scale));
  const at::Tensor g_cl = g_masked.permute({0, 2, 3, 1}).contiguous();
  const at::Tensor a_cl = a.permute({0, 2, 3, 1}).contiguous();
  const at::Tensor b_cl = b.permute({0, 2, 3, 1}).contiguous();
  // Gradients are computed channels-last, then returned contiguous (B,C,H,W) like the fake.
  at::Tensor grad_a_cl = at::empty({g.B, g.H, g.W, g.C}, a.options());
  at::Tensor grad_b_cl = at::empty({g.B, g.H, g.W, g.C}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "correlation_backward_cpu", [&] {
    backward_kernel<scalar_t>(g_cl.data_ptr<scalar_t>(), b_cl.data_ptr<scalar_t>(),
                              grad_a_cl.data_ptr<scalar_t>(), g, /*is_b=*/false);
    backward_kernel<scalar_t>(g_cl.data_ptr<scalar_t>(), a_cl.data_ptr<scalar_t>(),
                              grad_b_cl.data_ptr<scalar_t>(), g, /*is_b=*/true);
  });
  return {grad_a_cl.permute({0, 3, 1, 2}).contiguous(), grad_b_cl.permute({0, 3, 1, 2}).contiguous()};
}

}  // namespace

TORCH_LIBRARY_IMPL(mama, CPU, m) {
  m.impl("correlation", &correlation_cpu);
  m.impl("_correlation_backward", &correlation_backward_cpu);
}
