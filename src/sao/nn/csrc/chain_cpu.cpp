// Forward and backward of a whole chain of blocked SparseLinear layers, each followed by an
// elementwise activation, in one OpenMP parallel region per pass (see sao/nn/_chain_kernel.py).
//
// Layout. The batch is cut into tiles of TS samples (TS = NV SIMD vectors of 64 bytes: 16, 32 or
// 64 floats, 8, 16 or 32 doubles; the last tile is zero-padded) and the tiles are split into one
// contiguous range per thread. A thread runs every layer on its tiles (samples are independent,
// so there is no barrier between layers). Activations are feature-major within a tile: row f
// holds feature f for the tile's TS samples, so each weight multiplies TS contiguous samples
// (the SIMD dimension). Layer l's output is kept in block order (row b*bm+i is output
// row_perm_l[b*bm+i]); its input row j is row gather_l[j] of the previous output (of x for
// l = 0), so the chain needs no gather pass of its own.
//
// Saved for backward: H, every layer's post-activation output, tile-major: tile tau's slab of
// layer l is (m_l, TS) at tau * (sum_l m_l) * TS + (sum_{i<l} m_i) * TS; in all
// ceil(B / TS) * TS * sum_l m_l elements. The buffer comes from a small pool that is reused once
// autograd has released it (a fresh 100+ MB allocation costs ~50 ms of page faults per step).
// The backward reads the activation derivative from H_l (tanh: 1 - h^2, relu: h > 0) and the
// layer input from H_{l-1}.
//
// Gradients. dL/dblocks and dL/dbias are accumulated per thread (thread 0 straight into the
// result, the others into scratch) and summed after the region; the bias gradient is
// accumulated in output order (as the layer stores its bias). The gradient w.r.t. a layer's
// input is written through its gather, which is a permutation (composed of SparseLinear's
// row_inverse and col_perm), so each input row is written exactly once.

#include <torch/extension.h>

#include "simd.h"

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

