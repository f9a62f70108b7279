// Resampling kernel for kernels.geometry.warp on CPU, called from JAX through the XLA FFI.
//
// One pass per sample: input coordinates = matrix @ output voxel + displacement; the image is
// interpolated linearly and the label map takes the nearest voxel (ties round up, floor(x + 0.5)),
// both reading 0 outside [0, n-1] on any axis (scipy.ndimage mode="constant", cval=0). The
// arithmetic follows kernels.geometry._map_linear / _map_nearest operation by operation, so the two
// forms agree to float32 rounding (XLA may contract a multiply-add the kernel does not); a label
// differs only where a sample point lies within that rounding of a half-voxel boundary.
//
// Why it exists: XLA:CPU runs a gather as a scalar loop with its index arithmetic inline, 2^D + 1 of
// them per sample here, and recomputes the displacement field's last B-spline stage inside them.
// This kernel computes each row's coordinates, corners and weights in vectorised passes, then does
// the reads, on XLA's intra-op thread pool (docs/performance.md, "Session 7", for the measurements).
//
// Layouts (row-major, any number of leading batch dims B..., D = 2 or 3, S = spatial shape):
//   image [B..., *S, C] f32, label [B..., *S] s32 (ignored unless has_label),
//   matrix [B..., D, D+1] f32 (output voxel -> input voxel), disp [B..., D, *S] f32 (ignored unless
//   has_disp); results: image [B..., *S, C] f32, label with the label operand's shape.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Problem {
  const float* image;
  const int32_t* label;
  const float* matrix;
  const float* disp;
  float* out_image;
  int32_t* out_label;
  int64_t d, nz, ny, nx, c, batch;
  bool has_label, has_disp;
};

// Per-row scratch: pass 1 computes every voxel's corner index and weights with plain arithmetic on
// arrays (auto-vectorised), pass 2 does the reads. One scalar loop doing both ran at ~15 ns a voxel.
struct Row {
  std::vector<float> cz, cy, cx, wz, wy, wx;
  std::vector<int32_t> base, nearest;
  std::vector<int32_t> inside;
  void resize(int64_t n) {
    for (auto* v : {&cz, &cy, &cx, &wz, &wy, &wx}) v->resize(n);
    base.resize(n);
    nearest.resize(n);
    inside.resize(n);
  }
};

// Value selects (std::min/max return references, which keeps GCC from vectorising the loops).
inline float lo_of(float a, float b) { return a < b ? a : b; }
inline float hi_of(float a, float b) { return a > b ? a : b; }

// One axis as kernels.geometry._map_linear / _map_nearest compute it, over a row: x clipped to [0, n-1],
// the lower corner floor(x) capped at n-2 (so the upper corner stays inside), the fraction, the nearest
// voxel; outside (or NaN) voxels get a safe 0 (their output is zeroed later).
inline void axis_row(const float* __restrict cin, const int32_t* __restrict in, int64_t count, int64_t n,
                     int32_t stride, int32_t* __restrict base, int32_t* __restrict near,
                     float* __restrict frac) {
  const float hi = static_cast<float>(n - 1);
  const float cap = static_cast<float>(n > 2 ? n - 2 : 0);
#pragma omp simd
  for (int64_t x = 0; x < count; ++x) {
    const float v = lo_of(hi_of(cin[x], 0.0f), hi);
    const float xc = in[x] ? v : 0.0f;
    const float f = lo_of(std::floor(xc), cap);
    frac[x] = xc - f;
    base[x] += static_cast<int32_t>(f) * stride;
    near[x] += static_cast<int32_t>(lo_of(std::floor(xc + 0.5f), hi)) * stride;
  }
}

