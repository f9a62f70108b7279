// 1D-3D convolutions on CPU through oneDNN, called from JAX through the XLA FFI (kernels/conv.py, "cpu" lowering).
//
// Three targets, float32 or bfloat16 (all operands of one call the same type; oneDNN accumulates in float32; a
// bfloat16 weight gradient without AMX runs oneDNN's float32 kernel on widened operands, see BackwardWeights),
// channels-last as the zoo stores them (x [N, *S, Cin], w [*K, Cin, Cout], y [N, *S', Cout]), strides and
// explicit low/high padding as attributes, no dilation, one group:
//   medzoo_dnnl_conv_fwd         y  = conv(x, w)
//   medzoo_dnnl_conv_bwd_data    dx = conv^T(dy, w)      (x's shape given by the result buffer)
//   medzoo_dnnl_conv_bwd_weights dw = dconv/dw(x, dy)
// Activations stay channels-last (no reorders); weights travel in oneDNN's preferred blocked layout through one
// small reorder per call. Primitives are built once per shape and kept (oneDNN's own JIT kernels: the same
// ones PyTorch's CPU convolutions use). oneDNN runs on its OpenMP threads.
// medzoo_dnnl_bf16_isa() names the instruction set oneDNN dispatches to and whether it computes bfloat16 natively
// (AVX512-BF16 or AMX); kernels.native reports it and kernels.conv routes bfloat16 here only then.

#include <pthread.h>

#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

struct Geometry {
  memory::dims src, wei, dst, strides, pad_lo, pad_hi;
  dt type = dt::f32;  // of every operand
  std::vector<int64_t> key(int kind) const {
    std::vector<int64_t> k{kind, static_cast<int64_t>(type)};
    for (const auto* v : {&src, &wei, &dst, &strides, &pad_lo, &pad_hi}) k.insert(k.end(), v->begin(), v->end());
    return k;
  }
};

// Channels-last buffers (N, *S, C) / (*K, I, O) -> oneDNN's logical (N, C, *S) / (O, I, *K) dims, 1-3 spatial.
Geometry geometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w, ffi::Span<const int64_t> y,
                  ffi::Span<const int64_t> strides, ffi::Span<const int64_t> lo, ffi::Span<const int64_t> hi) {
  const size_t nd = x.size() - 2;
  Geometry g;
  g.src = {x[0], x[nd + 1]};
  g.dst = {y[0], y[nd + 1]};
  g.wei = {w[nd + 1], w[nd]};
  for (size_t i = 0; i < nd; ++i) {
    g.src.push_back(x[1 + i]);
    g.dst.push_back(y[1 + i]);
    g.wei.push_back(w[i]);
  }
  g.strides.assign(strides.begin(), strides.end());
  g.pad_lo.assign(lo.begin(), lo.end());
  g.pad_hi.assign(hi.begin(), hi.end());
  return g;
}

tag act_tag(const Geometry& g) {
  return g.src.size() == 5 ? tag::ndhwc : g.src.size() == 4 ? tag::nhwc : tag::nwc;
}
tag wei_tag(const Geometry& g) {
  return g.src.size() == 5 ? tag::dhwio : g.src.size() == 4 ? tag::hwio : tag::wio;
}
memory::dims no_dilation(const Geometry& g) { return memory::dims(g.src.size() - 2, 0); }

struct Plan {
  dnnl::primitive prim;
  memory::desc weights;    // the primitive's (blocked) weights layout
  memory::desc plain;      // the zoo's channels-last weights: DHWIO / HWIO / WIO
  dnnl::reorder to_blocked, to_plain;
};

// Only touched on the worker thread (see Worker below), so it needs no lock of its own.
std::map<std::vector<int64_t>, std::shared_ptr<Plan>>& cache() {
  static auto* c = new std::map<std::vector<int64_t>, std::shared_ptr<Plan>>();
  return *c;
}

dnnl::convolution_forward::primitive_desc forward_pd(const Geometry& g, dnnl::prop_kind kind) {
  memory::desc src(g.src, g.type, act_tag(g)), dst(g.dst, g.type, act_tag(g)), wei(g.wei, g.type, tag::any);
  return dnnl::convolution_forward::primitive_desc(engine(), kind, dnnl::algorithm::convolution_direct, src, wei,
                                                   dst, g.strides, no_dilation(g), g.pad_lo, g.pad_hi);
}

