// Forward and backward of a blocked SparseConv2d (a permuted block-diagonal convolution) on the CPU
// (see sao/nn/_conv_kernel.py).
//
// The layer: g blocks; block b maps the bn input channels col_perm[b*bn .. b*bn+bn) to the bm output
// channels row_perm[b*bm .. b*bm+bm) through a dense (bm, bn, kh, kw) kernel, zero padding (ph, pw),
// stride (sh, sw), dilation (dh, dw):
//   y[n, row_perm[b*bm+o], oh, ow] = bias[row_perm[b*bm+o]]
//       + sum_{j, p, q} blocks[b*bm+o, j, p, q] * xpad[n, col_perm[b*bn+j], oh*sh + p*dh, ow*sw + q*dw].
//
// Work is split over (sample, block) pairs; each pair is independent in the forward and the input
// gradient, and the weight gradient is accumulated per thread and summed at the end.
//
// Layout. A pair's bn input channels are copied (the gather through col_perm happens in this copy) into
// a zero-initialised local buffer, padded, and split into sh*sw phase planes: padded position (r, c)
// goes to plane (r % sh, c % sw) at row r / sh, column c / sw, in rows of width Ws = ceil((W+2pw)/sw).
// Then every tap (p, q) of an output (oh, ow) reads plane ((p*dh) % sh, (q*dw) % sw) at flat index
// (oh*Ws + ow) + ((p*dh)/sh)*Ws + (q*dw)/sw: for any stride the output is a stride-1 correlation over
// flat rows of width Ws, so each tap is one contiguous vector load per 16 outputs (float) and the
// micro-kernel (simd.h's rows_kernel) runs RB output channels x NV vectors of outputs in registers.
// The Ws - OW extra columns per output row are computed and dropped on the store, which writes
// straight to y's channel row_perm[...] (the scatter is the store).
//
// Input gradient: the exact adjoint. dL/dy of the pair's bm channels is copied into zero-padded flat
// rows of width Ws (row_perm gather in the copy), and each phase plane of dL/dxpad is a stride-1
// correlation of them with the transposed, tap-reversed weights; planes are copied back to dL/dx
// (through col_perm: block b owns its input channels, so no two pairs write the same element).
// Weight gradient: dL/dblocks[o, j, t] = sum_{n, q} dL/dy_o[q] * plane_j,t[q + off_t], an inner product
// of two contiguous rows, register-tiled over 4 outputs x 4 (channel, tap) pairs.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

#include "simd.h"

namespace {

using namespace sao_simd;

constexpr int kNV = 4;  // vectors per output tile (64 floats, 32 doubles)
constexpr int64_t kUnitElements = 1024;  // flat outputs per unit of work at least (when the batch allows)
constexpr int64_t kChunk = 256;  // elements of the weight gradient's inner products kept in L1 at a time

template <typename T> constexpr int64_t kTile = kNV * kW<T>;

// A std::vector whose storage starts on a 64-byte line (rows are tile multiples, so every row does too).
template <typename U>
struct LineAllocator {
  using value_type = U;
  LineAllocator() = default;
  template <typename O> LineAllocator(const LineAllocator<O>&) {}
  U* allocate(std::size_t n) { return static_cast<U*>(::operator new(n * sizeof(U), std::align_val_t(64))); }
  void deallocate(U* p, std::size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <typename O> bool operator==(const LineAllocator<O>&) const { return true; }
  template <typename O> bool operator!=(const LineAllocator<O>&) const { return false; }
};
template <typename U> using Buffer = std::vector<U, LineAllocator<U>>;

inline int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

struct Geometry {
  int64_t N, Cin, H, W, Cout, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, g, bm, bn;
  int64_t T;          // taps, kh * kw
  int64_t phases;     // sh * sw
  int64_t Ws;         // row width of the phase planes and of the flat output rows
  int64_t Q;          // OH * Ws: flat output length of one sample
  int64_t seg;        // elements per sample in a phase plane (Hs * Ws, >= Q + max_off)
  int64_t NB;         // samples per work unit, one after the other in the planes
  int64_t chunks;     // work units along the batch, ceil(N / NB)
  int64_t out_len;    // flat output (and input-gradient plane) length of a unit: NB * seg, tile-rounded
  int64_t plane;      // elements per input phase plane of a unit: out_len + max_off, tile-rounded
  int64_t max_off;    // largest tap offset within a plane
  std::vector<int64_t> tap_phase, tap_off;  // per tap: its plane and offset

