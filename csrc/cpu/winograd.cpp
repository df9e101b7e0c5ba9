// CPU kernel of mama::winograd_conv3x3 (schema in csrc/ops.cpp): a frozen 3x3 stride-1
// convolution with zero padding == dilation, by Winograd's minimal filtering F(M x M, 3 x 3)
// for output tiles of M = 2 or 4 pixels a side (Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2016).
//
// Each M x M output tile is A^T [U (.) (B^T d B)] A for its (M+2) x (M+2) input tile d:
// (M+2)^2 products per tile instead of 9 M^2 (F(4x4): 36 instead of 144). U = G g G^T is
// transformed once, in Python (mama.ops.winograd_filter), laid out ((M+2)^2, C, K); M is
// read off its first dimension. Per block of tiles:
//   1. input transform of every tile into V ((M+2)^2, tiles, C), channels contiguous;
//   2. (M+2)^2 GEMMs V[i] (tiles x C) @ U[i] (C x K) -> M ((M+2)^2, tiles, K), one at::bmm_out;
//   3. output transform into the output pixels, + bias, optional ReLU.
// Blocks keep V and M cache-sized, so on large maps the transforms do not stream the larger
// V / M through main memory. Blocks are independent: parallel over blocks, no atomics.
//
// Dilation d: the output pixels (y0 + d*a, x0 + d*b), a, b in 0..M-1, form a tile whose input
// taps are (y0 + d*(r-1), x0 + d*(s-1)), r, s in 0..M+1 (the d x d interleaved sub-images are
// ordinary 3x3 convolutions). Tiles are enumerated per residue (y0 mod d, x0 mod d).
//
// Layout: x is read channels-last (B, H, W, C) and the output is written channels-last.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
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

TileOrigin tile_origin(const Geometry& g, int64_t t, int64_t tile) {
  const int64_t tj = t % g.tw;
  t /= g.tw;
  const int64_t ti = t % g.th;
  t /= g.th;
  const int64_t rx = t % g.d;
  t /= g.d;
  const int64_t ry = t % g.d;
  const int64_t b = t / g.d;
  return {b, ry + tile * g.d * ti, rx + tile * g.d * tj};
}

// Channels are processed 8 at a time as GCC vector-extension values (one AVX register in the
// haswell clone, two SSE registers otherwise), the remainder one float at a time; the same
// transform code serves both (templated on the value type T).
typedef float vf8 __attribute__((vector_size(32)));
constexpr int64_t kLanes = 8;

inline void load(float& v, const float* p) { v = *p; }
inline void load(vf8& v, const float* p) { __builtin_memcpy(&v, p, sizeof(v)); }
inline void store(float* p, float v) { *p = v; }
inline void store(float* p, vf8 v) { __builtin_memcpy(p, &v, sizeof(v)); }
inline float relu_of(float v) { return v > 0.0f ? v : 0.0f; }
inline vf8 relu_of(vf8 v) { return v > 0.0f ? v : vf8{}; }

// The 1-D transforms. F(2, 3): 4-point tiles, F(4, 3): 6-point tiles (interpolation points
// 0, +-1, +-2 and infinity), written out so that no multiplication by 0 is done.
template <int M>
struct Transform;

template <>
struct Transform<2> {
  static constexpr int A = 4;  // input tile side
  template <typename T>
  static inline void input(const T* d, T* t) {  // t = B^T d
    t[0] = d[0] - d[2];
    t[1] = d[1] + d[2];
    t[2] = d[2] - d[1];
    t[3] = d[1] - d[3];
  }
  template <typename T>
  static inline void output(const T* m, T* y) {  // y = A^T m
    y[0] = m[0] + m[1] + m[2];
    y[1] = m[1] - m[2] - m[3];
  }
};

