// CPU kernels of mama::patch_destroy_loss (schema in csrc/ops.cpp).
//
// For every sample and every non-overlapping patch x patch tile:
//   s    = SSIM(N_tile, GT_tile)  (Gaussian window min(11, patch), sigma 1.5, valid conv,
//          dynamic range L picked from N_tile: max 255 if max > 128 else 1, min -1 if
//          min < -0.5 else 0; mean of the SSIM map over channels and positions)
//   diff = min(ld * (1 - s), 1)
//   loss = diff * mean((BG - G)^2) + (1 - diff) * mean((A - G)^2)
// summed over tiles and samples. One work item is one tile; the Gaussian conv is separable
// (horizontal then vertical pass over a per-thread scratch). Only G takes gradient:
//   dloss/dG = 2 / n * (diff * (G - BG) + (1 - diff) * (G - A)),  n = C * patch * patch.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <vector>

namespace {

constexpr int64_t kMaxWindow = 11;
constexpr double kSigma = 1.5;

struct Tiling {
  int64_t B, C, H, W, patch, rows, cols;  // rows x cols tiles per image
  int64_t window, valid;                  // Gaussian window; valid = patch - window + 1
  int64_t tiles() const { return B * rows * cols; }
  // Offset of the tile's top-left pixel in channel 0.
  int64_t origin(int64_t tile) const {
    const int64_t b = tile / (rows * cols), rc = tile % (rows * cols);
    return b * C * H * W + (rc / cols) * patch * W + (rc % cols) * patch;
  }
};

const char* kNames[5] = {"A", "N", "GT", "G", "BG"};

Tiling check_inputs(std::array<at::Tensor, 5>& in, int64_t patch) {
  const at::Tensor& A = in[0];
  TORCH_CHECK(A.dim() == 4, "patch_destroy_loss: expected (B,C,H,W) tensors, got shape ",
              A.sizes());
  for (int i = 0; i < 5; ++i) {
    TORCH_CHECK(in[i].sizes() == A.sizes(), "patch_destroy_loss: ", kNames[i], " has shape ",
                in[i].sizes(), ", expected ", A.sizes(), " like A");
    TORCH_CHECK(in[i].device().is_cpu(), "patch_destroy_loss: ", kNames[i],
                " must be a CPU tensor");
    TORCH_CHECK(in[i].scalar_type() == A.scalar_type(), "patch_destroy_loss: ", kNames[i],
                " has dtype ", in[i].scalar_type(), ", expected ", A.scalar_type(), " like A");
    in[i] = in[i].contiguous();
  }
  const int64_t H = A.size(2), W = A.size(3);
  TORCH_CHECK(patch >= 1 && H % patch == 0 && W % patch == 0, "patch_destroy_loss: H and W (",
              H, "x", W, ") must be multiples of patch (", patch, ")");
  TORCH_CHECK(A.numel() > 0, "patch_destroy_loss: empty inputs ", A.sizes());
  const int64_t window = std::min(kMaxWindow, patch);
  return {A.size(0), A.size(1), H, W, patch, H / patch, W / patch, window, patch - window + 1};
}

// Normalised 1-D Gaussian centred at window / 2 (the 2-D window is its outer product).
template <typename scalar_t>
std::vector<scalar_t> gaussian(int64_t window) {
  std::vector<double> g(window);
  double sum = 0;
  for (int64_t i = 0; i < window; ++i) {
    const double x = double(i - window / 2);
    g[i] = std::exp(-x * x / (2 * kSigma * kSigma));
    sum += g[i];
  }
  std::vector<scalar_t> out(window);
  for (int64_t i = 0; i < window; ++i) out[i] = scalar_t(g[i] / sum);
  return out;
}

// Scratch per thread for tile_diff: 5 planes of patch x valid (the horizontal pass of mu1,
// mu2, E[x^2], E[y^2], E[xy]) and 5 rows of valid (the vertical pass of one output row).
int64_t scratch_size(const Tiling& t) { return 5 * t.patch * t.valid + 5 * t.valid; }

// diff = min(ld * (1 - SSIM(N_tile, GT_tile)), 1) of one tile.
template <typename scalar_t>
scalar_t tile_diff(const scalar_t* n, const scalar_t* gt, const Tiling& t,
                   const std::vector<scalar_t>& g, double ld, std::vector<scalar_t>& scratch) {
  const int64_t P = t.patch, V = t.valid, K = t.window, plane_in = t.H * t.W;
  // Dynamic range from N's tile.
  scalar_t hi = -std::numeric_limits<scalar_t>::infinity();
  scalar_t lo = std::numeric_limits<scalar_t>::infinity();
  for (int64_t c = 0; c < t.C; ++c)
    for (int64_t r = 0; r < P; ++r) {
      const scalar_t* row = n + c * plane_in + r * t.W;
      for (int64_t x = 0; x < P; ++x) {
        hi = std::max(hi, row[x]);
        lo = std::min(lo, row[x]);
      }
    }
  const scalar_t L = (hi > scalar_t(128) ? scalar_t(255) : scalar_t(1)) -
                     (lo < scalar_t(-0.5) ? scalar_t(-1) : scalar_t(0));
  const scalar_t c1 = (scalar_t(0.01) * L) * (scalar_t(0.01) * L);
  const scalar_t c2 = (scalar_t(0.03) * L) * (scalar_t(0.03) * L);

  const int64_t hp = P * V;  // one horizontal-pass plane
  scalar_t *h_x = scratch.data(), *h_y = h_x + hp, *h_xx = h_y + hp, *h_yy = h_xx + hp,
           *h_xy = h_yy + hp;
  double ssim_sum = 0;
  for (int64_t c = 0; c < t.C; ++c) {
    // Horizontal pass: every row of the tile, valid columns.
    for (int64_t r = 0; r < P; ++r) {
      const scalar_t* xr = n + c * plane_in + r * t.W;
      const scalar_t* yr = gt + c * plane_in + r * t.W;
      scalar_t* o_x = h_x + r * V;
      scalar_t* o_y = h_y + r * V;
      scalar_t* o_xx = h_xx + r * V;
      scalar_t* o_yy = h_yy + r * V;
      scalar_t* o_xy = h_xy + r * V;
      for (int64_t j = 0; j < V; ++j) o_x[j] = o_y[j] = o_xx[j] = o_yy[j] = o_xy[j] = 0;
      for (int64_t k = 0; k < K; ++k) {
        const scalar_t gk = g[k];
        for (int64_t j = 0; j < V; ++j) {
          const scalar_t a = xr[j + k], b = yr[j + k];
          o_x[j] += gk * a;
          o_y[j] += gk * b;
          o_xx[j] += gk * a * a;
          o_yy[j] += gk * b * b;
          o_xy[j] += gk * a * b;
        }
      }
    }
    // Vertical pass and the SSIM map, one valid output row at a time.
    scalar_t* acc = h_xy + hp;
    scalar_t *mu1 = acc, *mu2 = acc + V, *exx = acc + 2 * V, *eyy = acc + 3 * V, *exy = acc + 4 * V;
    for (int64_t i = 0; i < V; ++i) {
      for (int64_t j = 0; j < 5 * V; ++j) acc[j] = 0;
      for (int64_t k = 0; k < K; ++k) {
        const scalar_t gk = g[k];
        const int64_t r = (i + k) * V;
        for (int64_t j = 0; j < V; ++j) {
          mu1[j] += gk * h_x[r + j];
          mu2[j] += gk * h_y[r + j];
          exx[j] += gk * h_xx[r + j];
          eyy[j] += gk * h_yy[r + j];
          exy[j] += gk * h_xy[r + j];
        }
      }
      double row_sum = 0;
      for (int64_t j = 0; j < V; ++j) {
        const scalar_t m1 = mu1[j], m2 = mu2[j];
        const scalar_t s11 = exx[j] - m1 * m1, s22 = eyy[j] - m2 * m2, s12 = exy[j] - m1 * m2;
        row_sum += ((2 * m1 * m2 + c1) * (2 * s12 + c2)) /
                   ((m1 * m1 + m2 * m2 + c1) * (s11 + s22 + c2));
      }
      ssim_sum += row_sum;
    }
  }
  const double ssim = ssim_sum / double(t.C * V * V);
  return scalar_t(std::min(ld * (1.0 - ssim), 1.0));
}

at::Tensor patch_destroy_loss_cpu(const at::Tensor& A, const at::Tensor& N, const at::Tensor& GT,
                                  const at::Tensor& G, const at::Tensor& BG, int64_t patch,
                                  double ld) {
  std::array<at::Tensor, 5> in = {A, N, GT, G, BG};
  const Tiling t = check_inputs(in, patch);
  auto out = at::empty({}, A.options());
  // Per-tile losses, summed below in a fixed order (deterministic for any thread count).
  std::vector<double> tile_loss(t.tiles());

  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "patch_destroy_loss_cpu", [&] {
    const auto g = gaussian<scalar_t>(t.window);
    const scalar_t *a = in[0].data_ptr<scalar_t>(), *n = in[1].data_ptr<scalar_t>(),
                   *gt = in[2].data_ptr<scalar_t>(), *gg = in[3].data_ptr<scalar_t>(),
                   *bg = in[4].data_ptr<scalar_t>();
    const int64_t plane = t.H * t.W, P = t.patch;
    at::parallel_for(0, t.tiles(), 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(scratch_size(t));
      for (int64_t tile = begin; tile < end; ++tile) {
        const int64_t o = t.origin(tile);
        const scalar_t diff = tile_diff(n + o, gt + o, t, g, ld, scratch);
        double sum_bg = 0, sum_a = 0;
        for (int64_t c = 0; c < t.C; ++c)
          for (int64_t r = 0; r < P; ++r) {
            const int64_t ro = o + c * plane + r * t.W;
            for (int64_t x = 0; x < P; ++x) {
              const scalar_t db = bg[ro + x] - gg[ro + x], da = a[ro + x] - gg[ro + x];
              sum_bg += db * db;
              sum_a += da * da;
            }
          }
        const double count = double(t.C * P * P);
        tile_loss[tile] = double(diff) * (sum_bg / count) + (1 - double(diff)) * (sum_a / count);
      }
    });
    double total = 0;
    for (double v : tile_loss) total += v;
    out.fill_(total);
  });
  return out;
}

