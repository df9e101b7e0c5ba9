// CPU kernels of mama::warp and mama::warp_residual and their backward ops (schemas in
// csrc/ops.cpp). Bilinear backward warp with FlowNet2 Resample2d semantics: the weights come from
// the unclamped fractional sample position, the four neighbour indices are each clamped to the
// image. warp_residual also returns, from the same pass, the per-pixel L2 norm over channels of
// img0 - warped (FlowNet2's ChannelNorm).
//
// Work split: forward and grad_flow run over (batch, row) pairs, computing a row's taps once and
// reusing them for every channel; grad_img is a scatter-add, so it runs over (batch, channel)
// planes, each owned by one thread (no races, no atomics).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

// The four neighbours of one sample point: flat indices into an H*W plane, their bilinear
// weights, and the fractional position (alpha, beta) the flow gradient needs.
template <typename scalar_t>
struct Taps {
  int64_t top_left, top_right, bottom_left, bottom_right;
  scalar_t w_top_left, w_top_right, w_bottom_left, w_bottom_right;
  scalar_t alpha, beta;
};

// Clamped neighbour pair (floor, floor + 1) of a coordinate along an axis of `size` pixels.
// The floor is clamped in floating point first (fmax/fmin also send NaN into range) so the
// integer cast is always defined; clamping it to [-1, size - 1] keeps both clamped indices.
template <typename scalar_t>
inline void neighbours(scalar_t floor_pos, int64_t size, int64_t& low, int64_t& high) {
  const scalar_t f = std::fmin(std::fmax(floor_pos, scalar_t(-1)), scalar_t(size - 1));
  const int64_t i = static_cast<int64_t>(f);
  low = std::max<int64_t>(i, 0);
  high = std::min<int64_t>(i + 1, size - 1);
}

// Taps of every pixel of row y, sampled at (x + flow_x[x], y + flow_y[x]).
template <typename scalar_t>
void row_taps(const scalar_t* flow_x, const scalar_t* flow_y, int64_t y, int64_t H, int64_t W,
              Taps<scalar_t>* taps) {
  for (int64_t x = 0; x < W; ++x) {
    const scalar_t px = static_cast<scalar_t>(x) + flow_x[x];
    const scalar_t py = static_cast<scalar_t>(y) + flow_y[x];
    const scalar_t x0 = std::floor(px), y0 = std::floor(py);
    const scalar_t a = px - x0, b = py - y0;  // unclamped, as Resample2d
    int64_t left, right, top, bottom;
    neighbours(x0, W, left, right);
    neighbours(y0, H, top, bottom);
    Taps<scalar_t>& t = taps[x];
    t.top_left = top * W + left;
    t.top_right = top * W + right;
    t.bottom_left = bottom * W + left;
    t.bottom_right = bottom * W + right;
    t.w_top_left = (1 - a) * (1 - b);
    t.w_top_right = a * (1 - b);
    t.w_bottom_left = (1 - a) * b;
    t.w_bottom_right = a * b;
    t.alpha = a;
    t.beta = b;
  }
}

template <typename scalar_t>
inline scalar_t sample(const scalar_t* plane, const Taps<scalar_t>& t) {
  return t.w_top_left * plane[t.top_left] + t.w_top_right * plane[t.top_right] +
         t.w_bottom_left * plane[t.bottom_left] + t.w_bottom_right * plane[t.bottom_right];
}

// Items (rows or planes of `item_size` elements) per parallel chunk: enough work to amortise the
// thread hand-off; a problem smaller than one chunk runs inline, without waking any thread.
constexpr int64_t kElementsPerChunk = 16384;
int64_t grain_for(int64_t item_size) {
  return std::max<int64_t>(1, kElementsPerChunk / std::max<int64_t>(1, item_size));
}

void check_image_and_flow(const char* op, const char* img_name, const at::Tensor& img,
                          const at::Tensor& flow) {
  TORCH_CHECK(img.dim() == 4, op, ": ", img_name, " must be a 4-D (B, C, H, W) tensor, got shape ",
              img.sizes());
  TORCH_CHECK(flow.dim() == 4 && flow.size(0) == img.size(0) && flow.size(1) == 2 &&
                  flow.size(2) == img.size(2) && flow.size(3) == img.size(3),
              op, ": flow must have shape (B, 2, H, W) = (", img.size(0), ", 2, ", img.size(2), ", ",
              img.size(3), ") to match ", img_name, ", got ", flow.sizes());
  TORCH_CHECK(img.scalar_type() == at::kFloat || img.scalar_type() == at::kDouble, op, ": ",
              img_name, " must be float32 or float64, got ", img.scalar_type());
  TORCH_CHECK(flow.scalar_type() == img.scalar_type(), op, ": flow dtype ", flow.scalar_type(),
              " must match ", img_name, " dtype ", img.scalar_type());
  TORCH_CHECK(img.device().is_cpu() && flow.device().is_cpu(), op,
              ": CPU kernel got tensors on ", img.device(), " and ", flow.device());
}

