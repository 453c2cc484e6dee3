// The libtorch C++ APIs that tch 0.24 does not expose, as a C ABI for src/lib.rs.
// Tensors cross the boundary as tch does it: `at::Tensor*` owned by the caller.
// Every function that can throw reports the exception text through `err` (malloc'ed, freed by
// selfcon_shim_free_error) instead of unwinding into Rust.
#include <atomic>
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/DeviceAccelerator.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <ATen/cpu/Utils.h>
#include <ATen/Version.h>
#include <c10/util/Logging.h>

#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_sub.h>
#include <ATen/ops/_fused_sgd.h>

#include <c10/core/Event.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "abi_enums.h"
#include "shim_error.h"

// The numbers src/lib.rs passes (abi_enums.h), checked against this libtorch's headers.
static_assert(static_cast<int>(c10::DeviceType::CPU) == SELFCON_DEVICE_CPU, "c10::DeviceType::CPU renumbered");
static_assert(static_cast<int>(c10::DeviceType::CUDA) == SELFCON_DEVICE_CUDA, "c10::DeviceType::CUDA renumbered");
static_assert(static_cast<int>(c10::DeviceType::Vulkan) == SELFCON_DEVICE_VULKAN, "c10::DeviceType::Vulkan renumbered");
static_assert(static_cast<int>(c10::DeviceType::MPS) == SELFCON_DEVICE_MPS, "c10::DeviceType::MPS renumbered");
static_assert(static_cast<int>(at::ScalarType::Byte) == SELFCON_DTYPE_UINT8, "c10::ScalarType::Byte renumbered");
static_assert(static_cast<int>(at::ScalarType::Half) == SELFCON_DTYPE_HALF, "c10::ScalarType::Half renumbered");
static_assert(static_cast<int>(at::ScalarType::Float) == SELFCON_DTYPE_FLOAT, "c10::ScalarType::Float renumbered");
static_assert(static_cast<int>(at::ScalarType::BFloat16) == SELFCON_DTYPE_BFLOAT16, "c10::ScalarType::BFloat16 renumbered");
static_assert(static_cast<int>(c10::MemoryFormat::Contiguous) == SELFCON_MEMORY_CONTIGUOUS, "c10::MemoryFormat::Contiguous renumbered");
static_assert(static_cast<int>(c10::MemoryFormat::ChannelsLast) == SELFCON_MEMORY_CHANNELS_LAST, "c10::MemoryFormat::ChannelsLast renumbered");
static_assert(c10::GLOG_INFO == SELFCON_LOG_INFO && c10::GLOG_WARNING == SELFCON_LOG_WARNING && c10::GLOG_ERROR == SELFCON_LOG_ERROR,
              "c10 log severities renumbered");