namespace {

using namespace sao_simd;

constexpr int kMaxNV = 4;  // vectors per tile at most
constexpr int kRB = 4;     // output rows per micro-kernel call

// All `rows` rows through rows_kernel, kRB at a time. row_coef(r) / row_dst(r) / row_bias(r).
template <typename T, int NV, int A>
inline void rows_all(int64_t rows, const T* coef, int64_t rs, int64_t cs, int64_t K, const T* const* src,
                     const T* bias, T* const* dst) {
  int64_t r = 0;
  for (; r + kRB <= rows; r += kRB)
    rows_kernel<T, NV, kRB, A>(coef + r * rs, rs, cs, K, src, bias ? bias + r : nullptr, dst + r);
  for (; r < rows; ++r) rows_kernel<T, NV, 1, A>(coef + r * rs, rs, cs, K, src, bias ? bias + r : nullptr, dst + r);
}

template <typename T>
struct Layer {
  const T* w;               // (g, bm, bn) contiguous
  const T* bias;            // (m,) output order, or nullptr
  const int64_t* row_perm;  // (m,)
  const int64_t* gather;    // (n,) row of the previous output feeding input j
  int64_t g, bm, bn, m, n;
  int act;
  int64_t h_off;            // rows of H before this layer's slab (within a tile)
  int64_t w_off, b_off;     // offsets in the flat gradient accumulators
};

template <typename T, int NV, int A>
void layer_forward(const Layer<T>& L, const T* in, T* out) {
  constexpr int64_t TS = NV * kW<T>;
  std::vector<const T*> src(L.bn);
  std::vector<T*> dst(L.bm);
  std::vector<T> bias(L.bm);
  for (int64_t b = 0; b < L.g; ++b) {
    for (int64_t k = 0; k < L.bn; ++k) src[k] = in + L.gather[b * L.bn + k] * TS;
    for (int64_t i = 0; i < L.bm; ++i) {
      dst[i] = out + (b * L.bm + i) * TS;
      if (L.bias) bias[i] = L.bias[L.row_perm[b * L.bm + i]];
    }
    rows_all<T, NV, A>(L.bm, L.w + b * L.bm * L.bn, L.bn, 1, L.bn, src.data(), L.bias ? bias.data() : nullptr,
                       dst.data());
  }
}

// Backward of one layer on a tile. g (m, TS) holds dL/dh on entry and dL/dz on exit; gin (n, TS),
// if not null, receives dL/d(input) through the gather. gw / gb: this thread's accumulators.
template <typename T, int NV, int A>
void layer_backward(const Layer<T>& L, const T* h, const T* in, T* g, T* gin, T* gw, T* gb, const T* pf,
                    int64_t pf_rows) {
  constexpr int64_t TS = NV * kW<T>;
  constexpr int64_t kLine = 64 / sizeof(T);
  std::vector<const T*> src(std::max(L.bn, L.bm));
  std::vector<T*> dst(L.bn);
  for (int64_t b = 0; b < L.g; ++b) {
    if (pf) {  // pull this block's share of the slab that the layer after next reads through its gather
      const int64_t r0 = b * pf_rows / L.g, r1 = (b + 1) * pf_rows / L.g;
      for (const T* p = pf + r0 * TS; p < pf + r1 * TS; p += kLine) __builtin_prefetch(p, 0, 2);
    }
    T* gblock = g + b * L.bm * TS;
    for (int64_t i = 0; i < L.bm; ++i) {  // dz = dh * act'(h), and the bias gradient
      T* gr = gblock + i * TS;
      const T* hr = h + (b * L.bm + i) * TS;
      V<T> sum = splat<T>(0);
      for (int c = 0; c < NV; ++c) {
        const V<T> dz = act_grad<T, A>(load(gr + c * kW<T>), load(hr + c * kW<T>));
        store(gr + c * kW<T>, dz);
        sum += dz;
      }
      if (gb) gb[L.row_perm[b * L.bm + i]] += hsum<T>(sum);
    }
    for (int64_t k = 0; k < L.bn; ++k) src[k] = in + L.gather[b * L.bn + k] * TS;
    T* gwb = gw + b * L.bm * L.bn;
    for (int64_t i = 0; i < L.bm; ++i) {  // dW[i, k] += <dz_i, in_k>
      V<T> dz[NV];
      for (int c = 0; c < NV; ++c) dz[c] = load(gblock + i * TS + c * kW<T>);
      for (int64_t k = 0; k < L.bn; ++k) {
        V<T> acc = dz[0] * load(src[k]);
        for (int c = 1; c < NV; ++c) acc += dz[c] * load(src[k] + c * kW<T>);
        gwb[i * L.bn + k] += hsum<T>(acc);
      }
    }
    if (!gin) continue;
    for (int64_t i = 0; i < L.bm; ++i) src[i] = gblock + i * TS;
    for (int64_t k = 0; k < L.bn; ++k) dst[k] = gin + L.gather[b * L.bn + k] * TS;
    // gin[k] = sum_i w[i, k] dz_i: rows k, coefficients w[i*bn + k] (rs = 1, cs = bn)
    rows_all<T, NV, kIdentity>(L.bn, L.w + b * L.bm * L.bn, 1, L.bn, L.bm, src.data(), nullptr, dst.data());
  }
}

template <typename T, int NV>
void forward_dispatch(const Layer<T>& L, const T* in, T* out) {
  switch (L.act) {
    case kTanh: layer_forward<T, NV, kTanh>(L, in, out); break;
    case kRelu: layer_forward<T, NV, kRelu>(L, in, out); break;
    default: layer_forward<T, NV, kIdentity>(L, in, out); break;
  }
}

template <typename T, int NV>
void backward_dispatch(const Layer<T>& L, const T* h, const T* in, T* g, T* gin, T* gw, T* gb, const T* pf,
                       int64_t pf_rows) {
  switch (L.act) {
    case kTanh: layer_backward<T, NV, kTanh>(L, h, in, g, gin, gw, gb, pf, pf_rows); break;
    case kRelu: layer_backward<T, NV, kRelu>(L, h, in, g, gin, gw, gb, pf, pf_rows); break;
    default: layer_backward<T, NV, kIdentity>(L, h, in, g, gin, gw, gb, pf, pf_rows); break;
  }
}

// ---------------------------------------------------------------------------------------------
// Shapes, threads, workspace

template <typename T>
struct Chain {
  std::vector<Layer<T>> layers;
  int64_t batch, n0, total_m, max_m, total_w, total_b;
};

template <typename T>
Chain<T> make_chain(const at::Tensor& x, const std::vector<at::Tensor>& blocks, const std::vector<at::Tensor>& biases,
                    const std::vector<at::Tensor>& gathers, const std::vector<at::Tensor>& row_perms,
                    const at::Tensor& final_inverse, const std::vector<int64_t>& acts) {
  const size_t depth = blocks.size();
  TORCH_CHECK(depth > 0 && biases.size() == depth && gathers.size() == depth && row_perms.size() == depth &&
                  acts.size() == depth,
              "sao chain kernel: give one blocks, bias, gather, row_perm and activation per layer");
  Chain<T> ch;
  ch.batch = x.size(0), ch.n0 = x.size(1);
  ch.layers.resize(depth);
  int64_t h_off = 0, w_off = 0, b_off = 0, max_m = ch.n0;
  for (size_t l = 0; l < depth; ++l) {
    const at::Tensor& w = blocks[l];
    TORCH_CHECK(w.dim() == 3 && w.is_contiguous() && w.scalar_type() == x.scalar_type(),
                "sao chain kernel: blocks[", l, "] must be a contiguous (g, bm, bn) tensor of x's dtype");
    Layer<T>& L = ch.layers[l];
    L.w = w.data_ptr<T>();
    L.g = w.size(0), L.bm = w.size(1), L.bn = w.size(2), L.m = L.g * L.bm, L.n = L.g * L.bn;
    const bool has_bias = biases[l].defined() && biases[l].numel() > 0;
    TORCH_CHECK(!has_bias || (biases[l].numel() == L.m && biases[l].is_contiguous() &&
                              biases[l].scalar_type() == x.scalar_type()),
                "sao chain kernel: bias of layer ", l, " must be a contiguous (", L.m, ",) tensor of x's dtype");
    L.bias = has_bias ? biases[l].data_ptr<T>() : nullptr;
    TORCH_CHECK(gathers[l].numel() == L.n && row_perms[l].numel() == L.m &&
                    gathers[l].scalar_type() == at::kLong && row_perms[l].scalar_type() == at::kLong &&
                    gathers[l].is_contiguous() && row_perms[l].is_contiguous(),
                "sao chain kernel: gather / row_perm of layer ", l, " must be contiguous int64 of sizes ", L.n,
                " / ", L.m);
    TORCH_CHECK(l == 0 ? L.n == ch.n0 : ch.layers[l - 1].m == L.n, "sao chain kernel: layer ", l, " takes ", L.n,
                " inputs but receives ", l == 0 ? ch.n0 : ch.layers[l - 1].m);
    TORCH_CHECK(acts[l] >= kIdentity && acts[l] <= kRelu, "sao chain kernel: unknown activation code ", acts[l]);
    L.gather = gathers[l].data_ptr<int64_t>();
    L.row_perm = row_perms[l].data_ptr<int64_t>();
    L.act = static_cast<int>(acts[l]);
    L.h_off = h_off, L.w_off = w_off, L.b_off = b_off;
    h_off += L.m, w_off += w.numel(), b_off += L.m, max_m = std::max(max_m, L.m);
  }
  TORCH_CHECK(final_inverse.numel() == ch.layers.back().m && final_inverse.scalar_type() == at::kLong &&
                  final_inverse.is_contiguous(),
              "sao chain kernel: final_inverse must be contiguous int64 of size ", ch.layers.back().m);
  ch.total_m = h_off, ch.max_m = max_m, ch.total_w = w_off, ch.total_b = b_off;
  return ch;
}

// One layer with the identity activation: its backward needs only the input, so no output is saved.
template <typename T>
bool single_identity(const Chain<T>& ch) {
  return ch.layers.size() == 1 && ch.layers[0].act == kIdentity;
}

// Vectors per tile: the fewest (1, 2 or 4) that hold one thread's share of the batch.
template <typename T>
int tile_vectors(int64_t batch) {
  const int64_t threads = at::in_parallel_region() ? 1 : std::max(1, at::get_num_threads());
  const int64_t share = (batch + threads - 1) / threads;
  return share <= kW<T> ? 1 : share <= 2 * kW<T> ? 2 : 4;
}

inline int threads_for(int64_t tiles) {
  if (at::in_parallel_region()) return 1;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tiles)));
}