void check_same(const char* op, const char* name, const at::Tensor& t, const char* like_name,
                const at::Tensor& like) {
  TORCH_CHECK(t.sizes() == like.sizes(), op, ": ", name, " must have the shape of ", like_name, " ",
              like.sizes(), ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name, " dtype ", t.scalar_type(),
              " must match ", like_name, " dtype ", like.scalar_type());
  TORCH_CHECK(t.device().is_cpu(), op, ": CPU kernel got ", name, " on ", t.device());
}

// Forward of both ops: out = warp(img, flow); with img0 given, also norm = |img0 - out| over C.
template <typename scalar_t>
void warp_forward_kernel(const scalar_t* img, const scalar_t* flow, const scalar_t* img0,
                         scalar_t* out, scalar_t* norm, int64_t B, int64_t C, int64_t H,
                         int64_t W) {
  const int64_t HW = H * W;
  at::parallel_for(0, B * H, grain_for(C * W), [&](int64_t begin, int64_t end) {
    std::vector<Taps<scalar_t>> taps(W);
    std::vector<scalar_t> squares(norm ? W : 0);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H, y = row % H;
      const scalar_t* flow_b = flow + b * 2 * HW + y * W;
      row_taps(flow_b, flow_b + HW, y, H, W, taps.data());
      std::fill(squares.begin(), squares.end(), scalar_t(0));
      for (int64_t c = 0; c < C; ++c) {
        const int64_t plane = (b * C + c) * HW;
        const scalar_t* src = img + plane;
        scalar_t* dst = out + plane + y * W;
        for (int64_t x = 0; x < W; ++x) dst[x] = sample(src, taps[x]);
        if (norm) {
          const scalar_t* ref = img0 + plane + y * W;
          for (int64_t x = 0; x < W; ++x) {
            const scalar_t d = ref[x] - dst[x];
            squares[x] += d * d;
          }
        }
      }
      if (norm) {
        scalar_t* n = norm + b * HW + y * W;
        for (int64_t x = 0; x < W; ++x) n[x] = std::sqrt(squares[x]);
      }
    }
  });
}

// Backward of warp for upstream gradient g (B,C,H,W): grad_img by scatter-add of the bilinear
// weights, grad_flow from the derivative of the weights in alpha and beta (d alpha / d flow_x = 1
// everywhere, also where the indices were clamped, as the forward uses unclamped weights).
template <typename scalar_t>
void warp_backward_kernel(const scalar_t* g, const scalar_t* img, const scalar_t* flow,
                          scalar_t* grad_img, scalar_t* grad_flow, int64_t B, int64_t C, int64_t H,
                          int64_t W) {
  const int64_t HW = H * W;
  // grad_img: one (batch, channel) plane per task, so the scatter-adds never race.
  at::parallel_for(0, B * C, grain_for(HW), [&](int64_t begin, int64_t end) {
    std::vector<Taps<scalar_t>> taps(W);
    for (int64_t plane_id = begin; plane_id < end; ++plane_id) {
      const int64_t b = plane_id / C;
      scalar_t* dst = grad_img + plane_id * HW;
      std::fill(dst, dst + HW, scalar_t(0));
      for (int64_t y = 0; y < H; ++y) {
        const scalar_t* flow_b = flow + b * 2 * HW + y * W;
        row_taps(flow_b, flow_b + HW, y, H, W, taps.data());
        const scalar_t* g_row = g + plane_id * HW + y * W;
        for (int64_t x = 0; x < W; ++x) {
          const Taps<scalar_t>& t = taps[x];
          dst[t.top_left] += t.w_top_left * g_row[x];
          dst[t.top_right] += t.w_top_right * g_row[x];
          dst[t.bottom_left] += t.w_bottom_left * g_row[x];
          dst[t.bottom_right] += t.w_bottom_right * g_row[x];
        }
      }
    }
  });
  // grad_flow: one (batch, row) per task, summing over channels in row buffers.
  at::parallel_for(0, B * H, grain_for(C * W), [&](int64_t begin, int64_t end) {
    std::vector<Taps<scalar_t>> taps(W);
    std::vector<scalar_t> gx(W), gy(W);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H, y = row % H;
      const scalar_t* flow_b = flow + b * 2 * HW + y * W;
      row_taps(flow_b, flow_b + HW, y, H, W, taps.data());
      std::fill(gx.begin(), gx.end(), scalar_t(0));
      std::fill(gy.begin(), gy.end(), scalar_t(0));
      for (int64_t c = 0; c < C; ++c) {
        const int64_t plane = (b * C + c) * HW;
        const scalar_t* src = img + plane;
        const scalar_t* g_row = g + plane + y * W;
        for (int64_t x = 0; x < W; ++x) {
          const Taps<scalar_t>& t = taps[x];
          const scalar_t tl = src[t.top_left], tr = src[t.top_right];
          const scalar_t bl = src[t.bottom_left], br = src[t.bottom_right];
          gx[x] += g_row[x] * ((1 - t.beta) * (tr - tl) + t.beta * (br - bl));
          gy[x] += g_row[x] * ((1 - t.alpha) * (bl - tl) + t.alpha * (br - tr));
        }
      }
      scalar_t* out_b = grad_flow + b * 2 * HW + y * W;
      std::copy(gx.begin(), gx.end(), out_b);
      std::copy(gy.begin(), gy.end(), out_b + HW);
    }
  });
}

