// CPU kernels of mama::bottleneck_sim (schema in csrc/ops.cpp).
//
// Five (B,C,h,w) features are L2-normalised over channels (F.normalize, eps 1e-12), then
//   d(u, v)[b,c,y] = || u[b,c,y,:] - v[b,c,y,:] + 1e-6 ||_2      (torch.pairwise_distance)
//   term[b,c,y]    = relu(d(anchor, pos) - d(anchor, neg) + margin)
//   sim[b]         = mean over (c, y) of term
// for motion (anchor x_y, pos y4, neg x4) and label (anchor x_z, pos z4, neg x4).
// One work item is a row (b, y): it needs every channel of that row for the norms, and the
// rows (b, c, y, :) for the distances, so work items never share inputs or outputs.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <array>
#include <cmath>
#include <vector>

namespace {

constexpr double kNormEps = 1e-12;    // F.normalize's clamp on the channel norm
constexpr double kTripletEps = 1e-6;  // torch.pairwise_distance's eps on the difference

enum Feature { X4 = 0, Y4 = 1, XY = 2, Z4 = 3, XZ = 4, kFeatures = 5 };

struct Shape {
  int64_t B, C, h, w;
};

std::array<at::Tensor, kFeatures> check_features(
    const at::Tensor& x4, const at::Tensor& y4, const at::Tensor& x_y, const at::Tensor& z4,
    const at::Tensor& x_z) {
  const char* names[kFeatures] = {"x4", "y4", "x_y", "z4", "x_z"};
  std::array<at::Tensor, kFeatures> in = {x4, y4, x_y, z4, x_z};
  TORCH_CHECK(x4.dim() == 4, "bottleneck_sim: x4 must be (B,C,h,w), got ", x4.dim(), " dims");
  for (int i = 0; i < kFeatures; ++i) {
    TORCH_CHECK(in[i].device().is_cpu(), "bottleneck_sim: ", names[i], " must be a CPU tensor");
    TORCH_CHECK(in[i].sizes() == x4.sizes(), "bottleneck_sim: ", names[i], " has shape ",
                in[i].sizes(), ", expected ", x4.sizes(), " like x4");
    TORCH_CHECK(in[i].scalar_type() == x4.scalar_type(), "bottleneck_sim: ", names[i],
                " has dtype ", in[i].scalar_type(), ", expected ", x4.scalar_type(), " like x4");
    in[i] = in[i].contiguous();
  }
  TORCH_CHECK(x4.numel() > 0, "bottleneck_sim: empty features ", x4.sizes());
  return in;
}

// Inverse channel norms 1 / max(||t[b,:,y,x]||, eps) of row (b, y) for all five features,
// written to inv[f * w + x]; norm[f * w + x] keeps the norm itself (the backward needs it).
template <typename scalar_t>
void row_inverse_norms(const std::array<const scalar_t*, kFeatures>& row, const Shape& s,
                       scalar_t* norm, scalar_t* inv) {
  const int64_t plane = s.h * s.w;
  for (int f = 0; f < kFeatures; ++f) {
    scalar_t* acc = norm + f * s.w;
    for (int64_t x = 0; x < s.w; ++x) acc[x] = 0;
    for (int64_t c = 0; c < s.C; ++c) {
      const scalar_t* t = row[f] + c * plane;
      for (int64_t x = 0; x < s.w; ++x) acc[x] += t[x] * t[x];
    }
    for (int64_t x = 0; x < s.w; ++x) {
      acc[x] = std::sqrt(acc[x]);
      inv[f * s.w + x] = scalar_t(1) / std::max(acc[x], scalar_t(kNormEps));
    }
  }
}

// || a*ia - b*ib + eps ||_2 over one width row (the normalised difference of two features).
template <typename scalar_t>
scalar_t row_distance(const scalar_t* a, const scalar_t* ia, const scalar_t* b,
                      const scalar_t* ib, int64_t w) {
  scalar_t sum = 0;
  for (int64_t x = 0; x < w; ++x) {
    const scalar_t d = a[x] * ia[x] - b[x] * ib[x] + scalar_t(kTripletEps);
    sum += d * d;
  }
  return std::sqrt(sum);
}

// Pointers to row (b, channel 0, y) of each feature; channel c is at + c * h * w.
template <typename scalar_t>
std::array<const scalar_t*, kFeatures> row_pointers(const std::array<at::Tensor, kFeatures>& in,
                                                    const Shape& s, int64_t b, int64_t y) {
  std::array<const scalar_t*, kFeatures> row;
  for (int f = 0; f < kFeatures; ++f)
    row[f] = in[f].data_ptr<scalar_t>() + (b * s.C * s.h + y) * s.w;
  return row;
}

std::tuple<at::Tensor, at::Tensor> bottleneck_sim_cpu(const at::Tensor& x4, const at::Tensor& y4,
                                                      const at::Tensor& x_y, const at::Tensor& z4,
                                                      const at::Tensor& x_z, double margin) {
  auto in = check_features(x4, y4, x_y, z4, x_z);
  const Shape s{x4.size(0), x4.size(1), x4.size(2), x4.size(3)};
  auto sim_motion = at::empty({s.B}, x4.options());
  auto sim_label = at::empty({s.B}, x4.options());
  // Per-row partial sums, reduced below in a fixed order (deterministic for any thread count).
  auto partial = at::empty({2, s.B * s.h}, x4.options().dtype(at::kDouble));

  AT_DISPATCH_FLOATING_TYPES(x4.scalar_type(), "bottleneck_sim_cpu", [&] {
    double* part = partial.data_ptr<double>();
    const int64_t plane = s.h * s.w;
    at::parallel_for(0, s.B * s.h, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> norm(kFeatures * s.w), inv(kFeatures * s.w);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / s.h, y = r % s.h;
        auto row = row_pointers<scalar_t>(in, s, b, y);
        row_inverse_norms(row, s, norm.data(), inv.data());
        const scalar_t* iv = inv.data();
        double motion = 0, label = 0;
        for (int64_t c = 0; c < s.C; ++c) {
          const int64_t o = c * plane;
          const scalar_t d_neg_m = row_distance(row[XY] + o, iv + XY * s.w, row[X4] + o, iv + X4 * s.w, s.w);
          const scalar_t d_pos_m = row_distance(row[XY] + o, iv + XY * s.w, row[Y4] + o, iv + Y4 * s.w, s.w);
          const scalar_t d_neg_l = row_distance(row[XZ] + o, iv + XZ * s.w, row[X4] + o, iv + X4 * s.w, s.w);
          const scalar_t d_pos_l = row_distance(row[XZ] + o, iv + XZ * s.w, row[Z4] + o, iv + Z4 * s.w, s.w);
          motion += std::max(d_pos_m - d_neg_m + scalar_t(margin), scalar_t(0));
          label += std::max(d_pos_l - d_neg_l + scalar_t(margin), scalar_t(0));
        }
        part[r] = motion;
        part[s.B * s.h + r] = label;
      }
    });
    const double count = double(s.C * s.h);
    scalar_t* out_m = sim_motion.data_ptr<scalar_t>();
    scalar_t* out_l = sim_label.data_ptr<scalar_t>();
    for (int64_t b = 0; b < s.B; ++b) {
      double m = 0, l = 0;
      for (int64_t y = 0; y < s.h; ++y) {
        m += part[b * s.h + y];
        l += part[s.B * s.h + b * s.h + y];
      }
      out_m[b] = scalar_t(m / count);
      out_l[b] = scalar_t(l / count);
    }
  });
  return {sim_motion, sim_label};
}