inline std::pair<int64_t, int64_t> thread_range(int64_t tiles, int nt, int t) {
  const int64_t chunk = (tiles + nt - 1) / nt;
  const int64_t lo = std::min(tiles, t * chunk);
  return {lo, std::min(tiles, lo + chunk)};
}

std::mutex pool_mutex;
std::vector<at::Tensor> pool;  // at most kPoolSize saved-output buffers, reused once nobody else holds them
constexpr size_t kPoolSize = 2;

at::Tensor workspace(int64_t numel, const at::TensorOptions& options) {
  std::lock_guard<std::mutex> guard(pool_mutex);
  at::Tensor* spare = nullptr;
  for (auto& t : pool) {
    if (t.storage().use_count() != 1 || t.scalar_type() != options.dtype().toScalarType()) continue;
    if (t.numel() >= numel) return t.narrow(0, 0, numel);
    spare = &t;
  }
  at::Tensor fresh = at::empty({numel}, options);
  if (spare) *spare = fresh;
  else if (pool.size() < kPoolSize) pool.push_back(fresh);
  return fresh.narrow(0, 0, numel);
}

void clear_workspace() {
  std::lock_guard<std::mutex> guard(pool_mutex);
  pool.clear();
}

// ---------------------------------------------------------------------------------------------
// Passes