enum Kind { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

std::shared_ptr<Plan> plan(const Geometry& g, Kind kind) {
  auto key = g.key(kind);
  auto it = cache().find(key);
  if (it != cache().end()) return it->second;
  auto p = std::make_shared<Plan>();
  p->plain = memory::desc(g.wei, g.type, wei_tag(g));
  memory::desc src(g.src, g.type, act_tag(g)), dst(g.dst, g.type, act_tag(g)), any(g.wei, g.type, tag::any);
  if (kind == kForward) {
    auto pd = forward_pd(g, dnnl::prop_kind::forward_inference);
    p->prim = dnnl::convolution_forward(pd);
    p->weights = pd.weights_desc();
    p->to_blocked = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), p->plain, engine(), p->weights));
  } else if (kind == kBackwardData) {
    auto hint = forward_pd(g, dnnl::prop_kind::forward_training);
    auto pd = dnnl::convolution_backward_data::primitive_desc(engine(), dnnl::algorithm::convolution_direct, src,
                                                              any, dst, g.strides, no_dilation(g), g.pad_lo,
                                                              g.pad_hi, hint);
    p->prim = dnnl::convolution_backward_data(pd);
    p->weights = pd.weights_desc();
    p->to_blocked = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), p->plain, engine(), p->weights));
  } else {
    auto hint = forward_pd(g, dnnl::prop_kind::forward_training);
    auto pd = dnnl::convolution_backward_weights::primitive_desc(engine(), dnnl::algorithm::convolution_direct,
                                                                 src, any, dst, g.strides, no_dilation(g),
                                                                 g.pad_lo, g.pad_hi, hint);
    p->prim = dnnl::convolution_backward_weights(pd);
    p->weights = pd.diff_weights_desc();
    p->to_plain = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), p->weights, engine(), p->plain));
  }
  cache()[key] = p;
  return p;
}

// Every oneDNN call runs on one long-lived worker thread with a full-size stack, one call at a time: XLA
// runs FFI handlers on its intra-op pool threads, whose stacks are too small for oneDNN's JIT and
// brgemm kernels (a whole 3D U-Net gradient crashed there, each layer alone did not), and each call
// already spreads over every core on oneDNN's OpenMP team.
class Worker {
 public:
  static Worker& get() {
    static Worker* w = new Worker();  // never destroyed: the thread outlives static destruction
    return *w;
  }
  void run(const std::function<void()>& f) {
    std::unique_lock<std::mutex> lock(mu_);
    idle_.wait(lock, [&] { return task_ == nullptr; });
    bool done = false;
    task_ = &f;
    done_ = &done;
    wake_.notify_all();
    finished_.wait(lock, [&] { return done; });
  }

 private:
  Worker() {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, size_t{64} << 20);
    pthread_t t;
    pthread_create(&t, &attr, &Worker::loop, this);
    pthread_attr_destroy(&attr);
    pthread_detach(t);
  }
  static void* loop(void* self) {
    auto* w = static_cast<Worker*>(self);
    std::unique_lock<std::mutex> lock(w->mu_);
    for (;;) {
      w->wake_.wait(lock, [&] { return w->task_ != nullptr; });
      const std::function<void()>* f = w->task_;
      lock.unlock();
      (*f)();
      lock.lock();
      *w->done_ = true;
      w->task_ = nullptr;
      w->finished_.notify_all();
      w->idle_.notify_all();
    }
    return nullptr;
  }
  std::mutex mu_;
  std::condition_variable wake_, finished_, idle_;
  const std::function<void()>* task_ = nullptr;
  bool* done_ = nullptr;
};

template <typename F>
ffi::Error guarded(F&& f) {
  std::string error;
  std::function<void()> task = [&] {
    try {
      f();
    } catch (const dnnl::error& e) {
      error = std::string("oneDNN: ") + e.what();
    } catch (const std::exception& e) {
      error = e.what();
    }
  };
  Worker::get().run(task);
  if (!error.empty()) return ffi::Error::Internal(error);
  return ffi::Error::Success();
}

// The oneDNN type of a call's three operands: all float32 or all bfloat16 (else a clear error).
dt operand_type(ffi::DataType a, ffi::DataType b, ffi::DataType out) {
  if (a != b || a != out)
    throw std::invalid_argument("medzoo_dnnl_conv: the operands of one call must share their type");
  if (a == ffi::DataType::F32) return dt::f32;
  if (a == ffi::DataType::BF16) return dt::bf16;
  throw std::invalid_argument("medzoo_dnnl_conv: operands must be float32 or bfloat16");
}

memory act_memory(const memory::dims& dims, const Geometry& g, void* data) {
  return memory({dims, g.type, act_tag(g)}, engine(), data);
}

ffi::Error Forward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y,
                   ffi::Span<const int64_t> strides, ffi::Span<const int64_t> lo, ffi::Span<const int64_t> hi) {
  return guarded([&] {
    auto g = geometry(x.dimensions(), w.dimensions(), y->dimensions(), strides, lo, hi);
    g.type = operand_type(x.element_type(), w.element_type(), y->element_type());
    auto p = plan(g, kForward);
    dnnl::stream s(engine());
    memory xm = act_memory(g.src, g, x.untyped_data()), ym = act_memory(g.dst, g, y->untyped_data());
    memory wp(p->plain, engine(), w.untyped_data()), wb(p->weights, engine());
    p->to_blocked.execute(s, wp, wb);
    p->prim.execute(s, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wb}, {DNNL_ARG_DST, ym}});
    s.wait();
  });
}