extern "C" {

void selfcon_shim_free_error(char* err) { std::free(err); }

// ---- autocast -------------------------------------------------------------------------------

int selfcon_shim_autocast_get(int device_type, int* enabled, int* dtype, char** err) {
  SHIM_TRY(err, -1)
  const auto device = static_cast<c10::DeviceType>(device_type);
  *enabled = at::autocast::is_autocast_enabled(device) ? 1 : 0;
  *dtype = static_cast<int>(at::autocast::get_autocast_dtype(device));
  return 0;
  SHIM_CATCH(err, -1)
}

int selfcon_shim_autocast_set(int device_type, int enabled, int dtype, char** err) {
  SHIM_TRY(err, -1)
  const auto device = static_cast<c10::DeviceType>(device_type);
  at::autocast::set_autocast_dtype(device, static_cast<at::ScalarType>(dtype));
  at::autocast::set_autocast_enabled(device, enabled != 0);
  return 0;
  SHIM_CATCH(err, -1)
}

int selfcon_shim_autocast_increment_nesting() { return at::autocast::increment_nesting(); }

// Leaving the outermost autocast region drops the cached low-precision weight copies, as
// torch.autocast.__exit__ does.
int selfcon_shim_autocast_decrement_nesting() {
  const int depth = at::autocast::decrement_nesting();
  if (depth == 0) at::autocast::clear_cache();
  return depth;
}

// ---- CPU floating point ----------------------------------------------------------------------

// torch.set_flush_denormal: treat subnormal floats as zero on the CPU (SSE3+); returns whether
// the CPU supports it. The flag lives in each thread's MXCSR, so it is set on the calling thread
// and, through one chunk per thread, on every intra-op (OpenMP) thread already running.
int selfcon_shim_set_flush_denormal(int on) {
  const bool supported = at::globalContext().setFlushDenormal(on != 0);
  const int64_t threads = at::get_num_threads();
  at::parallel_for(0, threads, 1, [on](int64_t, int64_t) { at::globalContext().setFlushDenormal(on != 0); });
  return supported ? 1 : 0;
}

// ---- determinism ----------------------------------------------------------------------------

// torch.use_deterministic_algorithms(on, warn_only=True) with cuDNN's deterministic algorithms and
// no autotuning (which may pick other algorithms from run to run).
void selfcon_shim_set_deterministic(int on) {
  auto& context = at::globalContext();
  context.setDeterministicAlgorithms(on != 0, /*warn_only=*/true);
  context.setDeterministicCuDNN(on != 0);
  if (on != 0) context.setBenchmarkCuDNN(false);
}

// ---- memory formats -------------------------------------------------------------------------

at::Tensor* selfcon_shim_contiguous(const at::Tensor* tensor, int memory_format, char** err) {
  SHIM_TRY(err, nullptr)
  return new at::Tensor(tensor->contiguous(static_cast<c10::MemoryFormat>(memory_format)));
  SHIM_CATCH(err, nullptr)
}

int selfcon_shim_is_contiguous(const at::Tensor* tensor, int memory_format, char** err) {
  SHIM_TRY(err, -1)
  return tensor->is_contiguous(static_cast<c10::MemoryFormat>(memory_format)) ? 1 : 0;
  SHIM_CATCH(err, -1)
}

// ---- loss scaling ---------------------------------------------------------------------------

// One fused `_amp_foreach_non_finite_check_and_unscale_` over all gradients (tch only wraps the
// one-tensor form, i.e. one kernel launch per parameter).
int selfcon_shim_amp_unscale(const at::Tensor* const* grads, int64_t n, at::Tensor* found_inf,
                             const at::Tensor* inv_scale, char** err) {
  SHIM_TRY(err, -1)
  std::vector<at::Tensor> list;
  list.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) list.push_back(*grads[i]);
  at::_amp_foreach_non_finite_check_and_unscale_(list, *found_inf, *inv_scale);
  return 0;
  SHIM_CATCH(err, -1)
}

// ---- optimiser -------------------------------------------------------------------------------

namespace {
std::vector<at::Tensor> tensor_list(const at::Tensor* const* tensors, int64_t n) {
  std::vector<at::Tensor> list;
  list.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) list.push_back(*tensors[i]);
  return list;
}
}  // namespace

// SGD (momentum, weight decay; no dampening, no Nesterov) over all parameters with the
// multi-tensor `_foreach_*` kernels: a handful of launches per step instead of several per
// parameter. The arithmetic is the per-tensor sequence the Rust optimiser used before, operation
// for operation (d = g + p*wd; buf = buf*momentum + d; p -= buf*lr), so the update is bit-for-bit
// the same. Momentum buffers start as zeros: 0*momentum + d is d.
int selfcon_shim_sgd_foreach(const at::Tensor* const* params, const at::Tensor* const* grads,
                             const at::Tensor* const* buffers, int64_t n, double weight_decay,
                             double momentum, double lr, char** err) {
  SHIM_TRY(err, -1)
  if (n == 0) return 0;
  at::NoGradGuard no_grad;  // an update, not part of any graph (as torch.optim's @no_grad)
  auto p = tensor_list(params, n);
  auto g = tensor_list(grads, n);
  std::vector<at::Tensor> d;
  if (weight_decay != 0.0) {
    d = at::_foreach_mul(p, weight_decay);
    at::_foreach_add_(d, g);
  } else {
    d = g;
  }
  if (momentum != 0.0) {
    auto b = tensor_list(buffers, n);
    at::_foreach_mul_(b, momentum);
    at::_foreach_add_(b, d);
    d = b;
  }
  at::_foreach_sub_(p, at::_foreach_mul(d, lr));
  return 0;
  SHIM_CATCH(err, -1)
}