template <typename T, int NV>
void forward_pass(const Chain<T>& ch, const T* xp, T* yp, T* hp, const int64_t* fi) {
  constexpr int64_t TS = NV * kW<T>;
  const int64_t tiles = (ch.batch + TS - 1) / TS, m_last = ch.layers.back().m;
  const int nt = threads_for(tiles);
#pragma omp parallel num_threads(nt)
  {
    auto [lo, hi] = thread_range(tiles, nt, omp_get_thread_num());
    std::vector<T> xt(ch.n0 * TS), ping(hp ? 0 : ch.max_m * TS), pong(hp ? 0 : ch.max_m * TS);
    for (int64_t tau = lo; tau < hi; ++tau) {
      const int64_t s0 = tau * TS, len = std::min(TS, ch.batch - s0);
      std::fill(xt.begin(), xt.end(), T(0));
      for (int64_t s = 0; s < len; ++s)
        for (int64_t f = 0; f < ch.n0; ++f) xt[f * TS + s] = xp[(s0 + s) * ch.n0 + f];
      const T* in = xt.data();
      for (size_t l = 0; l < ch.layers.size(); ++l) {
        const Layer<T>& L = ch.layers[l];
        T* out = hp ? hp + (tau * ch.total_m + L.h_off) * TS : (l % 2 ? pong.data() : ping.data());
        forward_dispatch<T, NV>(L, in, out);
        in = out;
      }
      for (int64_t s = 0; s < len; ++s)
        for (int64_t j = 0; j < m_last; ++j) yp[(s0 + s) * m_last + j] = in[fi[j] * TS + s];
    }
  }
}