ffi::Error BackwardData(ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx,
                        ffi::Span<const int64_t> strides, ffi::Span<const int64_t> lo,
                        ffi::Span<const int64_t> hi) {
  return guarded([&] {
    auto g = geometry(dx->dimensions(), w.dimensions(), dy.dimensions(), strides, lo, hi);
    g.type = operand_type(dy.element_type(), w.element_type(), dx->element_type());
    auto p = plan(g, kBackwardData);
    dnnl::stream s(engine());
    memory dym = act_memory(g.dst, g, dy.untyped_data()), dxm = act_memory(g.src, g, dx->untyped_data());
    memory wp(p->plain, engine(), w.untyped_data()), wb(p->weights, engine());
    p->to_blocked.execute(s, wp, wb);
    p->prim.execute(s, {{DNNL_ARG_DIFF_DST, dym}, {DNNL_ARG_WEIGHTS, wb}, {DNNL_ARG_DIFF_SRC, dxm}});
    s.wait();
  });
}

// The weight gradient of a stride-1 convolution with few output channels, computed with the roles of x and dy
// swapped: dw[k, i, o] = sum_p x[p + k - lo, i] dy[p, o] is the weight gradient dv[K-1-k, o, i] of the stride-1
// convolution from dy (Cout channels, padding K-1-lo / K-1-hi) to x (Cin channels). oneDNN's channels-last weight
// gradient vectorises over the output channels in blocks of 16: with 2 of them it ran 5-11x slower than the swapped
// problem (2D 8x128^2, 32 -> 2 and 16 -> 2 channels, one thread; docs/performance.md). False (and `out` untouched)
// when the convolution is not of that kind: strided, padded beyond the kernel, Cout >= 16 or Cout >= Cin.
bool swapped_geometry(const Geometry& g, Geometry* out) {
  const int64_t cout = g.wei[0], cin = g.wei[1];
  if (cout >= 16 || cout >= cin) return false;
  Geometry s = g;
  s.src = g.dst;  // (N, Cout, *O): channels already right
  s.dst = g.src;  // (N, Cin, *S)
  s.wei[0] = cin;
  s.wei[1] = cout;
  for (size_t d = 0; d < g.strides.size(); ++d) {
    const int64_t k = g.wei[2 + d];
    if (g.strides[d] != 1 || g.pad_lo[d] < 0 || g.pad_hi[d] < 0 || g.pad_lo[d] > k - 1 || g.pad_hi[d] > k - 1)
      return false;
    s.pad_lo[d] = k - 1 - g.pad_lo[d];
    s.pad_hi[d] = k - 1 - g.pad_hi[d];
  }
  *out = s;
  return true;
}

// dw = dconv/dw(x, dy) into `dw` (plain weights of g's type), the operands' buffers as given.
void weight_gradient(const Geometry& g, void* x, void* dy, void* dw, size_t dw_elements, dnnl::stream& s) {
  Geometry sw;
  if (swapped_geometry(g, &sw)) {
    // dv [*K, Cout, Cin] (the swapped convolution's plain weights), then dw[t, i, o] = dv[T-1-t, o, i]: flipping
    // every kernel axis reverses the flat tap index t
    auto p = plan(sw, kBackwardWeights);
    const size_t es = g.type == dt::bf16 ? 2 : 4, cin = g.wei[1], cout = g.wei[0];
    const size_t taps = dw_elements / (cin * cout);
    std::vector<char> dv(dw_elements * es);
    memory dym = act_memory(sw.src, sw, dy), xm = act_memory(sw.dst, sw, x);
    memory wb(p->weights, engine()), wp(p->plain, engine(), dv.data());
    p->prim.execute(s, {{DNNL_ARG_SRC, dym}, {DNNL_ARG_DIFF_DST, xm}, {DNNL_ARG_DIFF_WEIGHTS, wb}});
    p->to_plain.execute(s, wb, wp);
    s.wait();
    char* out = static_cast<char*>(dw);
    for (size_t t = 0; t < taps; ++t)
      for (size_t i = 0; i < cin; ++i)
        for (size_t o = 0; o < cout; ++o)
          std::memcpy(out + ((t * cin + i) * cout + o) * es, dv.data() + (((taps - 1 - t) * cout + o) * cin + i) * es,
                      es);
    return;
  }
  auto p = plan(g, kBackwardWeights);
  memory xm = act_memory(g.src, g, x), dym = act_memory(g.dst, g, dy);
  memory wb(p->weights, engine()), wp(p->plain, engine(), dw);
  p->prim.execute(s, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_DIFF_DST, dym}, {DNNL_ARG_DIFF_WEIGHTS, wb}});
  p->to_plain.execute(s, wb, wp);
  s.wait();
}