  Geometry(const at::Tensor& x, int64_t Cout_, int64_t kh_, int64_t kw_, at::IntArrayRef stride,
           at::IntArrayRef padding, at::IntArrayRef dilation, int64_t g_, int64_t tile)
      : N(x.size(0)), Cin(x.size(1)), H(x.size(2)), W(x.size(3)), Cout(Cout_), kh(kh_), kw(kw_),
        sh(stride[0]), sw(stride[1]), ph(padding[0]), pw(padding[1]), dh(dilation[0]), dw(dilation[1]), g(g_) {
    TORCH_CHECK(Cin % g == 0 && Cout % g == 0, "sao conv kernel: channels not divisible by the block count");
    bm = Cout / g;
    bn = Cin / g;
    OH = (H + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
    OW = (W + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
    TORCH_CHECK(OH > 0 && OW > 0, "sao conv kernel: the kernel is larger than the padded input");
    T = kh * kw;
    phases = sh * sw;
    Ws = (W + 2 * pw + sw - 1) / sw;
    Q = OH * Ws;
    tap_phase.resize(T);
    tap_off.resize(T);
    max_off = 0;
    for (int64_t p = 0; p < kh; ++p)
      for (int64_t q = 0; q < kw; ++q) {
        const int64_t t = p * kw + q;
        tap_phase[t] = ((p * dh) % sh) * sw + (q * dw) % sw;
        tap_off[t] = ((p * dh) / sh) * Ws + (q * dw) / sw;
        max_off = std::max(max_off, tap_off[t]);
      }
    // A valid output q < Q reads q + off <= the padded image's last element, so samples can follow one
    // another at a stride of the padded image's size; small images are batched into one unit of work.
    seg = std::max(((H + 2 * ph + sh - 1) / sh) * Ws, Q + max_off);
    NB = std::max<int64_t>(1, std::min<int64_t>(std::max<int64_t>(N, 1), kUnitElements / seg));
    chunks = (N + NB - 1) / NB;
    out_len = round_up(NB * seg, tile);
    plane = round_up(out_len + max_off, tile);
  }
};

// dst[0 .. n) = src[0 .. n), inline: rows are short (4-64 elements) and copied by the hundred thousand, so a
// library call per row costs more than the copy.
// (Whole vectors, then lanes: a plain loop is turned back into a memcpy call by the compiler.)
template <typename T>
inline void copy_n(const T* __restrict src, int64_t n, T* __restrict dst) {
  int64_t j = 0;
  for (; j + kW<T> <= n; j += kW<T>) store(dst + j, load(src + j));
  for (; j < n; ++j) dst[j] = src[j];
}

// Copy channel c of sample n (strided) into its phase planes: `dst` is the sample's segment of the
// channel's first plane (planes `plane` apart), zero-initialised. Padded column c2 = j + pw goes to phase
// c2 % sw at column c2 / sw; walking each phase's columns avoids a division per element.
template <typename T>
void pack_input(const T* x, const int64_t* xs, int64_t n, int64_t c, const Geometry& G, T* dst) {
  const T* src = x + n * xs[0] + c * xs[1];
  for (int64_t i = 0; i < G.H; ++i) {
    const int64_t r = i + G.ph;
    T* __restrict rowbase = dst + ((r % G.sh) * G.sw) * G.plane + (r / G.sh) * G.Ws;
    const T* __restrict srow = src + i * xs[2];
    if (G.sw == 1 && xs[3] == 1) {
      copy_n(srow, G.W, rowbase + G.pw);
      continue;
    }
    for (int64_t rw = 0; rw < G.sw; ++rw) {
      T* __restrict d = rowbase + rw * G.plane;
      const int64_t first = (G.pw - rw + G.sw - 1) / G.sw;  // first k with rw + k*sw >= pw
      for (int64_t k = first, j = rw + first * G.sw - G.pw; j < G.W; ++k, j += G.sw) d[k] = srow[j * xs[3]];
    }
  }
}

// The inverse copy: the phase planes at `src` (a sample's segment) into channel c of sample n of grad_x.
template <typename T>
void unpack_input(const T* src, const Geometry& G, T* gx, const int64_t* gs, int64_t n, int64_t c) {
  T* dst = gx + n * gs[0] + c * gs[1];
  for (int64_t i = 0; i < G.H; ++i) {
    const int64_t r = i + G.ph;
    const T* __restrict rowbase = src + ((r % G.sh) * G.sw) * G.plane + (r / G.sh) * G.Ws;
    T* __restrict d = dst + i * gs[2];
    if (G.sw == 1 && gs[3] == 1) {
      copy_n(rowbase + G.pw, G.W, d);
      continue;
    }
    for (int64_t rw = 0; rw < G.sw; ++rw) {
      const T* __restrict s = rowbase + rw * G.plane;
      const int64_t first = (G.pw - rw + G.sw - 1) / G.sw;
      for (int64_t k = first, j = rw + first * G.sw - G.pw; j < G.W; ++k, j += G.sw) d[j * gs[3]] = s[k];
    }
  }
}

// dst[i*ds + j*dj] = src[i*ss + j] + add for i < rows, j < cols (a contiguous inner loop when dj == 1).
template <typename T>
inline void copy_rows(T* __restrict dst, int64_t ds, int64_t dj, const T* __restrict src, int64_t ss, int64_t rows,
                      int64_t cols, T add) {
  for (int64_t i = 0; i < rows; ++i) {
    T* __restrict d = dst + i * ds;
    const T* __restrict s = src + i * ss;
    if (dj == 1)
      for (int64_t j = 0; j < cols; ++j) d[j] = s[j] + add;
    else
      for (int64_t j = 0; j < cols; ++j) d[j * dj] = s[j] + add;
  }
}

// dst[i*ds + j] = src[i*ss + j*sj] for i < rows, j < cols.
template <typename T>
inline void gather_rows(T* __restrict dst, int64_t ds, const T* __restrict src, int64_t ss, int64_t sj, int64_t rows,
                        int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    T* __restrict d = dst + i * ds;
    const T* __restrict s = src + i * ss;
    if (sj == 1)
      copy_n(s, cols, d);
    else
      for (int64_t j = 0; j < cols; ++j) d[j] = s[j * sj];
  }
}

// out[r][0 .. len) = sum_k coef[r + k*cs] * src[k][0 .. len) for `rows` rows; len a multiple of the tile.
// Register tiles of 8 rows x 2 vectors, 4 x 4, 2 x 4 and 1 x 4 (at most 16 accumulators; narrow row tiles
// take longer vectors, so each broadcast weight feeds several FMAs when the blocks are small).
template <typename T>
void correlate(int64_t rows, const T* coef, int64_t cs, const std::vector<const T*>& src, T* const* out,
               int64_t len, std::vector<const T*>& moved) {
  const int64_t K = static_cast<int64_t>(src.size());
  moved.resize(K);
  T* dst[8];
  auto pass = [&](auto rb, auto nv, int64_t r0, int64_t r1) {  // rows [r0, r1) in tiles of RB x NV vectors
    constexpr int RB = decltype(rb)::value, NV = decltype(nv)::value;
    for (int64_t q0 = 0; q0 < len; q0 += NV * kW<T>) {
      for (int64_t k = 0; k < K; ++k) moved[k] = src[k] + q0;
      for (int64_t r = r0; r + RB <= r1; r += RB) {
        for (int i = 0; i < RB; ++i) dst[i] = out[r + i] + q0;
        rows_kernel<T, NV, RB, kIdentity>(coef + r, 1, cs, K, moved.data(), nullptr, dst);
      }
    }
  };
  using I1 = std::integral_constant<int, 1>;
  using I2 = std::integral_constant<int, 2>;
  using I4 = std::integral_constant<int, 4>;
  const int64_t r8 = rows / 8 * 8, r4 = r8 + (rows - r8) / 4 * 4, r2 = r4 + (rows - r4) / 2 * 2;
  if (r8) pass(std::integral_constant<int, 8>{}, I2{}, 0, r8);
  if (r4 > r8) pass(I4{}, I4{}, r8, r4);
  if (r2 > r4) pass(I2{}, I4{}, r4, r2);
  if (rows > r2) pass(I1{}, I4{}, r2, rows);
}

template <typename T, int RB, int KB>
inline void dot_tile(const T* const* a, const T* const* b, int64_t q0, int64_t q1, V<T>* acc, int64_t ldc) {
  V<T> sum[RB][KB];
  for (int r = 0; r < RB; ++r)
    for (int k = 0; k < KB; ++k) sum[r][k] = acc[r * ldc + k];
  for (int64_t q = q0; q < q1; q += kW<T>) {
    V<T> av[RB], bv[KB];
    for (int r = 0; r < RB; ++r) av[r] = load(a[r] + q);
    for (int k = 0; k < KB; ++k) bv[k] = load(b[k] + q);
    for (int r = 0; r < RB; ++r)
      for (int k = 0; k < KB; ++k) sum[r][k] += av[r] * bv[k];
  }
  for (int r = 0; r < RB; ++r)
    for (int k = 0; k < KB; ++k) acc[r * ldc + k] = sum[r][k];
}

template <typename T, int RB, int KB>
void dot_rows(int64_t r, int64_t R, const T* const* a, int64_t K, const T* const* b, int64_t q0, int64_t q1,
              V<T>* acc) {
  for (; r + RB <= R; r += RB) {
    int64_t k = 0;
    for (; k + KB <= K; k += KB) dot_tile<T, RB, KB>(a + r, b + k, q0, q1, acc + r * K + k, K);
    for (; k < K; ++k) dot_tile<T, RB, 1>(a + r, b + k, q0, q1, acc + r * K + k, K);
  }
}

// C[r * K + k] += sum_{q < len} a[r][q] * b[k][q] for r < R, k < K; len a multiple of the vector. The sum
// runs in chunks of kChunk elements (rows stay in L1 across the tiles) with vector accumulators `acc`.
// Tiles of 8 x 2 rows (16 accumulators, 10 loads per 16 FMAs: the a rows are aligned, the b rows, shifted
// by a tap, are not), narrower where R is small.
template <typename T>
void dot_all(int64_t R, const T* const* a, int64_t K, const T* const* b, int64_t len, T* C, Buffer<V<T>>& acc) {
  acc.assign(R * K, splat<T>(0));
  for (int64_t q0 = 0; q0 < len; q0 += kChunk) {
    const int64_t q1 = std::min(len, q0 + kChunk);
    dot_rows<T, 8, 2>(0, R, a, K, b, q0, q1, acc.data());
    const int64_t r8 = R / 8 * 8;
    dot_rows<T, 4, 4>(r8, R, a, K, b, q0, q1, acc.data());
    const int64_t r4 = r8 + (R - r8) / 4 * 4;
    dot_rows<T, 2, 8>(r4, R, a, K, b, q0, q1, acc.data());
    const int64_t r2 = r4 + (R - r4) / 2 * 2;
    dot_rows<T, 1, 8>(r2, R, a, K, b, q0, q1, acc.data());
  }
  for (int64_t i = 0; i < R * K; ++i) C[i] += hsum<T>(acc[i]);
}

// Per-thread scratch of one unit of work (a chunk of samples, a block).
template <typename T>
struct Scratch {
  Buffer<T> planes, rows, grad_planes;
  std::vector<const T*> src, moved, gsrc, gsrc_t;
  std::vector<T*> out;
  Buffer<V<T>> acc;
};

// The unit's samples [n0, n1) of its block's input channels as phase planes (scratch.planes, bn * phases *
// plane), and the forward's source rows: (channel j, tap t) -> plane of j, phase of t, shifted by the tap.
template <typename T>
void pack_unit(const T* x, const int64_t* xs, const int64_t* col_perm, int64_t n0, int64_t n1, int64_t b,
               const Geometry& G, Scratch<T>& s) {
  const int64_t per = G.phases * G.plane;
  s.planes.assign(G.bn * per, T(0));
  for (int64_t j = 0; j < G.bn; ++j)
    for (int64_t n = n0; n < n1; ++n)
      pack_input(x, xs, n, col_perm[b * G.bn + j], G, s.planes.data() + j * per + (n - n0) * G.seg);
  s.src.resize(G.bn * G.T);
  for (int64_t j = 0; j < G.bn; ++j)
    for (int64_t t = 0; t < G.T; ++t)
      s.src[j * G.T + t] = s.planes.data() + j * per + G.tap_phase[t] * G.plane + G.tap_off[t];
}

template <typename T>
at::Tensor forward_impl(const at::Tensor& x, const at::Tensor& blocks, const at::Tensor& bias,
                        const at::Tensor& row_perm, const at::Tensor& col_perm, at::IntArrayRef stride,
                        at::IntArrayRef padding, at::IntArrayRef dilation, int64_t g) {
  const Geometry G(x, blocks.size(0), blocks.size(2), blocks.size(3), stride, padding, dilation, g, kTile<T>);
  at::Tensor y = at::empty({G.N, G.Cout, G.OH, G.OW}, x.options().memory_format(x.suggest_memory_format()));
  if (G.N == 0) return y;
  // weights as wf[b][j][t][o] (o contiguous: the micro-kernel's rows)
  const at::Tensor wf = blocks.view({g, G.bm, G.bn * G.T}).transpose(1, 2).contiguous();
  const T* w = wf.data_ptr<T>();
  const T* xp = x.data_ptr<T>();
  T* yp = y.data_ptr<T>();
  const T* bp = bias.numel() ? bias.data_ptr<T>() : nullptr;
  const int64_t* rp = row_perm.data_ptr<int64_t>();
  const int64_t* cp = col_perm.data_ptr<int64_t>();
  const int64_t xs[4] = {x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
  const int64_t ys[4] = {y.stride(0), y.stride(1), y.stride(2), y.stride(3)};
  at::parallel_for(0, G.chunks * g, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> s;
    s.rows.resize(G.bm * G.out_len);
    s.out.resize(G.bm);
    for (int64_t o = 0; o < G.bm; ++o) s.out[o] = s.rows.data() + o * G.out_len;
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t n0 = unit / g * G.NB, n1 = std::min(G.N, n0 + G.NB), b = unit % g;
      pack_unit(xp, xs, cp, n0, n1, b, G, s);
      correlate<T>(G.bm, w + b * G.bn * G.T * G.bm, G.bm, s.src, s.out.data(), G.out_len, s.moved);
      for (int64_t o = 0; o < G.bm; ++o) {  // the store is the scatter through row_perm
        const int64_t c = rp[b * G.bm + o];
        const T add = bp ? bp[c] : T(0);
        for (int64_t n = n0; n < n1; ++n)
          copy_rows(yp + n * ys[0] + c * ys[1], ys[2], ys[3], s.out[o] + (n - n0) * G.seg, G.Ws, G.OH, G.OW, add);
      }
    }
  });
  return y;
}

template <typename T>
std::vector<at::Tensor> backward_impl(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& blocks,
                                      const at::Tensor& row_perm, const at::Tensor& col_perm,
                                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                      int64_t g, bool need_x, bool need_w) {
  const Geometry G(x, blocks.size(0), blocks.size(2), blocks.size(3), stride, padding, dilation, g, kTile<T>);
  at::Tensor gx = need_x ? at::empty(x.sizes(), x.options().memory_format(x.suggest_memory_format())) : at::Tensor();
  at::Tensor gw = need_w ? at::zeros_like(blocks, at::MemoryFormat::Contiguous) : at::Tensor();
  if (G.N == 0 || !(need_x || need_w)) {
    if (need_x) gx.zero_();
    return {gx, gw};
  }
  // dL/dy rows with a margin in front, so that the input gradient's shifted reads q - off stay inside
  const int64_t margin = round_up(G.max_off, kTile<T>);
  const int64_t glen = margin + G.out_len;
  // input-gradient weights per phase r: wb_r[b][o][k][j] for the k-th tap of phase r (j contiguous)
  std::vector<std::vector<int64_t>> taps(G.phases);
  for (int64_t t = 0; t < G.T; ++t) taps[G.tap_phase[t]].push_back(t);
  std::vector<at::Tensor> wb(G.phases);
  if (need_x) {
    const at::Tensor w4 = blocks.view({g, G.bm, G.bn, G.T});
    for (int64_t r = 0; r < G.phases; ++r)
      if (!taps[r].empty())
        wb[r] = w4.index_select(3, at::tensor(taps[r], at::kLong)).permute({0, 1, 3, 2}).contiguous();
  }
  std::vector<at::Tensor> partial(need_w ? at::get_num_threads() : 0);
  const T* xp = x.data_ptr<T>();
  const T* gyp = grad_y.data_ptr<T>();
  T* gxp = need_x ? gx.data_ptr<T>() : nullptr;
  const int64_t* rp = row_perm.data_ptr<int64_t>();
  const int64_t* cp = col_perm.data_ptr<int64_t>();
  const int64_t xs[4] = {x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
  const int64_t gys[4] = {grad_y.stride(0), grad_y.stride(1), grad_y.stride(2), grad_y.stride(3)};
  int64_t gxs[4] = {0, 0, 0, 0};
  if (need_x)
    for (int d = 0; d < 4; ++d) gxs[d] = gx.stride(d);
  at::parallel_for(0, G.chunks * g, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> s;
    T* acc = nullptr;
    if (need_w) {
      at::Tensor& mine = partial[at::get_thread_num()];
      if (!mine.defined()) mine = at::zeros({blocks.numel()}, blocks.options());
      acc = mine.data_ptr<T>();
    }
    Buffer<T> grows(G.bm * glen);
    s.gsrc.resize(G.bm);
    const int64_t per = G.phases * G.plane;
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t n0 = unit / g * G.NB, n1 = std::min(G.N, n0 + G.NB), b = unit % g;
      std::fill(grows.begin(), grows.end(), T(0));
      for (int64_t o = 0; o < G.bm; ++o) {  // dL/dy of the unit, flat rows of width Ws (gather via row_perm)
        T* row = grows.data() + o * glen + margin;
        s.gsrc[o] = row;
        for (int64_t n = n0; n < n1; ++n)
          gather_rows(row + (n - n0) * G.seg, G.Ws, gyp + n * gys[0] + rp[b * G.bm + o] * gys[1], gys[2], gys[3],
                      G.OH, G.OW);
      }
      if (need_x) {
        s.grad_planes.assign(G.bn * per, T(0));
        s.out.resize(G.bn);
        for (int64_t r = 0; r < G.phases; ++r) {
          if (taps[r].empty()) continue;  // a phase no tap reads: its gradient is zero
          const int64_t nt = static_cast<int64_t>(taps[r].size());
          s.gsrc_t.resize(G.bm * nt);
          for (int64_t o = 0; o < G.bm; ++o)
            for (int64_t k = 0; k < nt; ++k) s.gsrc_t[o * nt + k] = s.gsrc[o] - G.tap_off[taps[r][k]];
          for (int64_t j = 0; j < G.bn; ++j) s.out[j] = s.grad_planes.data() + j * per + r * G.plane;
          correlate<T>(G.bn, wb[r].data_ptr<T>() + b * G.bm * nt * G.bn, G.bn, s.gsrc_t, s.out.data(), G.out_len,
                       s.moved);
        }
        for (int64_t j = 0; j < G.bn; ++j)  // block b owns these input channels: no other unit writes them
          for (int64_t n = n0; n < n1; ++n)
            unpack_input(s.grad_planes.data() + j * per + (n - n0) * G.seg, G, gxp, gxs, n, cp[b * G.bn + j]);
      }
      if (need_w) {
        pack_unit(xp, xs, cp, n0, n1, b, G, s);
        dot_all<T>(G.bm, s.gsrc.data(), G.bn * G.T, s.src.data(), G.out_len, acc + b * G.bm * G.bn * G.T, s.acc);
      }
    }
  });
  for (const at::Tensor& p : partial)
    if (p.defined()) gw.view({-1}).add_(p);
  return {gx, gw};
}

void check(const at::Tensor& x, const at::Tensor& blocks, const at::Tensor& row_perm, const at::Tensor& col_perm,
           int64_t g) {
  TORCH_CHECK(x.device().is_cpu() && blocks.device().is_cpu(), "sao conv kernel: CPU tensors only");
  TORCH_CHECK(x.dim() == 4 && blocks.dim() == 4, "sao conv kernel: x (N, C, H, W) and blocks (g*bm, bn, kh, kw)");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "sao conv kernel: float32 or float64");
  TORCH_CHECK(blocks.scalar_type() == x.scalar_type(), "sao conv kernel: blocks and x must have one dtype");
  TORCH_CHECK(blocks.is_contiguous(), "sao conv kernel: blocks must be contiguous");
  TORCH_CHECK(g >= 1 && blocks.size(1) * g == x.size(1), "sao conv kernel: blocks do not match x's channels");
  TORCH_CHECK(row_perm.is_contiguous() && col_perm.is_contiguous() && row_perm.scalar_type() == at::kLong &&
                  col_perm.scalar_type() == at::kLong && row_perm.numel() == blocks.size(0) &&
                  col_perm.numel() == x.size(1),
              "sao conv kernel: row_perm/col_perm must be contiguous int64 permutations of the channels");
}

