// CPU kernel of mama::winograd_conv3x3 (schema in csrc/ops.cpp): a frozen 3x3 stride-1
// convolution with zero padding == dilation, by Winograd's minimal filtering F(2x2, 3x3)
// (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
//
// Each 2x2 output tile is A^T [U (.) (B^T d B)] A for its 4x4 input tile d: 16 products per
// tile instead of 36 (2.25x fewer multiply-adds). U = G g G^T is transformed once, in Python
// (mama.models.inference.winograd_filter), laid out (16, C, K). Per block of tiles:
//   1. input transform of every tile into V (16, tiles, C), channels contiguous;
//   2. 16 GEMMs V[i] (tiles x C) @ U[i] (C x K) -> M (16, tiles, K), one at::bmm_out call;
//   3. output transform of M into the output pixels, + bias, optional ReLU.
// Blocks keep V and M cache-sized, so on large maps the transforms do not stream the 4x
// larger V / M through main memory. Blocks are independent: parallel over blocks, no atomics.
//
// Dilation d: the output pixels (y0 + d*a, x0 + d*b), a, b in {0, 1}, form a tile whose input
// taps are (y0 + d*(r-1), x0 + d*(s-1)), r, s in 0..3 (the d x d interleaved sub-images are
// ordinary 3x3 convolutions). Tiles are enumerated per residue (y0 mod d, x0 mod d).
//
// Layout: x is read channels-last (B, H, W, C) and the output is written channels-last.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <vector>

namespace {

#if defined(__x86_64__) && defined(__GNUC__)
#define MAMA_SIMD_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define MAMA_SIMD_CLONES
#endif

struct Geometry {
  int64_t n, c, h, w, k, d;
  int64_t th, tw;  // tiles per residue class along y and x
  int64_t tiles;   // n * d * d * th * tw
};

// Tile index -> (batch, top-left output pixel). Tiles of one residue class are contiguous.
struct TileOrigin {
  int64_t b, y0, x0;
};

TileOrigin tile_origin(const Geometry& g, int64_t t) {
  const int64_t tj = t % g.tw;
  t /= g.tw;
  const int64_t ti = t % g.th;
  t /= g.th;
  const int64_t rx = t % g.d;
  t /= g.d;
  const int64_t ry = t % g.d;
  const int64_t b = t / g.d;
  return {b, ry + 2 * g.d * ti, rx + 2 * g.d * tj};
}

// B^T d B for one tile, over all channels: src[r*4+s] points at the C channels of input tap
// (r, s) (or at zeros), dst[i*4+j] at V's C channels for tile position (i, j).
MAMA_SIMD_CLONES
void input_transform(const float* const* src, float* const* dst, int64_t C) {
  const float *d00 = src[0], *d01 = src[1], *d02 = src[2], *d03 = src[3];
  const float *d10 = src[4], *d11 = src[5], *d12 = src[6], *d13 = src[7];
  const float *d20 = src[8], *d21 = src[9], *d22 = src[10], *d23 = src[11];
  const float *d30 = src[12], *d31 = src[13], *d32 = src[14], *d33 = src[15];
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    // Rows: t_i = (B^T d)_i for each column s.
    const float t00 = d00[c] - d20[c], t01 = d01[c] - d21[c], t02 = d02[c] - d22[c], t03 = d03[c] - d23[c];
    const float t10 = d10[c] + d20[c], t11 = d11[c] + d21[c], t12 = d12[c] + d22[c], t13 = d13[c] + d23[c];
    const float t20 = d20[c] - d10[c], t21 = d21[c] - d11[c], t22 = d22[c] - d12[c], t23 = d23[c] - d13[c];
    const float t30 = d10[c] - d30[c], t31 = d11[c] - d31[c], t32 = d12[c] - d32[c], t33 = d13[c] - d33[c];
    // Columns: (t B)_j.
    dst[0][c] = t00 - t02;  dst[1][c] = t01 + t02;  dst[2][c] = t02 - t01;  dst[3][c] = t01 - t03;
    dst[4][c] = t10 - t12;  dst[5][c] = t11 + t12;  dst[6][c] = t12 - t11;  dst[7][c] = t11 - t13;
    dst[8][c] = t20 - t22;  dst[9][c] = t21 + t22;  dst[10][c] = t22 - t21; dst[11][c] = t21 - t23;
    dst[12][c] = t30 - t32; dst[13][c] = t31 + t32; dst[14][c] = t32 - t31; dst[15][c] = t31 - t33;
  }
}

// A^T m A for one tile, over all output channels: m[i*4+j] points at M's K values for tile
// position (i, j); out[a*2+b] at output pixel (a, b)'s K channels (a scratch row when the
// pixel is outside the image).
MAMA_SIMD_CLONES
void output_transform(const float* const* m, float* const* out, const float* bias, bool relu, int64_t K) {
  const float *m00 = m[0], *m01 = m[1], *m02 = m[2], *m03 = m[3];
  const float *m10 = m[4], *m11 = m[5], *m12 = m[6], *m13 = m[7];
  const float *m20 = m[8], *m21 = m[9], *m22 = m[10], *m23 = m[11];
  const float *m30 = m[12], *m31 = m[13], *m32 = m[14], *m33 = m[15];
  float *o00 = out[0], *o01 = out[1], *o10 = out[2], *o11 = out[3];
  const float lo = relu ? 0.0f : -std::numeric_limits<float>::infinity();
#pragma omp simd
  for (int64_t k = 0; k < K; ++k) {
    const float r00 = m00[k] + m10[k] + m20[k], r01 = m01[k] + m11[k] + m21[k];
    const float r02 = m02[k] + m12[k] + m22[k], r03 = m03[k] + m13[k] + m23[k];
    const float r10 = m10[k] - m20[k] - m30[k], r11 = m11[k] - m21[k] - m31[k];
    const float r12 = m12[k] - m22[k] - m32[k], r13 = m13[k] - m23[k] - m33[k];
    const float bk = bias != nullptr ? bias[k] : 0.0f;
    o00[k] = std::max(r00 + r01 + r02 + bk, lo);
    o01[k] = std::max(r01 - r02 - r03 + bk, lo);
    o10[k] = std::max(r10 + r11 + r12 + bk, lo);
    o11[k] = std::max(r11 - r12 - r13 + bk, lo);
  }
}