bool has_amx() {
  static const bool amx = (static_cast<unsigned>(dnnl::get_effective_cpu_isa()) &
                           static_cast<unsigned>(dnnl::cpu_isa::avx512_core_amx)) ==
                          static_cast<unsigned>(dnnl::cpu_isa::avx512_core_amx);
  return amx;
}

ffi::Error BackwardWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
                           ffi::Span<const int64_t> strides, ffi::Span<const int64_t> lo,
                           ffi::Span<const int64_t> hi) {
  return guarded([&] {
    auto g = geometry(x.dimensions(), dw->dimensions(), dy.dimensions(), strides, lo, hi);
    g.type = operand_type(x.element_type(), dy.element_type(), dw->element_type());
    dnnl::stream s(engine());
    if (g.type == dt::f32 || has_amx()) {
      weight_gradient(g, x.untyped_data(), dy.untyped_data(), dw->untyped_data(), dw->element_count(), s);
      return;
    }
    // bfloat16 without AMX: oneDNN's AVX512-BF16 weight gradient (jit_bf16) synchronises its threads with a spinning
    // barrier, which stalled 100-130 ms a call whenever another process held a core (10 of 168 calls in 8 2D train
    // steps on the loaded host); its float32 kernel does not. x and dy are widened to float32, dw narrowed back.
    Geometry gf = g;
    gf.type = dt::f32;
    memory xb = act_memory(g.src, g, x.untyped_data()), dyb = act_memory(g.dst, g, dy.untyped_data());
    memory xf({gf.src, dt::f32, act_tag(g)}, engine()), dyf({gf.dst, dt::f32, act_tag(g)}, engine());
    dnnl::reorder(xb, xf).execute(s, xb, xf);
    dnnl::reorder(dyb, dyf).execute(s, dyb, dyf);
    memory dwf({g.wei, dt::f32, wei_tag(g)}, engine());
    memory dwb({g.wei, dt::bf16, wei_tag(g)}, engine(), dw->untyped_data());
    weight_gradient(gf, xf.get_data_handle(), dyf.get_data_handle(), dwf.get_data_handle(), dw->element_count(), s);
    dnnl::reorder(dwf, dwb).execute(s, dwf, dwb);
    s.wait();
  });
}

}  // namespace

#define MEDZOO_CONV_ATTRS                                   \
  .Attr<ffi::Span<const int64_t>>("strides")               \
      .Attr<ffi::Span<const int64_t>>("pad_lo")            \
      .Attr<ffi::Span<const int64_t>>("pad_hi")

XLA_FFI_DEFINE_HANDLER_SYMBOL(MedzooDnnlConvFwd, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() MEDZOO_CONV_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(MedzooDnnlConvBwdData, BackwardData,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() MEDZOO_CONV_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(MedzooDnnlConvBwdWeights, BackwardWeights,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() MEDZOO_CONV_ATTRS);

// The instruction set oneDNN dispatches to on this CPU (after $ONEDNN_MAX_CPU_ISA) and whether it has native
// bfloat16 (AVX512-BF16, AVX512-FP16 or AMX: oneDNN's ISA values are nested bit masks): writes a short name into
// `name` (`size` bytes) and returns 1 when bfloat16 is native, else 0. Plain C, called through ctypes.
extern "C" int medzoo_dnnl_bf16_isa(char* name, int size) {
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const unsigned bf16 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_bf16);
  const char* label = "other";
  const std::pair<dnnl::cpu_isa, const char*> known[] = {
      {dnnl::cpu_isa::avx512_core_amx_fp16, "avx512_core_amx_fp16"},
      {dnnl::cpu_isa::avx512_core_amx, "avx512_core_amx"},
      {dnnl::cpu_isa::avx512_core_fp16, "avx512_core_fp16"}, {dnnl::cpu_isa::avx512_core_bf16, "avx512_core_bf16"},
      {dnnl::cpu_isa::avx512_core_vnni, "avx512_core_vnni"}, {dnnl::cpu_isa::avx512_core, "avx512_core"},
      {dnnl::cpu_isa::avx2_vnni_2, "avx2_vnni_2"}, {dnnl::cpu_isa::avx2_vnni, "avx2_vnni"},
      {dnnl::cpu_isa::avx2, "avx2"}, {dnnl::cpu_isa::avx, "avx"}, {dnnl::cpu_isa::sse41, "sse41"}};
  for (const auto& k : known) {
    if (isa == static_cast<unsigned>(k.first)) {
      label = k.second;
      break;
    }
  }
  if (name != nullptr && size > 0) std::snprintf(name, static_cast<size_t>(size), "%s", label);
  return (isa & bf16) == bf16 ? 1 : 0;
}