at::Tensor conv_forward(const at::Tensor& x, const at::Tensor& blocks, const at::Tensor& bias,
                        const at::Tensor& row_perm, const at::Tensor& col_perm, std::vector<int64_t> stride,
                        std::vector<int64_t> padding, std::vector<int64_t> dilation, int64_t g) {
  check(x, blocks, row_perm, col_perm, g);
  TORCH_CHECK(bias.numel() == 0 || (bias.numel() == blocks.size(0) && bias.is_contiguous() &&
                                    bias.scalar_type() == x.scalar_type()),
              "sao conv kernel: bias must be empty or a contiguous (C_out,) tensor of x's dtype");
  if (x.scalar_type() == at::kFloat)
    return forward_impl<float>(x, blocks, bias, row_perm, col_perm, stride, padding, dilation, g);
  return forward_impl<double>(x, blocks, bias, row_perm, col_perm, stride, padding, dilation, g);
}

std::vector<at::Tensor> conv_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& blocks,
                                      const at::Tensor& row_perm, const at::Tensor& col_perm,
                                      std::vector<int64_t> stride, std::vector<int64_t> padding,
                                      std::vector<int64_t> dilation, int64_t g, bool need_x, bool need_w) {
  check(x, blocks, row_perm, col_perm, g);
  TORCH_CHECK(grad_y.scalar_type() == x.scalar_type() && grad_y.dim() == 4,
              "sao conv kernel: grad_y must be (N, C_out, OH, OW) of x's dtype");
  if (x.scalar_type() == at::kFloat)
    return backward_impl<float>(grad_y, x, blocks, row_perm, col_perm, stride, padding, dilation, g, need_x, need_w);
  return backward_impl<double>(grad_y, x, blocks, row_perm, col_perm, stride, padding, dilation, g, need_x, need_w);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &conv_forward, "blocked sparse conv forward -> y");
  m.def("backward", &conv_backward, "blocked sparse conv backward -> [grad_x, grad_blocks]");
}