// Adds g * (a*ia - b*ib + eps) / d to grad_a and subtracts it from grad_b (one width row):
// the gradient of g * d(a, b) with respect to the normalised a and b. Zero where d == 0
// (torch's norm backward convention).
template <typename scalar_t>
void add_distance_grad(scalar_t g, scalar_t d, const scalar_t* a, const scalar_t* ia,
                       const scalar_t* b, const scalar_t* ib, scalar_t* grad_a, scalar_t* grad_b,
                       int64_t w) {
  if (g == 0 || d == 0) return;
  const scalar_t k = g / d;
  for (int64_t x = 0; x < w; ++x) {
    const scalar_t v = k * (a[x] * ia[x] - b[x] * ib[x] + scalar_t(kTripletEps));
    grad_a[x] += v;
    grad_b[x] -= v;
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> bottleneck_sim_backward_cpu(
    const at::Tensor& grad_motion, const at::Tensor& grad_label, const at::Tensor& x4,
    const at::Tensor& y4, const at::Tensor& x_y, const at::Tensor& z4, const at::Tensor& x_z,
    double margin) {
  auto in = check_features(x4, y4, x_y, z4, x_z);
  const Shape s{x4.size(0), x4.size(1), x4.size(2), x4.size(3)};
  for (const auto* g : {&grad_motion, &grad_label}) {
    TORCH_CHECK(g->dim() == 1 && g->size(0) == s.B, "bottleneck_sim backward: grads must be (",
                s.B, ",), got ", g->sizes());
    TORCH_CHECK(g->device().is_cpu(), "bottleneck_sim backward: grads must be CPU tensors");
  }
  auto gm = grad_motion.to(x4.scalar_type()).contiguous();
  auto gl = grad_label.to(x4.scalar_type()).contiguous();
  std::array<at::Tensor, kFeatures> grads;
  for (int f = 0; f < kFeatures; ++f) grads[f] = at::empty(x4.sizes(), x4.options());

  AT_DISPATCH_FLOATING_TYPES(x4.scalar_type(), "bottleneck_sim_backward_cpu", [&] {
    const scalar_t* gm_p = gm.data_ptr<scalar_t>();
    const scalar_t* gl_p = gl.data_ptr<scalar_t>();
    const int64_t plane = s.h * s.w;
    const scalar_t count = scalar_t(s.C * s.h);
    at::parallel_for(0, s.B * s.h, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> norm(kFeatures * s.w), inv(kFeatures * s.w), dot(kFeatures * s.w);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / s.h, y = r % s.h;
        auto row = row_pointers<scalar_t>(in, s, b, y);
        std::array<scalar_t*, kFeatures> grow;  // this row of each gradient (channel stride plane)
        for (int f = 0; f < kFeatures; ++f)
          grow[f] = grads[f].data_ptr<scalar_t>() + (b * s.C * s.h + y) * s.w;
        row_inverse_norms(row, s, norm.data(), inv.data());
        const scalar_t* iv = inv.data();
        const scalar_t g_m = gm_p[b] / count, g_l = gl_p[b] / count;

        // Pass 1: gradient w.r.t. the normalised features, gn, written into the outputs.
        for (int64_t c = 0; c < s.C; ++c) {
          const int64_t o = c * plane;
          for (int f = 0; f < kFeatures; ++f)
            for (int64_t x = 0; x < s.w; ++x) grow[f][o + x] = 0;
          const scalar_t d_neg_m = row_distance(row[XY] + o, iv + XY * s.w, row[X4] + o, iv + X4 * s.w, s.w);
          const scalar_t d_pos_m = row_distance(row[XY] + o, iv + XY * s.w, row[Y4] + o, iv + Y4 * s.w, s.w);
          const scalar_t d_neg_l = row_distance(row[XZ] + o, iv + XZ * s.w, row[X4] + o, iv + X4 * s.w, s.w);
          const scalar_t d_pos_l = row_distance(row[XZ] + o, iv + XZ * s.w, row[Z4] + o, iv + Z4 * s.w, s.w);
          // relu'(0) = 0, as torch.relu: only strictly positive hinges pass gradient.
          if (d_pos_m - d_neg_m + scalar_t(margin) > 0) {
            add_distance_grad(g_m, d_pos_m, row[XY] + o, iv + XY * s.w, row[Y4] + o, iv + Y4 * s.w,
                              grow[XY] + o, grow[Y4] + o, s.w);
            add_distance_grad(-g_m, d_neg_m, row[XY] + o, iv + XY * s.w, row[X4] + o, iv + X4 * s.w,
                              grow[XY] + o, grow[X4] + o, s.w);
          }
          if (d_pos_l - d_neg_l + scalar_t(margin) > 0) {
            add_distance_grad(g_l, d_pos_l, row[XZ] + o, iv + XZ * s.w, row[Z4] + o, iv + Z4 * s.w,
                              grow[XZ] + o, grow[Z4] + o, s.w);
            add_distance_grad(-g_l, d_neg_l, row[XZ] + o, iv + XZ * s.w, row[X4] + o, iv + X4 * s.w,
                              grow[XZ] + o, grow[X4] + o, s.w);
          }
        }
        // Pass 2: <gn, n> over channels per pixel, n = t * inv.
        for (int64_t i = 0; i < kFeatures * s.w; ++i) dot[i] = 0;
        for (int64_t c = 0; c < s.C; ++c) {
          const int64_t o = c * plane;
          for (int f = 0; f < kFeatures; ++f) {
            scalar_t* dt = dot.data() + f * s.w;
            for (int64_t x = 0; x < s.w; ++x) dt[x] += grow[f][o + x] * row[f][o + x];
          }
        }
        // Pass 3: through n = t / max(r, eps): (gn - n <gn, n>) / r where r >= eps, else gn / eps.
        for (int f = 0; f < kFeatures; ++f) {
          const scalar_t* iv_f = iv + f * s.w;
          const scalar_t* r_f = norm.data() + f * s.w;
          scalar_t* dt = dot.data() + f * s.w;
          for (int64_t x = 0; x < s.w; ++x)  // dot held <gn, t>; make it <gn, n> * inv = <gn,t>*inv^2
            dt[x] = r_f[x] >= scalar_t(kNormEps) ? dt[x] * iv_f[x] * iv_f[x] : scalar_t(0);
          for (int64_t c = 0; c < s.C; ++c) {
            const int64_t o = c * plane;
            for (int64_t x = 0; x < s.w; ++x)
              grow[f][o + x] = (grow[f][o + x] - row[f][o + x] * dt[x]) * iv_f[x];
          }
        }
      }
    });
  });
  return {grads[X4], grads[Y4], grads[XY], grads[Z4], grads[XZ]};
}

}  // namespace

TORCH_LIBRARY_IMPL(mama, CPU, m) {
  m.impl("bottleneck_sim", &bottleneck_sim_cpu);
  m.impl("_bottleneck_sim_backward", &bottleneck_sim_backward_cpu);
}