// One row of output voxels: batch b, output plane z (0 in 2D), output row y.
template <int D>
void run_row(const Problem& p, int64_t b, int64_t z, int64_t y, Row& r) {
  const int64_t nx = p.nx, nvox = p.nz * p.ny * p.nx, c = p.c;
  const float* m = p.matrix + b * D * (D + 1);
  const float* img = p.image + b * nvox * c;
  const float* disp = p.has_disp ? p.disp + b * D * nvox : nullptr;
  const int64_t row = (z * p.ny + y) * nx;
  const int32_t sz = static_cast<int32_t>(p.ny * p.nx), sy = static_cast<int32_t>(p.nx);
  const float fz = static_cast<float>(z), fy = static_cast<float>(y);
  const float hz = static_cast<float>(p.nz - 1), hy = static_cast<float>(p.ny - 1), hx = static_cast<float>(nx - 1);
  float* __restrict cz = r.cz.data();
  float* __restrict cy = r.cy.data();
  float* __restrict cx = r.cx.data();
  int32_t* __restrict inside = r.inside.data();
  // c_i = m[i, D] + sum_j m[i, j] * ramp_j (+ disp[i]) in the order _axis_coordinates adds them.
  if (D == 3) {
    const float a0 = m[3] + m[0] * fz + m[1] * fy, b0 = m[7] + m[4] * fz + m[5] * fy;
    const float c0 = m[11] + m[8] * fz + m[9] * fy;
    for (int64_t x = 0; x < nx; ++x) {
      const float fx = static_cast<float>(x);
      cz[x] = a0 + m[2] * fx;
      cy[x] = b0 + m[6] * fx;
      cx[x] = c0 + m[10] * fx;
    }
  } else {
    const float b0 = m[2] + m[0] * fy, c0 = m[5] + m[3] * fy;
    for (int64_t x = 0; x < nx; ++x) {
      const float fx = static_cast<float>(x);
      cy[x] = b0 + m[1] * fx;
      cx[x] = c0 + m[4] * fx;
    }
  }
  if (disp) {
    const float* __restrict d0 = disp + row;
    const float* __restrict d1 = disp + nvox + row;
    if (D == 3) {
      const float* __restrict d2 = disp + 2 * nvox + row;
      for (int64_t x = 0; x < nx; ++x) {
        cz[x] = cz[x] + d0[x];
        cy[x] = cy[x] + d1[x];
        cx[x] = cx[x] + d2[x];
      }
    } else {
      for (int64_t x = 0; x < nx; ++x) {
        cy[x] = cy[x] + d0[x];
        cx[x] = cx[x] + d1[x];
      }
    }
  }
  // Comparisons written so NaN counts as outside.
#pragma omp simd
  for (int64_t x = 0; x < nx; ++x) {
    int in = (cy[x] >= 0.0f) & (cy[x] <= hy) & (cx[x] >= 0.0f) & (cx[x] <= hx);
    if (D == 3) in &= (cz[x] >= 0.0f) & (cz[x] <= hz);
    inside[x] = in;
  }
  int32_t* __restrict base = r.base.data();
  int32_t* __restrict near = r.nearest.data();
  for (int64_t x = 0; x < nx; ++x) base[x] = near[x] = 0;
  if (D == 3) axis_row(cz, inside, nx, p.nz, sz, base, near, r.wz.data());
  axis_row(cy, inside, nx, p.ny, sy, base, near, r.wy.data());
  axis_row(cx, inside, nx, nx, 1, base, near, r.wx.data());
  const int32_t step_z = p.nz > 1 ? sz : 0, step_y = p.ny > 1 ? sy : 0, step_x = nx > 1 ? 1 : 0;
  float* out = p.out_image + (b * nvox + row) * c;
  // Corner q has bits (z, y, x) = (q >> 2, (q >> 1) & 1, q & 1): the order of itertools.product((0, 1),
  // repeat=D) in _map_linear, with its weight product w_z * w_y * w_x, summed in that order.
  const float* __restrict wzr = r.wz.data();
  const float* __restrict wyr = r.wy.data();
  const float* __restrict wxr = r.wx.data();
  // The common single-channel case as its own loop, which the compiler vectorises (gathers where the ISA has
  // them): interleaved against the general loop alone, 15.6-21.4 vs 17.7-28.1 ms per 2 x 96^3 on one core.
  if (c == 1) {
    float* __restrict o = out;
    const float* __restrict v = img;
#pragma omp simd
    for (int64_t x = 0; x < nx; ++x) {
      const float wz = wzr[x], wy = wyr[x], wx = wxr[x];
      const float uz = 1.0f - wz, uy = 1.0f - wy, ux = 1.0f - wx;
      const int32_t i = base[x];
      float acc;
      if (D == 3) {
        acc = v[i] * (uz * uy * ux);
        acc = acc + v[i + step_x] * (uz * uy * wx);
        acc = acc + v[i + step_y] * (uz * wy * ux);
        acc = acc + v[i + step_y + step_x] * (uz * wy * wx);
        acc = acc + v[i + step_z] * (wz * uy * ux);
        acc = acc + v[i + step_z + step_x] * (wz * uy * wx);
        acc = acc + v[i + step_z + step_y] * (wz * wy * ux);
        acc = acc + v[i + step_z + step_y + step_x] * (wz * wy * wx);
      } else {
        acc = v[i] * (uy * ux);
        acc = acc + v[i + step_x] * (uy * wx);
        acc = acc + v[i + step_y] * (wy * ux);
        acc = acc + v[i + step_y + step_x] * (wy * wx);
      }
      o[x] = inside[x] ? acc : 0.0f;
    }
  } else {
    for (int64_t x = 0; x < nx; ++x) {
      const float az[2] = {1.0f - r.wz[x], r.wz[x]}, ay[2] = {1.0f - r.wy[x], r.wy[x]};
      const float ax[2] = {1.0f - r.wx[x], r.wx[x]};
      const int64_t o0 = static_cast<int64_t>(r.base[x]) * c;
      const bool in = r.inside[x];
      for (int64_t k = 0; k < c; ++k) {
        const float* v = img + o0 + k;
        float acc;
        if (D == 3) {
          acc = v[0] * (az[0] * ay[0] * ax[0]);
          acc = acc + v[step_x * c] * (az[0] * ay[0] * ax[1]);
          acc = acc + v[step_y * c] * (az[0] * ay[1] * ax[0]);
          acc = acc + v[(step_y + step_x) * c] * (az[0] * ay[1] * ax[1]);
          acc = acc + v[step_z * c] * (az[1] * ay[0] * ax[0]);
          acc = acc + v[(step_z + step_x) * c] * (az[1] * ay[0] * ax[1]);
          acc = acc + v[(step_z + step_y) * c] * (az[1] * ay[1] * ax[0]);
          acc = acc + v[(step_z + step_y + step_x) * c] * (az[1] * ay[1] * ax[1]);
        } else {
          acc = v[0] * (ay[0] * ax[0]);
          acc = acc + v[step_x * c] * (ay[0] * ax[1]);
          acc = acc + v[step_y * c] * (ay[1] * ax[0]);
          acc = acc + v[(step_y + step_x) * c] * (ay[1] * ax[1]);
        }
        out[x * c + k] = in ? acc : 0.0f;
      }
    }
  }
  if (p.has_label) {
    const int32_t* lab = p.label + b * nvox;
    int32_t* out_lab = p.out_label + b * nvox + row;
    int32_t* __restrict ol = out_lab;
#pragma omp simd
    for (int64_t x = 0; x < nx; ++x) ol[x] = inside[x] ? lab[near[x]] : 0;
  }
}