// Tiles per block: 128 rows per GEMM reuse each U[i] enough, and the block's V and M
// (16 x 128 x (C + K) floats: 2 MB at C = K = 128) stay in cache. A sweep over 32..1024 on
// the shapes of the generator, destroyer and DeepLab found 128 best or within noise of it.
constexpr int64_t kBlockTiles = 128;

at::Tensor winograd_conv3x3_cpu(const at::Tensor& x, const at::Tensor& u,
                                const std::optional<at::Tensor>& bias, int64_t dilation, bool relu) {
  TORCH_CHECK(x.dim() == 4, "winograd_conv3x3: x must be (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(u.dim() == 3 && u.size(0) == 16, "winograd_conv3x3: u must be (16, C, K) from winograd_filter, got ",
              u.sizes());
  TORCH_CHECK(u.size(1) == x.size(1), "winograd_conv3x3: u has ", u.size(1), " input channels, x has ", x.size(1));
  TORCH_CHECK(x.scalar_type() == at::kFloat && u.scalar_type() == at::kFloat,
              "winograd_conv3x3: float32 only, got x ", x.scalar_type(), " and u ", u.scalar_type());
  TORCH_CHECK(dilation >= 1, "winograd_conv3x3: dilation must be >= 1, got ", dilation);
  const Geometry g0{x.size(0), x.size(1), x.size(2), x.size(3), u.size(2), dilation, 0, 0, 0};
  at::Tensor b;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == g0.k, "winograd_conv3x3: bias must be (", g0.k, "), got ",
                bias->sizes());
    TORCH_CHECK(bias->scalar_type() == at::kFloat, "winograd_conv3x3: bias must be float32, got ", bias->scalar_type());
    b = bias->contiguous();
  }
  Geometry g = g0;
  const int64_t sub_h = (g.h + g.d - 1) / g.d, sub_w = (g.w + g.d - 1) / g.d;  // longest sub-image
  g.th = (sub_h + 1) / 2;
  g.tw = (sub_w + 1) / 2;
  g.tiles = g.n * g.d * g.d * g.th * g.tw;

  const at::Tensor xin = x.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor uc = u.contiguous();
  at::Tensor out = at::empty({g.n, g.k, g.h, g.w}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (out.numel() == 0) return out;

  const float* xp = xin.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  const int64_t tb = std::min(g.tiles, kBlockTiles);
  const int64_t blocks = (g.tiles + tb - 1) / tb;

  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    at::Tensor v = at::empty({16, tb, g.c}, xin.options().memory_format(at::MemoryFormat::Contiguous));
    at::Tensor m = at::empty({16, tb, g.k}, xin.options().memory_format(at::MemoryFormat::Contiguous));
    const std::vector<float> zeros(g.c, 0.0f);
    std::vector<float> sink(4 * g.k);  // outputs of tile pixels outside the image
    const float* src[16];
    float* dst[16];
    const float* mrow[16];
    float* orow[4];
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t t0 = blk * tb, nt = std::min(tb, g.tiles - t0);
      float* vp = v.data_ptr<float>();
      for (int64_t t = 0; t < nt; ++t) {
        const TileOrigin o = tile_origin(g, t0 + t);
        for (int r = 0; r < 4; ++r) {
          const int64_t y = o.y0 + g.d * (r - 1);
          for (int s = 0; s < 4; ++s) {
            const int64_t xx = o.x0 + g.d * (s - 1);
            const bool inside = y >= 0 && y < g.h && xx >= 0 && xx < g.w;
            src[r * 4 + s] = inside ? xp + ((o.b * g.h + y) * g.w + xx) * g.c : zeros.data();
          }
        }
        for (int i = 0; i < 16; ++i) dst[i] = vp + (i * tb + t) * g.c;
        input_transform(src, dst, g.c);
      }
      // Rows nt..tb of the last block hold stale values; their products are never read.
      at::bmm_out(m, v, uc);
      const float* mp = m.data_ptr<float>();
      for (int64_t t = 0; t < nt; ++t) {
        const TileOrigin o = tile_origin(g, t0 + t);
        for (int i = 0; i < 16; ++i) mrow[i] = mp + (i * tb + t) * g.k;
        for (int a = 0; a < 2; ++a) {
          const int64_t y = o.y0 + g.d * a;
          for (int c = 0; c < 2; ++c) {
            const int64_t xx = o.x0 + g.d * c;
            const int q = a * 2 + c;
            orow[q] = (y < g.h && xx < g.w) ? op + ((o.b * g.h + y) * g.w + xx) * g.k : sink.data() + q * g.k;
          }
        }
        output_transform(mrow, orow, bp, relu, g.k);
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mama, CPU, m) { m.impl("winograd_conv3x3", &winograd_conv3x3_cpu); }