at::Tensor warp_cpu(const at::Tensor& img_in, const at::Tensor& flow_in) {
  check_image_and_flow("warp", "img", img_in, flow_in);
  const at::Tensor img = img_in.contiguous(), flow = flow_in.contiguous();
  const int64_t B = img.size(0), C = img.size(1), H = img.size(2), W = img.size(3);
  at::Tensor out = at::empty({B, C, H, W}, img.options());
  AT_DISPATCH_FLOATING_TYPES(img.scalar_type(), "warp_cpu", [&] {
    warp_forward_kernel<scalar_t>(img.data_ptr<scalar_t>(), flow.data_ptr<scalar_t>(), nullptr,
                                  out.data_ptr<scalar_t>(), nullptr, B, C, H, W);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> warp_backward_cpu(const at::Tensor& grad_in,
                                                     const at::Tensor& img_in,
                                                     const at::Tensor& flow_in) {
  check_image_and_flow("_warp_backward", "img", img_in, flow_in);
  check_same("_warp_backward", "grad_out", grad_in, "img", img_in);
  const at::Tensor g = grad_in.contiguous(), img = img_in.contiguous(), flow = flow_in.contiguous();
  const int64_t B = img.size(0), C = img.size(1), H = img.size(2), W = img.size(3);
  at::Tensor grad_img = at::empty({B, C, H, W}, img.options());
  at::Tensor grad_flow = at::empty({B, 2, H, W}, img.options());
  AT_DISPATCH_FLOATING_TYPES(img.scalar_type(), "warp_backward_cpu", [&] {
    warp_backward_kernel<scalar_t>(g.data_ptr<scalar_t>(), img.data_ptr<scalar_t>(),
                                   flow.data_ptr<scalar_t>(), grad_img.data_ptr<scalar_t>(),
                                   grad_flow.data_ptr<scalar_t>(), B, C, H, W);
  });
  return {grad_img, grad_flow};
}

std::tuple<at::Tensor, at::Tensor> warp_residual_cpu(const at::Tensor& img0_in,
                                                     const at::Tensor& img1_in,
                                                     const at::Tensor& flow_in) {
  check_image_and_flow("warp_residual", "img1", img1_in, flow_in);
  check_same("warp_residual", "img0", img0_in, "img1", img1_in);
  const at::Tensor img0 = img0_in.contiguous(), img1 = img1_in.contiguous();
  const at::Tensor flow = flow_in.contiguous();
  const int64_t B = img1.size(0), C = img1.size(1), H = img1.size(2), W = img1.size(3);
  at::Tensor warped = at::empty({B, C, H, W}, img1.options());
  at::Tensor norm = at::empty({B, 1, H, W}, img1.options());
  AT_DISPATCH_FLOATING_TYPES(img1.scalar_type(), "warp_residual_cpu", [&] {
    warp_forward_kernel<scalar_t>(img1.data_ptr<scalar_t>(), flow.data_ptr<scalar_t>(),
                                  img0.data_ptr<scalar_t>(), warped.data_ptr<scalar_t>(),
                                  norm.data_ptr<scalar_t>(), B, C, H, W);
  });
  return {warped, norm};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> warp_residual_backward_cpu(
    const at::Tensor& grad_warped_in, const at::Tensor& grad_norm_in, const at::Tensor& img0_in,
    const at::Tensor& img1_in, const at::Tensor& flow_in, const at::Tensor& warped_in,
    const at::Tensor& norm_in) {
  const char* op = "_warp_residual_backward";
  check_image_and_flow(op, "img1", img1_in, flow_in);
  check_same(op, "img0", img0_in, "img1", img1_in);
  check_same(op, "warped", warped_in, "img1", img1_in);
  check_same(op, "grad_warped", grad_warped_in, "img1", img1_in);
  check_same(op, "grad_norm", grad_norm_in, "norm", norm_in);
  TORCH_CHECK(norm_in.dim() == 4 && norm_in.size(0) == img1_in.size(0) && norm_in.size(1) == 1 &&
                  norm_in.size(2) == img1_in.size(2) && norm_in.size(3) == img1_in.size(3),
              op, ": norm must have shape (B, 1, H, W), got ", norm_in.sizes());
  const at::Tensor grad_warped = grad_warped_in.contiguous(), grad_norm = grad_norm_in.contiguous();
  const at::Tensor img0 = img0_in.contiguous(), img1 = img1_in.contiguous();
  const at::Tensor flow = flow_in.contiguous(), warped = warped_in.contiguous();
  const at::Tensor norm = norm_in.contiguous();
  const int64_t B = img1.size(0), C = img1.size(1), H = img1.size(2), W = img1.size(3);
  const int64_t HW = H * W;
  at::Tensor grad_img0 = at::empty({B, C, H, W}, img1.options());
  at::Tensor grad_img1 = at::empty({B, C, H, W}, img1.options());
  at::Tensor grad_flow = at::empty({B, 2, H, W}, img1.options());
  // Total upstream gradient reaching `warped`: its own, minus what the norm sends to img0.
  at::Tensor grad_total = at::empty({B, C, H, W}, img1.options());
  AT_DISPATCH_FLOATING_TYPES(img1.scalar_type(), "warp_residual_backward_cpu", [&] {
    const scalar_t* gw = grad_warped.data_ptr<scalar_t>();
    const scalar_t* gn = grad_norm.data_ptr<scalar_t>();
    const scalar_t* i0 = img0.data_ptr<scalar_t>();
    const scalar_t* wp = warped.data_ptr<scalar_t>();
    const scalar_t* n = norm.data_ptr<scalar_t>();
    scalar_t* g0 = grad_img0.data_ptr<scalar_t>();
    scalar_t* gt = grad_total.data_ptr<scalar_t>();
    at::parallel_for(0, B * H, grain_for(C * W), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scale(W);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / H, y = row % H;
        // d|d|/dd = d / |d|; where the norm is 0 (img0 == warped over all channels) the
        // gradient is defined as 0, as torch.linalg.vector_norm and FlowNet2's ChannelNorm do.
        for (int64_t x = 0; x < W; ++x) {
          const scalar_t nv = n[b * HW + y * W + x];
          scale[x] = nv > 0 ? gn[b * HW + y * W + x] / nv : scalar_t(0);
        }
        for (int64_t c = 0; c < C; ++c) {
          const int64_t offset = (b * C + c) * HW + y * W;
          for (int64_t x = 0; x < W; ++x) {
            const scalar_t d_img0 = scale[x] * (i0[offset + x] - wp[offset + x]);
            g0[offset + x] = d_img0;
            gt[offset + x] = gw[offset + x] - d_img0;
          }
        }
      }
    });
    warp_backward_kernel<scalar_t>(gt, img1.data_ptr<scalar_t>(), flow.data_ptr<scalar_t>(),
                                   grad_img1.data_ptr<scalar_t>(), grad_flow.data_ptr<scalar_t>(),
                                   B, C, H, W);
  });
  return {grad_img0, grad_img1, grad_flow};
}

}  // namespace

TORCH_LIBRARY_IMPL(mama, CPU, m) {
  m.impl("warp", &warp_cpu);
  m.impl("_warp_backward", &warp_backward_cpu);
  m.impl("warp_residual", &warp_residual_cpu);
  m.impl("_warp_residual_backward", &warp_residual_backward_cpu);
}