// The same update in one fused kernel (`_fused_sgd_`) that skips itself on the device when
// `found_inf` (one float, may be null) is non-zero: how fp16 steps skip an overflow without the
// host reading the flag. Its weight decay uses a fused multiply-add, so the last bit can differ
// from the `_foreach_` sequence above.
int selfcon_shim_sgd_fused(const at::Tensor* const* params, const at::Tensor* const* grads,
                           const at::Tensor* const* buffers, int64_t n, double weight_decay,
                           double momentum, double lr, const at::Tensor* found_inf, char** err) {
  SHIM_TRY(err, -1)
  if (n == 0) return 0;
  at::NoGradGuard no_grad;
  auto p = tensor_list(params, n);
  auto g = tensor_list(grads, n);
  std::vector<at::Tensor> b;
  if (momentum != 0.0) b = tensor_list(buffers, n);
  std::optional<at::Tensor> inf;
  if (found_inf != nullptr) inf = *found_inf;
  at::_fused_sgd_(p, g, b, weight_decay, momentum, lr, /*dampening=*/0.0, /*nesterov=*/false,
                  /*maximize=*/false, /*is_first_step=*/false, /*grad_scale=*/std::nullopt, inf);
  return 0;
  SHIM_CATCH(err, -1)
}

// `param.grad = None` for each: the next backward writes fresh gradients instead of adding to
// zeroed ones (no zero-fill kernels, and no memory held between steps).
void selfcon_shim_set_grads_to_none(const at::Tensor* const* params, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const_cast<at::Tensor*>(params[i])->mutable_grad().reset();
  }
}

// ---- host -> device ---------------------------------------------------------------------------

// A copy of a CPU tensor in page-locked memory (`tensor.pin_memory()`, no device argument: the
// form with one is deprecated and warns on every call).
at::Tensor* selfcon_shim_pin_memory(const at::Tensor* tensor, char** err) {
  SHIM_TRY(err, nullptr)
  return new at::Tensor(tensor->pin_memory());
  SHIM_CATCH(err, nullptr)
}

// An uninitialised CPU tensor in page-locked memory from libtorch's caching host allocator (which
// hands a block out again only after the device copies that read it have completed).
at::Tensor* selfcon_shim_empty_pinned(const int64_t* sizes, int64_t ndim, int dtype, char** err) {
  SHIM_TRY(err, nullptr)
  const auto options = at::TensorOptions().dtype(static_cast<at::ScalarType>(dtype)).pinned_memory(true);
  return new at::Tensor(at::empty(at::IntArrayRef(sizes, static_cast<size_t>(ndim)), options));
  SHIM_CATCH(err, nullptr)
}

// Copies a host tensor to accelerator `device_index` on a side stream (one per device, from the
// accelerator's pool), so that the copy runs while the compute stream still works on the previous
// step. Returns the destination and, in `*ready`, an event recorded after the copy: the compute
// stream must wait for it (selfcon_shim_wait_ready) before using the destination. The destination
// is also recorded as used by the compute stream, so its memory is not handed out again before
// that stream is done with it. Device-generic c10 API: no CUDA headers needed.
at::Tensor* selfcon_shim_copy_ahead(const at::Tensor* src, int device_index, void** ready, char** err) {
  SHIM_TRY(err, nullptr)
  const auto type = at::accelerator::getAccelerator(/*checked=*/true).value();
  const c10::Device device(type, static_cast<c10::DeviceIndex>(device_index));
  c10::impl::VirtualGuardImpl impl(type);
  static std::mutex mutex;
  static std::vector<std::optional<c10::Stream>> side_streams;
  c10::Stream side = [&] {
    std::lock_guard<std::mutex> lock(mutex);
    if (side_streams.size() <= static_cast<size_t>(device_index)) side_streams.resize(device_index + 1);
    auto& s = side_streams[device_index];
    if (!s) s = impl.getStreamFromGlobalPool(device, /*isHighPriority=*/false);
    return *s;
  }();
  const c10::Stream compute = impl.getStream(device);
  at::Tensor dst;
  {
    const c10::StreamGuard on_side(side);
    dst = src->to(device, src->scalar_type(), /*non_blocking=*/true, /*copy=*/false);
  }
  dst.record_stream(compute);
  auto event = std::make_unique<c10::Event>(type);
  event->record(side);
  *ready = event.release();
  return new at::Tensor(dst);
  SHIM_CATCH(err, nullptr)
}

// Makes accelerator `device_index` the calling thread's current device (torch.cuda.set_device):
// work and allocations that name no device — pinned memory's context, NCCL's internals — land
// on this rank's GPU instead of creating a context on GPU 0.
int selfcon_shim_set_device(int device_index, char** err) {
  SHIM_TRY(err, -1)
  const auto type = at::accelerator::getAccelerator(/*checked=*/true).value();
  c10::impl::VirtualGuardImpl(type).setDevice(c10::Device(type, static_cast<c10::DeviceIndex>(device_index)));
  return 0;
  SHIM_CATCH(err, -1)
}