template <>
struct Transform<4> {
  static constexpr int A = 6;
  template <typename T>
  static inline void input(const T* d, T* t) {
    t[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
    t[1] = -4.0f * (d[1] + d[2]) + d[3] + d[4];
    t[2] = 4.0f * (d[1] - d[2]) - d[3] + d[4];
    t[3] = 2.0f * (d[3] - d[1]) - d[2] + d[4];
    t[4] = 2.0f * (d[1] - d[3]) - d[2] + d[4];
    t[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
  }
  template <typename T>
  static inline void output(const T* m, T* y) {
    const T a = m[1] + m[2], b = m[1] - m[2], c = m[3] + m[4], e = m[3] - m[4];
    y[0] = m[0] + a + c;
    y[1] = b + 2.0f * e;
    y[2] = a + 4.0f * c;
    y[3] = b + 8.0f * e + m[5];
  }
};

// B^T d B for one tile at channels c..c+lanes: src[r*A+s] points at the channels of input tap
// (r, s) (or at zeros), dst[i*A+j] at V's channels for tile position (i, j).
template <int M, typename T>
inline void input_tile(const float* const* src, float* const* dst, int64_t c) {
  constexpr int A = Transform<M>::A;
  T d[A][A], t[A][A], col[A], out[A];
  for (int r = 0; r < A; ++r)
    for (int s = 0; s < A; ++s) load(d[r][s], src[r * A + s] + c);
  for (int s = 0; s < A; ++s) {  // columns: t[.][s] = B^T d[.][s]
    for (int r = 0; r < A; ++r) col[r] = d[r][s];
    Transform<M>::input(col, out);
    for (int i = 0; i < A; ++i) t[i][s] = out[i];
  }
  for (int i = 0; i < A; ++i) {  // rows: (t B)[i][.]
    Transform<M>::input(t[i], out);
    for (int j = 0; j < A; ++j) store(dst[i * A + j] + c, out[j]);
  }
}

// A^T m A for one tile at output channels k..k+lanes, + bias, optional ReLU: m[i*A+j] points
// at M's values for tile position (i, j); out[a*M+b] at output pixel (a, b)'s channels (a
// scratch row when the pixel is outside the image).
template <int M, typename T>
inline void output_tile(const float* const* m, float* const* out, const float* bias, bool relu, int64_t k) {
  constexpr int A = Transform<M>::A;
  T v[A][A], t[M][A], col[A], y[M], bk{};
  for (int i = 0; i < A; ++i)
    for (int j = 0; j < A; ++j) load(v[i][j], m[i * A + j] + k);
  if (bias != nullptr) load(bk, bias + k);
  for (int j = 0; j < A; ++j) {  // columns: t[.][j] = A^T v[.][j]
    for (int i = 0; i < A; ++i) col[i] = v[i][j];
    Transform<M>::output(col, y);
    for (int a = 0; a < M; ++a) t[a][j] = y[a];
  }
  for (int a = 0; a < M; ++a) {  // rows: (t A)[a][.]
    Transform<M>::output(t[a], y);
    for (int b = 0; b < M; ++b) store(out[a * M + b] + k, relu ? relu_of(y[b] + bk) : y[b] + bk);
  }
}

template <int M>
inline void input_transform(const float* const* src, float* const* dst, int64_t C) {
  int64_t c = 0;
  for (; c + kLanes <= C; c += kLanes) input_tile<M, vf8>(src, dst, c);
  for (; c < C; ++c) input_tile<M, float>(src, dst, c);
}

template <int M>
inline void output_transform(const float* const* m, float* const* out, const float* bias, bool relu, int64_t K) {
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes) output_tile<M, vf8>(m, out, bias, relu, k);
  for (; k < K; ++k) output_tile<M, float>(m, out, bias, relu, k);
}

// The per-tile loops, built for AVX2 CPUs and for any x86-64 (ifunc dispatch at load time).
MAMA_SIMD_CLONES void input_transform_2(const float* const* s, float* const* d, int64_t C) { input_transform<2>(s, d, C); }
MAMA_SIMD_CLONES void input_transform_4(const float* const* s, float* const* d, int64_t C) { input_transform<4>(s, d, C); }
MAMA_SIMD_CLONES void output_transform_2(const float* const* m, float* const* o, const float* b, bool r, int64_t K) {
  output_transform<2>(m, o, b, r, K);
}
MAMA_SIMD_CLONES void output_transform_4(const float* const* m, float* const* o, const float* b, bool r, int64_t K) {
  output_transform<4>(m, o, b, r, K);
}

// Tiles per block: 128 rows per GEMM reuse each U[i] enough, and the block's V and M
// (16 x 128 x (C + K) floats: 2 MB at C = K = 128) stay in cache. A sweep over 32..1024 on
// the shapes of the generator, destroyer and DeepLab found 128 best or within noise of it.
constexpr int64_t kBlockTiles = 128;

// One convolution with output tiles M x M (F(M x M, 3 x 3)); geometry and checks done.
template <int M>
void run_tiles(const at::Tensor& xin, const at::Tensor& uc, const float* bp, bool relu, Geometry g,
               at::Tensor& out) {
  constexpr int A = Transform<M>::A, P = A * A;
  const float* xp = xin.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t tb = std::min(g.tiles, kBlockTiles);
  const int64_t blocks = (g.tiles + tb - 1) / tb;

  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    at::Tensor v = at::empty({P, tb, g.c}, xin.options().memory_format(at::MemoryFormat::Contiguous));
    at::Tensor m = at::empty({P, tb, g.k}, xin.options().memory_format(at::MemoryFormat::Contiguous));
    const std::vector<float> zeros(g.c, 0.0f);
    std::vector<float> sink(M * M * g.k);  // outputs of tile pixels outside the image
    const float* src[P];
    float* dst[P];
    const float* mrow[P];
    float* orow[M * M];
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t t0 = blk * tb, nt = std::min(tb, g.tiles - t0);
      float* vp = v.data_ptr<float>();
      for (int64_t t = 0; t < nt; ++t) {
        const TileOrigin o = tile_origin(g, t0 + t, M);
        for (int r = 0; r < A; ++r) {
          const int64_t y = o.y0 + g.d * (r - 1);
          for (int s = 0; s < A; ++s) {
            const int64_t xx = o.x0 + g.d * (s - 1);
            const bool inside = y >= 0 && y < g.h && xx >= 0 && xx < g.w;
            src[r * A + s] = inside ? xp + ((o.b * g.h + y) * g.w + xx) * g.c : zeros.data();
          }
        }
        for (int i = 0; i < P; ++i) dst[i] = vp + (i * tb + t) * g.c;
        if constexpr (M == 2)
          input_transform_2(src, dst, g.c);
        else
          input_transform_4(src, dst, g.c);
      }
      // Rows nt..tb of the last block hold stale values; their products are never read.
      at::bmm_out(m, v, uc);
      const float* mp = m.data_ptr<float>();
      for (int64_t t = 0; t < nt; ++t) {
        const TileOrigin o = tile_origin(g, t0 + t, M);
        for (int i = 0; i < P; ++i) mrow[i] = mp + (i * tb + t) * g.k;
        for (int a = 0; a < M; ++a) {
          const int64_t y = o.y0 + g.d * a;
          for (int c = 0; c < M; ++c) {
            const int64_t xx = o.x0 + g.d * c;
            const int q = a * M + c;
            orow[q] = (y < g.h && xx < g.w) ? op + ((o.b * g.h + y) * g.w + xx) * g.k : sink.data() + q * g.k;
          }
        }
        if constexpr (M == 2)
          output_transform_2(mrow, orow, bp, relu, g.k);
        else
          output_transform_4(mrow, orow, bp, relu, g.k);
      }
    }
  });
}

