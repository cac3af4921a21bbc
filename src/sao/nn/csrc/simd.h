// SIMD building blocks shared by the compiled kernels (chain_cpu.cpp, conv_cpu.cpp): 64-byte vectors
// (GCC vector extensions, one AVX-512 register or two AVX2 ones), the elementwise activations and the
// register-tiled micro-kernel rows_kernel, which computes RB output rows of NV vectors from K source
// rows: dst[r] = act(bias[r] + sum_k coef[r*rs + k*cs] * src[k]).
#pragma once

#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace sao_simd {

typedef float vfloat __attribute__((vector_size(64)));
typedef double vdouble __attribute__((vector_size(64)));

template <typename T> struct VecOf;
template <> struct VecOf<float> { using type = vfloat; };
template <> struct VecOf<double> { using type = vdouble; };

template <typename T> using V = typename VecOf<T>::type;
template <typename T> constexpr int kW = 64 / sizeof(T);  // lanes per vector

template <typename T> inline V<T> load(const T* p) { V<T> v; std::memcpy(&v, p, sizeof(v)); return v; }
template <typename T> inline void store(T* p, V<T> v) { std::memcpy(p, &v, sizeof(v)); }
template <typename T> inline V<T> splat(T x) { return V<T>{} + x; }
template <typename T, int N> struct Half;  // the N/2-lane vector type of an N-lane vector
template <> struct Half<float, 16> { typedef float type __attribute__((vector_size(32))); };
template <> struct Half<float, 8> { typedef float type __attribute__((vector_size(16))); };
template <> struct Half<float, 4> { typedef float type __attribute__((vector_size(8))); };
template <> struct Half<double, 8> { typedef double type __attribute__((vector_size(32))); };
template <> struct Half<double, 4> { typedef double type __attribute__((vector_size(16))); };

// Sum of the lanes, as a tree of half-vector adds (the compiler's lane-by-lane loop is ~4x slower).
template <typename T, int N, typename Vec>
inline T hsum_tree(Vec v) {
  if constexpr (N == 2) {
    return v[0] + v[1];
  } else {
    typename Half<T, N>::type lo, hi;
    std::memcpy(&lo, &v, sizeof(lo));
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo), sizeof(hi));
    return hsum_tree<T, N / 2>(lo + hi);
  }
}
template <typename T> inline T hsum(V<T> v) { return hsum_tree<T, kW<T>>(v); }

enum Act : int { kIdentity = 0, kTanh = 1, kRelu = 2 };

// tanh for float: Eigen's rational approximation (generic_fast_tanh_float) on whole vectors, a few
// ulp from std::tanh. Double applies std::tanh per lane (exactness for tests and float64 runs).
inline vfloat tanh_vec(vfloat x) {
  const vfloat c = x < -7.90531110763549805f ? splat<float>(-7.90531110763549805f)
                 : (x > 7.90531110763549805f ? splat<float>(7.90531110763549805f) : x);
  const vfloat x2 = c * c;
  vfloat p = splat<float>(-2.76076847742355e-16f);
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * c;
  vfloat q = splat<float>(1.19825839466702e-06f);
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  const vfloat r = p / q;
  const vfloat ax = x < 0.0f ? -x : x;
  return ((ax < 0.0004f) | (x != x)) ? x : r;  // tiny: tanh(x) = x in float; NaN propagates
}
inline vdouble tanh_vec(vdouble x) {
  for (int i = 0; i < kW<double>; ++i) x[i] = std::tanh(x[i]);
  return x;
}

template <typename T, int A>
inline V<T> act_fwd(V<T> z) {
  if constexpr (A == kTanh) return tanh_vec(z);
  if constexpr (A == kRelu) return z < T(0) ? splat<T>(0) : z;  // NaN propagates, as torch.relu
  return z;
}

template <typename T, int A>
inline V<T> act_grad(V<T> g, V<T> h) {  // dL/dz from dL/dh and the saved h = act(z), as autograd does
  if constexpr (A == kTanh) return g * (T(1) - h * h);
  if constexpr (A == kRelu) return h > T(0) ? g : splat<T>(0);
  return g;
}

// dst[r] = act(bias[r] + sum_c coef[r*rs + c*cs] * src[c]) for RB rows, each NV vectors long.
template <typename T, int NV, int RB, int A>
inline void rows_kernel(const T* coef, int64_t rs, int64_t cs, int64_t K, const T* const* src, const T* bias,
                        T* const* dst) {
  V<T> acc[RB][NV];
  for (int r = 0; r < RB; ++r)
    for (int c = 0; c < NV; ++c) acc[r][c] = splat<T>(bias ? bias[r] : T(0));
  for (int64_t k = 0; k < K; ++k) {
    V<T> in[NV];
    for (int c = 0; c < NV; ++c) in[c] = load(src[k] + c * kW<T>);
    for (int r = 0; r < RB; ++r) {
      const T w = coef[r * rs + k * cs];
      for (int c = 0; c < NV; ++c) acc[r][c] += w * in[c];
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int c = 0; c < NV; ++c) store(dst[r] + c * kW<T>, act_fwd<T, A>(acc[r][c]));
}

}  // namespace sao_simd