// Rows are handed out from an atomic counter to the calling thread and to tasks on XLA's intra-op
// pool; the caller waits only for rows that a running task has taken, so a pool that never runs
// a task (busy, or the caller is its only thread) cannot deadlock the call.
struct Shared {
  Problem p;
  int64_t rows;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex mu;
  std::condition_variable cv;
};

void work(const std::shared_ptr<Shared>& s) {
  const int64_t planes = s->p.nz, ny = s->p.ny;
  Row r;
  r.resize(s->p.nx);
  for (int64_t i; (i = s->next.fetch_add(1)) < s->rows;) {
    const int64_t y = i % ny, zb = i / ny;
    if (s->p.d == 3) {
      run_row<3>(s->p, zb / planes, zb % planes, y, r);
    } else {
      run_row<2>(s->p, zb / planes, zb % planes, y, r);
    }
    if (s->done.fetch_add(1) + 1 == s->rows) {
      std::lock_guard<std::mutex> lock(s->mu);
      s->cv.notify_all();
    }
  }
}

ffi::Error Warp(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> image, ffi::Buffer<ffi::S32> label,
                ffi::Buffer<ffi::F32> matrix, ffi::Buffer<ffi::F32> disp,
                ffi::ResultBuffer<ffi::F32> out_image, ffi::ResultBuffer<ffi::S32> out_label,
                int64_t ndim, int64_t has_label, int64_t has_disp) {
  auto dims = image.dimensions();
  const int64_t rank = static_cast<int64_t>(dims.size());
  if (ndim != 2 && ndim != 3) return ffi::Error::InvalidArgument("warp: ndim must be 2 or 3");
  if (rank < ndim + 1) return ffi::Error::InvalidArgument("warp: image rank is below ndim + 1");
  auto s = std::make_shared<Shared>();
  Problem& p = s->p;
  p.d = ndim;
  p.c = dims[rank - 1];
  p.nx = dims[rank - 2];
  p.ny = dims[rank - 3];
  p.nz = ndim == 3 ? dims[rank - 4] : 1;
  const int64_t nvox = p.nz * p.ny * p.nx;
  if (nvox == 0 || p.c == 0) return ffi::Error::Success();
  if (nvox * p.c >= (int64_t{1} << 31))
    return ffi::Error::InvalidArgument("warp: one sample must have fewer than 2^31 values");
  p.batch = static_cast<int64_t>(image.element_count()) / (nvox * p.c);
  if (static_cast<int64_t>(matrix.element_count()) != p.batch * ndim * (ndim + 1))
    return ffi::Error::InvalidArgument("warp: matrix must be [..., D, D+1] per sample");
  p.has_label = has_label != 0;
  p.has_disp = has_disp != 0;
  if (p.has_label && static_cast<int64_t>(label.element_count()) != p.batch * nvox)
    return ffi::Error::InvalidArgument("warp: label must be [..., *S] per sample");
  if (p.has_disp && static_cast<int64_t>(disp.element_count()) != p.batch * ndim * nvox)
    return ffi::Error::InvalidArgument("warp: displacement must be [..., D, *S] per sample");
  p.image = image.typed_data();
  p.label = label.typed_data();
  p.matrix = matrix.typed_data();
  p.disp = disp.typed_data();
  p.out_image = out_image->typed_data();
  p.out_label = out_label->typed_data();
  s->rows = p.batch * p.nz * p.ny;
  const int64_t threads = std::min<int64_t>(pool.num_threads(), s->rows);
  // Below ~16k voxels a task costs more than it saves.
  const int64_t helpers = (p.batch * nvox < 16384) ? 0 : std::max<int64_t>(threads - 1, 0);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([s] { work(s); });
  work(s);
  std::unique_lock<std::mutex> lock(s->mu);
  s->cv.wait(lock, [&] { return s->done.load() == s->rows; });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MedzooWarp, Warp,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Attr<int64_t>("ndim")
                                  .Attr<int64_t>("has_label")
                                  .Attr<int64_t>("has_disp"));