at::Tensor winograd_conv3x3_cpu(const at::Tensor& x, const at::Tensor& u,
                                const std::optional<at::Tensor>& bias, int64_t dilation, bool relu) {
  TORCH_CHECK(x.dim() == 4, "winograd_conv3x3: x must be (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(u.dim() == 3 && (u.size(0) == 16 || u.size(0) == 36),
              "winograd_conv3x3: u must be (16 or 36, C, K) from winograd_filter, got ", u.sizes());
  TORCH_CHECK(u.size(1) == x.size(1), "winograd_conv3x3: u has ", u.size(1), " input channels, x has ", x.size(1));
  TORCH_CHECK(x.scalar_type() == at::kFloat && u.scalar_type() == at::kFloat,
              "winograd_conv3x3: float32 only, got x ", x.scalar_type(), " and u ", u.scalar_type());
  TORCH_CHECK(dilation >= 1, "winograd_conv3x3: dilation must be >= 1, got ", dilation);
  Geometry g{x.size(0), x.size(1), x.size(2), x.size(3), u.size(2), dilation, 0, 0, 0};
  at::Tensor b;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == g.k, "winograd_conv3x3: bias must be (", g.k, "), got ",
                bias->sizes());
    TORCH_CHECK(bias->scalar_type() == at::kFloat, "winograd_conv3x3: bias must be float32, got ", bias->scalar_type());
    b = bias->contiguous();
  }
  const int tile = u.size(0) == 16 ? 2 : 4;  // output tile side M: u holds (M + 2)^2 matrices
  const int64_t sub_h = (g.h + g.d - 1) / g.d, sub_w = (g.w + g.d - 1) / g.d;  // longest sub-image
  g.th = (sub_h + tile - 1) / tile;
  g.tw = (sub_w + tile - 1) / tile;
  g.tiles = g.n * g.d * g.d * g.th * g.tw;

  const at::Tensor xin = x.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor out = at::empty({g.n, g.k, g.h, g.w}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (out.numel() == 0) return out;
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  if (tile == 2)
    run_tiles<2>(xin, u.contiguous(), bp, relu, g, out);
  else
    run_tiles<4>(xin, u.contiguous(), bp, relu, g, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mama, CPU, m) { m.impl("winograd_conv3x3", &winograd_conv3x3_cpu); }