// Makes the compute stream wait (on the device; the host does not wait) for a copy started by
// selfcon_shim_copy_ahead, and frees the event.
int selfcon_shim_wait_ready(void* ready, int device_index, char** err) {
  std::unique_ptr<c10::Event> event(static_cast<c10::Event*>(ready));
  SHIM_TRY(err, -1)
  const auto type = event->device_type();
  c10::impl::VirtualGuardImpl impl(type);
  event->block(impl.getStream(c10::Device(type, static_cast<c10::DeviceIndex>(device_index))));
  return 0;
  SHIM_CATCH(err, -1)
}

void selfcon_shim_free_ready(void* ready) { delete static_cast<c10::Event*>(ready); }

int selfcon_shim_is_pinned(const at::Tensor* tensor) { return tensor->is_pinned() ? 1 : 0; }

// 1 when nothing but `tensor` refers to its memory: no other handle on the same TensorImpl, and
// no other tensor (view, alias, saved-for-backward copy of the handle) on the same storage.
// The counts are read relaxed; the acquire fence orders the caller's later writes after every
// read the last other owner made before it let go (its decrement is a release).
int selfcon_shim_is_sole_owner(const at::Tensor* tensor) {
  const bool sole =
      tensor->use_count() == 1 && tensor->has_storage() && tensor->storage().use_count() == 1;
  std::atomic_thread_fence(std::memory_order_acquire);
  return sole ? 1 : 0;
}

// ---- accelerator memory statistics (caching allocator, any accelerator) ---------------------

// out: allocated current, allocated peak, reserved current, reserved peak (bytes, all pools).
int selfcon_shim_device_memory_stats(int device_index, int64_t* out, char** err) {
  SHIM_TRY(err, -1)
  const auto stats = at::accelerator::getDeviceStats(static_cast<c10::DeviceIndex>(device_index));
  const auto aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  out[0] = stats.allocated_bytes[aggregate].current;
  out[1] = stats.allocated_bytes[aggregate].peak;
  out[2] = stats.reserved_bytes[aggregate].current;
  out[3] = stats.reserved_bytes[aggregate].peak;
  return 0;
  SHIM_CATCH(err, -1)
}

int selfcon_shim_device_reset_peak(int device_index, char** err) {
  SHIM_TRY(err, -1)
  at::accelerator::resetPeakStats(static_cast<c10::DeviceIndex>(device_index));
  return 0;
  SHIM_CATCH(err, -1)
}

int selfcon_shim_device_synchronize(int device_index, char** err) {
  SHIM_TRY(err, -1)
  at::accelerator::synchronizeDevice(static_cast<c10::DeviceIndex>(device_index));
  return 0;
  SHIM_CATCH(err, -1)
}

}  // extern "C"

// ---- CPU capabilities ------------------------------------------------------------------------

extern "C" {

// What cpuinfo (inside libtorch) reports of this CPU, as "key=value" lines: ISA flags (True/False),
// cpu_name, architecture, cache sizes and core counts (at::cpu::get_cpu_capabilities), and
// "aten_capability" = the vector ISA ATen's kernels were dispatched to (ATEN_CPU_CAPABILITY caps
// it). Malloc'ed, freed by selfcon_shim_free_error; null on failure with `err` set.
char* selfcon_shim_cpu_capabilities(char** err) {
  SHIM_TRY(err, nullptr)
    std::string text;
    for (const auto& [key, value] : at::cpu::get_cpu_capabilities()) {
      std::string rendered;
      if (value.isBool()) rendered = value.toBool() ? "True" : "False";
      else if (value.isInt()) rendered = std::to_string(value.toInt());
      else if (value.isString()) rendered = value.toStringRef();
      else continue;
      for (char& c : rendered) if (c == '\n') c = ' ';
      text += key + "=" + rendered + "\n";
    }
    text += "aten_capability=" + at::get_cpu_capability() + "\n";
    char* out = static_cast<char*>(std::malloc(text.size() + 1));
    std::memcpy(out, text.c_str(), text.size() + 1);
    return out;
  SHIM_CATCH(err, nullptr)
}

}  // extern "C"

// ---- logging ---------------------------------------------------------------------------------

extern "C" {

// Minimum level of libtorch's own log lines on stderr (0 info, 1 warning, 2 error, 3 fatal), as
// TORCH_CPP_LOG_LEVEL would set it at start-up.
void selfcon_shim_set_log_level(int level) {
  FLAGS_caffe2_log_level = level;
  c10::UpdateLoggingLevelsFromFlags();
}

}  // extern "C"