template <typename T, int NV>
void backward_pass(const Chain<T>& ch, const T* xp, const T* gyp, const T* hp, const int64_t* fi, T* gxp, T* gw0,
                   T* gb0, at::Tensor& scratch) {
  constexpr int64_t TS = NV * kW<T>;
  const int64_t tiles = (ch.batch + TS - 1) / TS, m_last = ch.layers.back().m;
  const int64_t depth = static_cast<int64_t>(ch.layers.size()), per_thread = ch.total_w + ch.total_b;
  const int nt = threads_for(tiles);
  if (nt > 1) scratch = at::zeros({(nt - 1) * per_thread}, scratch.options());
  T* sp = nt > 1 ? scratch.data_ptr<T>() : nullptr;
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num();
    auto [lo, hi] = thread_range(tiles, nt, t);
    T* gw = t ? sp + (t - 1) * per_thread : gw0;
    T* gb = t ? gw + ch.total_w : gb0;
    std::vector<T> xt(ch.n0 * TS), ga(ch.max_m * TS), gbuf(ch.max_m * TS);
    for (int64_t tau = lo; tau < hi; ++tau) {
      const int64_t s0 = tau * TS, len = std::min(TS, ch.batch - s0);
      const T* htile = hp ? hp + tau * ch.total_m * TS : nullptr;  // none saved: one identity layer
      std::fill(xt.begin(), xt.end(), T(0));
      for (int64_t s = 0; s < len; ++s)
        for (int64_t f = 0; f < ch.n0; ++f) xt[f * TS + s] = xp[(s0 + s) * ch.n0 + f];
      T* g = ga.data();
      T* gin = gbuf.data();
      std::fill(ga.begin(), ga.end(), T(0));  // padded samples carry a zero gradient
      for (int64_t s = 0; s < len; ++s)
        for (int64_t j = 0; j < m_last; ++j) g[fi[j] * TS + s] = gyp[(s0 + s) * m_last + j];
      for (int64_t l = depth - 1; l >= 0; --l) {
        const Layer<T>& L = ch.layers[l];
        const T* in = l ? htile + ch.layers[l - 1].h_off * TS : xt.data();
        const T* pf = l >= 2 ? htile + ch.layers[l - 2].h_off * TS : nullptr;
        // without saved outputs (one identity layer, whose derivative ignores them) h points at g: readable, unused
        const T* h = htile ? htile + L.h_off * TS : g;
        backward_dispatch<T, NV>(L, h, in, g, (l || gxp) ? gin : nullptr, gw + L.w_off,
                                 L.bias ? gb + L.b_off : nullptr, pf, l >= 2 ? ch.layers[l - 2].m : 0);
        std::swap(g, gin);
      }
      if (gxp)
        for (int64_t s = 0; s < len; ++s)
          for (int64_t f = 0; f < ch.n0; ++f) gxp[(s0 + s) * ch.n0 + f] = g[f * TS + s];
    }
  }
  if (nt > 1) {
    at::parallel_for(0, per_thread, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        T* d = e < ch.total_w ? gw0 + e : gb0 + (e - ch.total_w);
        T total = *d;
        for (int u = 1; u < nt; ++u) total += sp[(u - 1) * per_thread + e];
        *d = total;
      }
    });
  }
}

void check_x(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.is_contiguous(),
              "sao chain kernel: x must be a contiguous (B, n) CPU tensor");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "sao chain kernel: dtype must be float32 or float64, got ", x.scalar_type());
}

template <typename T>
std::vector<at::Tensor> forward_impl(const at::Tensor& x, const std::vector<at::Tensor>& blocks,
                                     const std::vector<at::Tensor>& biases, const std::vector<at::Tensor>& gathers,
                                     const std::vector<at::Tensor>& row_perms, const at::Tensor& final_inverse,
                                     const std::vector<int64_t>& acts, bool save) {
  const Chain<T> ch = make_chain<T>(x, blocks, biases, gathers, row_perms, final_inverse, acts);
  const int nv = tile_vectors<T>(ch.batch);
  const int64_t ts = nv * kW<T>, tiles = (ch.batch + ts - 1) / ts;
  at::Tensor y = at::empty({ch.batch, ch.layers.back().m}, x.options());
  // the backward of one identity layer needs only x: nothing of its output is saved
  save = save && !single_identity(ch);
  at::Tensor H = save && tiles ? workspace(tiles * ts * ch.total_m, x.options()) : at::empty({0}, x.options());
  if (ch.batch > 0) {
    const T* xp = x.data_ptr<T>();
    T* yp = y.data_ptr<T>();
    T* hp = save ? H.data_ptr<T>() : nullptr;
    const int64_t* fi = final_inverse.data_ptr<int64_t>();
    if (nv == 1) forward_pass<T, 1>(ch, xp, yp, hp, fi);
    else if (nv == 2) forward_pass<T, 2>(ch, xp, yp, hp, fi);
    else forward_pass<T, 4>(ch, xp, yp, hp, fi);
  }
  return {y, H, at::scalar_tensor(static_cast<int64_t>(nv), at::kLong)};
}