at::Tensor patch_destroy_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& A,
                                           const at::Tensor& N, const at::Tensor& GT,
                                           const at::Tensor& G, const at::Tensor& BG,
                                           int64_t patch, double ld) {
  std::array<at::Tensor, 5> in = {A, N, GT, G, BG};
  const Tiling t = check_inputs(in, patch);
  TORCH_CHECK(grad.numel() == 1, "patch_destroy_loss backward: grad must be a scalar, got shape ",
              grad.sizes());
  const double g_out = grad.item<double>();
  auto grad_G = at::empty(G.sizes(), G.options());

  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "patch_destroy_loss_backward_cpu", [&] {
    const auto g = gaussian<scalar_t>(t.window);
    const scalar_t *a = in[0].data_ptr<scalar_t>(), *n = in[1].data_ptr<scalar_t>(),
                   *gt = in[2].data_ptr<scalar_t>(), *gg = in[3].data_ptr<scalar_t>(),
                   *bg = in[4].data_ptr<scalar_t>();
    scalar_t* out = grad_G.data_ptr<scalar_t>();
    const int64_t plane = t.H * t.W, P = t.patch;
    const scalar_t scale = scalar_t(2 * g_out / double(t.C * P * P));
    at::parallel_for(0, t.tiles(), 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(scratch_size(t));
      for (int64_t tile = begin; tile < end; ++tile) {
        const int64_t o = t.origin(tile);
        const scalar_t diff = tile_diff(n + o, gt + o, t, g, ld, scratch);
        const scalar_t w_bg = scale * diff, w_a = scale * (1 - diff);
        for (int64_t c = 0; c < t.C; ++c)
          for (int64_t r = 0; r < P; ++r) {
            const int64_t ro = o + c * plane + r * t.W;
            for (int64_t x = 0; x < P; ++x)
              out[ro + x] = w_bg * (gg[ro + x] - bg[ro + x]) + w_a * (gg[ro + x] - a[ro + x]);
          }
      }
    });
  });
  return grad_G;
}

}  // namespace

TORCH_LIBRARY_IMPL(mama, CPU, m) {
  m.impl("patch_destroy_loss", &patch_destroy_loss_cpu);
  m.impl("_patch_destroy_loss_backward", &patch_destroy_loss_backward_cpu);
}