template <typename T>
std::vector<at::Tensor> backward_impl(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& H,
                                      int64_t nv, const std::vector<at::Tensor>& blocks,
                                      const std::vector<at::Tensor>& biases, const std::vector<at::Tensor>& gathers,
                                      const std::vector<at::Tensor>& row_perms, const at::Tensor& final_inverse,
                                      const std::vector<int64_t>& acts, bool need_x) {
  const Chain<T> ch = make_chain<T>(x, blocks, biases, gathers, row_perms, final_inverse, acts);
  TORCH_CHECK(nv == 1 || nv == 2 || nv == 4, "sao chain kernel: bad tile width");
  const int64_t ts = nv * kW<T>, tiles = (ch.batch + ts - 1) / ts;
  TORCH_CHECK((H.numel() == tiles * ts * ch.total_m || (H.numel() == 0 && single_identity(ch))) && H.is_contiguous(),
              "sao chain kernel: the saved outputs do not match this chain");
  TORCH_CHECK(grad_y.is_contiguous() && grad_y.scalar_type() == x.scalar_type() && grad_y.dim() == 2 &&
                  grad_y.size(0) == ch.batch && grad_y.size(1) == ch.layers.back().m,
              "sao chain kernel: grad_y must be a contiguous (B, m) tensor of x's dtype");
  at::Tensor gw_all = at::zeros({ch.total_w}, x.options());
  at::Tensor gb_all = at::zeros({ch.total_b}, x.options());
  // every element is written by the tile that holds its sample (backward_pass): no zero fill needed
  at::Tensor gx = need_x ? at::empty({ch.batch, ch.n0}, x.options()) : at::Tensor();
  at::Tensor scratch = at::empty({0}, x.options());
  if (ch.batch > 0) {
    const T* xp = x.data_ptr<T>();
    const T* gyp = grad_y.data_ptr<T>();
    const T* hp = H.numel() ? H.data_ptr<T>() : nullptr;
    const int64_t* fi = final_inverse.data_ptr<int64_t>();
    T* gxp = need_x ? gx.data_ptr<T>() : nullptr;
    T* gw = gw_all.data_ptr<T>();
    T* gb = gb_all.data_ptr<T>();
    if (nv == 1) backward_pass<T, 1>(ch, xp, gyp, hp, fi, gxp, gw, gb, scratch);
    else if (nv == 2) backward_pass<T, 2>(ch, xp, gyp, hp, fi, gxp, gw, gb, scratch);
    else backward_pass<T, 4>(ch, xp, gyp, hp, fi, gxp, gw, gb, scratch);
  }
  std::vector<at::Tensor> out{gx};
  for (size_t l = 0; l < blocks.size(); ++l)
    out.push_back(gw_all.narrow(0, ch.layers[l].w_off, blocks[l].numel()).view(blocks[l].sizes()));
  for (size_t l = 0; l < blocks.size(); ++l)
    out.push_back(ch.layers[l].bias ? gb_all.narrow(0, ch.layers[l].b_off, ch.layers[l].m) : at::Tensor());
  return out;
}

std::vector<at::Tensor> chain_forward(const at::Tensor& x, const std::vector<at::Tensor>& blocks,
                                      const std::vector<at::Tensor>& biases, const std::vector<at::Tensor>& gathers,
                                      const std::vector<at::Tensor>& row_perms, const at::Tensor& final_inverse,
                                      const std::vector<int64_t>& acts, bool save) {
  check_x(x);
  if (x.scalar_type() == at::kFloat)
    return forward_impl<float>(x, blocks, biases, gathers, row_perms, final_inverse, acts, save);
  return forward_impl<double>(x, blocks, biases, gathers, row_perms, final_inverse, acts, save);
}

std::vector<at::Tensor> chain_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& H, int64_t nv,
                                       const std::vector<at::Tensor>& blocks, const std::vector<at::Tensor>& biases,
                                       const std::vector<at::Tensor>& gathers,
                                       const std::vector<at::Tensor>& row_perms, const at::Tensor& final_inverse,
                                       const std::vector<int64_t>& acts, bool need_x) {
  check_x(x);
  if (x.scalar_type() == at::kFloat)
    return backward_impl<float>(grad_y, x, H, nv, blocks, biases, gathers, row_perms, final_inverse, acts, need_x);
  return backward_impl<double>(grad_y, x, H, nv, blocks, biases, gathers, row_perms, final_inverse, acts, need_x);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &chain_forward, "chain forward -> [y, saved outputs, tile vectors]");
  m.def("backward", &chain_backward, "chain backward -> [grad_x, *grad_blocks, *grad_biases]");
  m.def("clear_workspace", &clear_workspace, "drop the pooled saved-output buffers");
}
