// c10d, PyTorch's own distributed engine, as a C ABI for src/distributed.rs: the TCPStore
// rendezvous, the Gloo process group compiled into libtorch_cpu, the NCCL process group of
// libtorch_cuda (through the separately built src/nccl.cpp object), their collectives, one
// differentiable all-gather (SyncBatchNorm's statistics) as a C++ autograd Function, and gradient
// buckets.
//
// libtorch's ProcessGroupGloo.hpp includes Gloo headers the PyPI wheel does not ship; the
// declarations it needs are in ../include/gloo (see the README there for why that is sound).
//
// Each group reduces tensors on one device: Gloo on the CPU (tensors on a GPU are staged through
// host memory), NCCL on its GPU (tensors stay in device memory; host tensors are staged there).
#include <ATen/ATen.h>
#include <dlfcn.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <mutex>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "nccl_abi.h"
#include "shim_error.h"

struct SelfconStore {
  c10::intrusive_ptr<c10d::Store> store;
};

struct SelfconGroup {
  c10::intrusive_ptr<c10d::Backend> backend;
  int rank;
  int size;
  at::Device device;  // where the backend's collectives read and write tensors
};

namespace {

// Every collective is *started* under this one process-wide lock (waiting for it is not).
// libtorch 2.11's flight recorder, a process-wide singleton, records each enqueued collective and
// inserts the group's status into a std::map before taking its own mutex
// (FlightRecorder::recordWithResetEnabled, FlightRecorderDetail.hpp), so two process groups that
// start collectives at the same time in one process corrupt that map (seen as a SIGSEGV in
// std::_Rb_tree_insert_and_rebalance under ProcessGroupGloo::enqueue). Starting a collective only
// queues it for Gloo's worker threads, so the lock is held for microseconds. The recorder can only
// be turned off through TORCH_FR_BUFFER_SIZE=0, read once per process at its first use, which a
// library cannot order reliably; hence the lock.
std::mutex& start_mutex() {
  static std::mutex m;
  return m;
}

template <typename Start>
c10::intrusive_ptr<c10d::Work> start_collective(Start&& start) {
  std::lock_guard<std::mutex> lock(start_mutex());
  return start();
}

// A contiguous tensor on the group's device holding `t`'s values (`t` itself when it already is one).
at::Tensor staged(SelfconGroup* group, const at::Tensor& t) {
  if (t.device() == group->device && t.is_contiguous()) return t;
  return t.to(group->device).contiguous();
}

c10::intrusive_ptr<c10d::Work> start_all_reduce_sum(SelfconGroup* group, at::Tensor& t) {
  std::vector<at::Tensor> list{t};
  c10d::AllreduceOptions opts;
  opts.reduceOp = c10d::ReduceOp::SUM;
  return start_collective([&] { return group->backend->allreduce(list, opts); });
}

// Runs `start` (which begins a collective on a tensor on the group's device) on every tensor, all
// in flight at once, waits for all, and copies the results back where they were staged. With NCCL
// `wait` only makes the current CUDA stream wait for the collective: the host does not block.
template <typename Start>
void in_place(SelfconGroup* group, at::Tensor* const* tensors, int64_t n, Start&& start) {
  std::vector<at::Tensor> stage;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (int64_t i = 0; i < n; ++i) {
    stage.push_back(staged(group, *tensors[i]));
    works.push_back(start(stage.back()));
  }
  for (auto& work : works) work->wait();
  for (int64_t i = 0; i < n; ++i) {
    if (!stage[i].is_same(*tensors[i])) tensors[i]->copy_(stage[i]);
  }
}

// Every rank's `input` (same shape on all ranks), on the group's device in rank order.
std::vector<at::Tensor> gather(SelfconGroup* group, const at::Tensor& input) {
  std::vector<at::Tensor> inputs{staged(group, input)};
  std::vector<std::vector<at::Tensor>> gathered(1);
  for (int r = 0; r < group->size; ++r) gathered[0].push_back(at::empty_like(inputs[0]));
  start_collective([&] { return group->backend->allgather(gathered, inputs); })->wait();
  return gathered[0];
}

// Forward: every rank's input, stacked along a new first dimension in rank order. Backward: each
// rank's objective depends on every slice, so this rank's input receives the sum over ranks of the
// gradients reaching its own slice.
struct AllGatherFunction : public torch::autograd::Function<AllGatherFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, int64_t group) {
    ctx->saved_data["group"] = group;
    return at::stack(gather(reinterpret_cast<SelfconGroup*>(group), input)).to(input.device());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* g = reinterpret_cast<SelfconGroup*>(ctx->saved_data["group"].toInt());
    at::Tensor grad = grads[0].contiguous().clone();
    at::Tensor* list[] = {&grad};
    in_place(g, list, 1, [g](at::Tensor& t) { return start_all_reduce_sum(g, t); });
    return {grad.select(0, g->rank).clone(), at::Tensor()};
  }
};

// torch.nn.SyncBatchNorm's CUDA path (torch/nn/modules/_functions.py), fused: per-channel mean and
// inverse std of this rank's batch (batch_norm_stats), one all-gather of (mean, invstd, count), the
// global statistics and the running-statistics update in one kernel
// (batch_norm_gather_stats_with_counts), the normalisation in one (batch_norm_elemt); the backward
// pass reduces (batch_norm_backward_reduce), all-reduces the two per-channel sums and applies them
// (batch_norm_backward_elemt). The input keeps its dtype (fp16/bf16 under autocast) and memory
// format; statistics are fp32. ATen has these kernels for CUDA only.
struct SyncBatchNormFunction : public torch::autograd::Function<SyncBatchNormFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bias, at::Tensor running_mean, at::Tensor running_var, double eps,
                            double momentum, int64_t group) {
    auto* g = reinterpret_cast<SelfconGroup*>(group);
    at::Tensor x = input.is_contiguous(at::MemoryFormat::ChannelsLast) ? input : input.contiguous();
    const int64_t channels = x.size(1);
    const int64_t count = x.numel() / channels;
    if (count <= 1 && g->size < 2) {
      throw std::runtime_error("SyncBatchNorm needs more than one value per channel");
    }
    auto [mean, invstd] = at::batch_norm_stats(x, eps);
    at::Tensor combined = at::cat({mean, invstd, at::full({1}, static_cast<double>(count), mean.options())}, 0);
    at::Tensor all = at::stack(gather(g, combined)).to(x.device());  // [world, 2C + 1]
    auto parts = at::split_with_sizes(all, {channels, channels, 1}, 1);
    auto [global_mean, global_invstd] = at::batch_norm_gather_stats_with_counts(
        x, parts[0], parts[1], running_mean, running_var, momentum, eps, parts[2].reshape({-1}));
    ctx->save_for_backward({x, weight, global_mean, global_invstd, parts[2].reshape({-1}).to(at::kInt)});
    ctx->saved_data["group"] = group;
    return at::batch_norm_elemt(x, weight, bias, global_mean, global_invstd, eps);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* g = reinterpret_cast<SelfconGroup*>(ctx->saved_data["group"].toInt());
    auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &mean = saved[2], &invstd = saved[3], &counts = saved[4];
    at::Tensor grad_out = grads[0].is_contiguous(at::MemoryFormat::ChannelsLast) ? grads[0] : grads[0].contiguous();
    auto [sum_dy, sum_dy_xmu, grad_weight, grad_bias] = at::batch_norm_backward_reduce(
        grad_out, x, mean, invstd, weight, /*input_g=*/true, /*weight_g=*/true, /*bias_g=*/true);
    const int64_t channels = sum_dy.size(0);
    at::Tensor combined = at::cat({sum_dy, sum_dy_xmu}, 0);
    at::Tensor* list[] = {&combined};
    in_place(g, list, 1, [g](at::Tensor& t) { return start_all_reduce_sum(g, t); });
    at::Tensor w = weight.scalar_type() == mean.scalar_type() ? weight : weight.to(mean.scalar_type());
    at::Tensor grad_input = at::batch_norm_backward_elemt(grad_out, x, mean, invstd, w, combined.narrow(0, 0, channels),
                                                          combined.narrow(0, channels, channels), counts);
    return {grad_input, grad_weight, grad_bias, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

// Gradient buckets (DDP's): gradients are packed into buffers of about `bucket_bytes` on the group's
// device (host memory for Gloo, the GPU for NCCL), in
// reverse parameter order (roughly the order backward produces them), and each full bucket is
// all-reduced asynchronously; `finish` waits for all and writes sum × scale back into .grad.
// With `overlap`, a hook on every parameter packs its gradient as soon as autograd produces it, so
// buckets are reduced while backward still runs (DDP's Reducer); without, `finish` packs them all
// after backward. With overlap every rank must produce gradients in the same order (same model,
// same graph), and every parameter at most one gradient per backward pass.
struct SelfconBuckets {
  SelfconGroup* group = nullptr;
  std::vector<at::Tensor> params;
  std::vector<unsigned> hooks;
  std::vector<size_t> bucket_of;
  std::vector<int64_t> offset;
  std::vector<at::Tensor> flat;  // one per bucket, on the group's device
  std::vector<int64_t> expected, remaining;
  std::vector<bool> arrived;
  std::vector<c10::intrusive_ptr<c10d::Work>> work;
  std::mutex mu;
  std::string error;

  void launch(size_t b) { work[b] = start_all_reduce_sum(group, flat[b]); }

  // Copies parameter i's gradient into its bucket; the bucket's all-reduce starts once it is full.
  void pack(size_t i, const at::Tensor& grad) {
    if (arrived[i]) {
      throw std::runtime_error(
          "a parameter received two gradients in one backward pass (shared weights are not supported by the "
          "overlapped gradient all-reduce)");
    }
    arrived[i] = true;
    const size_t b = bucket_of[i];
    flat[b].narrow(0, offset[i], grad.numel()).copy_(grad.reshape({-1}));
    if (--remaining[b] == 0) launch(b);
  }

  // The hook: errors wait for `finish`, since they cannot cross autograd's threads cleanly.
  void on_grad(size_t i, const at::Tensor& grad) {
    std::lock_guard<std::mutex> lock(mu);
    if (!error.empty()) return;
    try {
      pack(i, grad);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
};

extern "C" {

// ---- gradient all-reduce ----------------------------------------------------------------------

SelfconBuckets* selfcon_shim_buckets_new(SelfconGroup* group, at::Tensor* const* params, int64_t n,
                                         int64_t bucket_bytes, int overlap, char** err) {
  SHIM_TRY(err, nullptr)
  auto* b = new SelfconBuckets();
  b->group = group;
  for (int64_t i = 0; i < n; ++i) b->params.push_back(*params[i]);
  b->bucket_of.assign(n, 0);
  b->offset.assign(n, 0);
  b->arrived.assign(n, false);
  std::vector<int64_t> sizes, bytes;
  std::vector<c10::ScalarType> dtypes;
  for (int64_t i = n - 1; i >= 0; --i) {
    const at::Tensor& p = b->params[i];
    const int64_t nbytes = p.numel() * static_cast<int64_t>(p.element_size());
    if (sizes.empty() || p.scalar_type() != dtypes.back() || bytes.back() + nbytes > bucket_bytes) {
      sizes.push_back(0);
      bytes.push_back(0);
      dtypes.push_back(p.scalar_type());
      b->expected.push_back(0);
    }
    b->bucket_of[i] = sizes.size() - 1;
    b->offset[i] = sizes.back();
    sizes.back() += p.numel();
    bytes.back() += nbytes;
    b->expected.back() += 1;
  }
  for (size_t k = 0; k < sizes.size(); ++k) {
    b->flat.push_back(at::zeros({sizes[k]}, at::TensorOptions().dtype(dtypes[k]).device(group->device)));
  }
  b->remaining = b->expected;
  b->work.resize(b->flat.size());
  if (overlap != 0) {
    for (int64_t i = 0; i < n; ++i) {
      const size_t index = static_cast<size_t>(i);
      b->hooks.push_back(
          b->params[i].register_hook([b, index](const at::Tensor& grad) { b->on_grad(index, grad); }));
    }
  }
  return b;
  SHIM_CATCH(err, nullptr)
}

// After backward: packs the gradients (without overlap), all-reduces the buckets not yet started,
// waits for all, writes sum × scale into each parameter's .grad, and gets ready for the next pass.
int selfcon_shim_buckets_finish(SelfconBuckets* b, double scale, char** err) {
  SHIM_TRY(err, -1)
  std::lock_guard<std::mutex> lock(b->mu);
  struct Reset {  // also after an error, so that the next step starts clean
    SelfconBuckets* b;
    ~Reset() {
      b->remaining = b->expected;
      std::fill(b->arrived.begin(), b->arrived.end(), false);
      // A bucket started before an error may still be in flight (NCCL writes it on its own
      // stream): its end is ordered before the zeroing below; its own failure is already reported.
      for (auto& w : b->work) {
        if (!w) continue;
        try {
          w->wait();
        } catch (...) {
        }
        w.reset();
      }
      for (auto& f : b->flat) f.zero_();
    }
  } reset{b};
  if (!b->error.empty()) {
    const std::string error = b->error;
    b->error.clear();
    throw std::runtime_error(error);
  }
  if (b->hooks.empty()) {
    for (size_t i = 0; i < b->params.size(); ++i) {
      const at::Tensor grad = b->params[i].grad();
      if (grad.defined()) b->pack(i, grad);
    }
  }
  for (size_t k = 0; k < b->flat.size(); ++k) {
    if (!b->work[k]) b->launch(k);  // parameters without a gradient this step count as zeros
  }
  for (auto& w : b->work) w->wait();
  for (size_t i = 0; i < b->params.size(); ++i) {
    at::Tensor grad = b->params[i].grad();
    if (!grad.defined()) continue;
    at::Tensor sum = b->flat[b->bucket_of[i]].narrow(0, b->offset[i], grad.numel()).view(grad.sizes());
    grad.copy_(scale == 1.0 ? sum : sum * scale);
  }
  return 0;
  SHIM_CATCH(err, -1)
}

void selfcon_shim_buckets_free(SelfconBuckets* b) {
  for (size_t i = 0; i < b->hooks.size(); ++i) b->params[i].remove_hook(b->hooks[i]);
  delete b;
}

// ---- rendezvous store ------------------------------------------------------------------------

// The server (rank 0) listens on host:port and waits up to timeout for all world_size clients.
SelfconStore* selfcon_shim_tcp_store_new(const char* host, int port, int world_size, int is_server,
                                         int64_t timeout_ms, char** err) {
  SHIM_TRY(err, nullptr)
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<std::uint16_t>(port);
  opts.isServer = is_server != 0;
  if (world_size > 0) opts.numWorkers = static_cast<std::size_t>(world_size);
  opts.waitWorkers = world_size > 0;
  opts.timeout = std::chrono::milliseconds(timeout_ms);
  return new SelfconStore{c10::make_intrusive<c10d::TCPStore>(std::string(host), opts)};
  SHIM_CATCH(err, nullptr)
}

void selfcon_shim_store_free(SelfconStore* store) { delete store; }

// A view of `store` whose keys all start with `prefix` (c10d::PrefixStore, as torch.distributed
// gives each process group): two groups rendezvousing through one store never read each other's keys.
SelfconStore* selfcon_shim_store_prefixed(SelfconStore* store, const char* prefix, char** err) {
  SHIM_TRY(err, nullptr)
  return new SelfconStore{c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), store->store)};
  SHIM_CATCH(err, nullptr)
}

int selfcon_shim_store_set(SelfconStore* store, const char* key, const uint8_t* data, int64_t len, char** err) {
  SHIM_TRY(err, -1)
  store->store->set(key, std::vector<uint8_t>(data, data + len));
  return 0;
  SHIM_CATCH(err, -1)
}

// Waits up to timeout_ms for the key; *data is malloc'ed (freed with selfcon_shim_free_error).
int selfcon_shim_store_get(SelfconStore* store, const char* key, int64_t timeout_ms, uint8_t** data,
                           int64_t* len, char** err) {
  SHIM_TRY(err, -1)
  store->store->wait({key}, std::chrono::milliseconds(timeout_ms));
  const std::vector<uint8_t> value = store->store->get(key);
  *len = static_cast<int64_t>(value.size());
  *data = static_cast<uint8_t*>(std::malloc(value.size() + 1));
  if (!value.empty()) std::memcpy(*data, value.data(), value.size());
  return 0;
  SHIM_CATCH(err, -1)
}

// 1 when the key exists, 0 when not (does not wait).
int selfcon_shim_store_check(SelfconStore* store, const char* key, char** err) {
  SHIM_TRY(err, -1)
  return store->store->check({key}) ? 1 : 0;
  SHIM_CATCH(err, -1)
}

int64_t selfcon_shim_store_add(SelfconStore* store, const char* key, int64_t value, char** err) {
  SHIM_TRY(err, -1)
  return store->store->add(key, value);
  SHIM_CATCH(err, -1)
}

// ---- process group ---------------------------------------------------------------------------

// Gloo over TCP. The device binds to the address this host's name resolves to (or
// GLOO_SOCKET_IFNAME's interfaces), as torch.distributed does; timeout_ms bounds every collective.
SelfconGroup* selfcon_shim_gloo_group_new(SelfconStore* store, int rank, int size, int64_t timeout_ms, char** err) {
  SHIM_TRY(err, nullptr)
  auto opts = c10d::ProcessGroupGloo::Options::create_default(std::chrono::milliseconds(timeout_ms));
  auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store->store, rank, size, opts);
  return new SelfconGroup{backend, rank, size, at::Device(at::kCPU)};
  SHIM_CATCH(err, nullptr)
}

// The NCCL shim object at `library` (src/nccl.cpp), loaded once per path and kept: a process
// group's threads run its code until the process exits. libtorch's CUDA backend must already be
// loaded with RTLD_GLOBAL: the object takes libtorch_cuda's symbols from it.
static void* nccl_symbol(const char* library, const char* name) {
  void* handle = dlopen(library, RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    throw std::runtime_error(std::string("loading the NCCL shim ") + library + ": " + (why ? why : "unknown error"));
  }
  void* symbol = dlsym(handle, name);
  if (symbol == nullptr) throw std::runtime_error(std::string(library) + " has no " + name);
  return symbol;
}

// Whether the NCCL shim object at `library` loads and matches libtorch_cuda (0), before any rank
// commits to NCCL.
int selfcon_shim_nccl_check(const char* library, char** err) {
  SHIM_TRY(err, -1)
  auto check = reinterpret_cast<SelfconNcclCheck>(nccl_symbol(library, "selfcon_nccl_check"));
  char* inner = nullptr;
  if (check(&inner) != 0) {
    std::string why = inner ? inner : "the NCCL shim refused";
    std::free(inner);
    throw std::runtime_error(why);
  }
  return 0;
  SHIM_CATCH(err, -1)
}

// NCCL on cuda:`device`, from the NCCL shim object at `library`.
SelfconGroup* selfcon_shim_nccl_group_new(SelfconStore* store, int rank, int size, int64_t timeout_ms, int device,
                                          const char* library, char** err) {
  SHIM_TRY(err, nullptr)
  auto make = reinterpret_cast<SelfconNcclBackendNew>(nccl_symbol(library, "selfcon_nccl_backend_new"));
  char* inner = nullptr;
  c10d::Backend* raw = make(&store->store, rank, size, timeout_ms, device, &inner);
  if (raw == nullptr) {
    std::string why = inner ? inner : "ProcessGroupNCCL could not be created";
    std::free(inner);
    throw std::runtime_error(why);
  }
  auto backend = c10::intrusive_ptr<c10d::Backend>::reclaim(raw);
  return new SelfconGroup{backend, rank, size, at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device))};
  SHIM_CATCH(err, nullptr)
}

// Ends the group's work at a normal exit (NCCL: its communicators and watchdog threads; no-op for Gloo).
int selfcon_shim_group_shutdown(SelfconGroup* group, char** err) {
  SHIM_TRY(err, -1)
  group->backend->shutdown();
  return 0;
  SHIM_CATCH(err, -1)
}

// Ends the group's work after a failure (NCCL: ncclCommAbort on its communicators, pending
// collectives dropped: a graceful shutdown would wait for them, forever when a peer is gone).
int selfcon_shim_group_abort(SelfconGroup* group, char** err) {
  SHIM_TRY(err, -1)
  group->backend->abort();
  return 0;
  SHIM_CATCH(err, -1)
}

void selfcon_shim_group_free(SelfconGroup* group) { delete group; }

// Sums each tensor over ranks in place. All all-reduces are in flight at once (Gloo works on them
// with its own threads). Returns when every one finished (Gloo), or when the current CUDA stream
// is ordered after them (NCCL; a host tensor is copied back, which waits).
int selfcon_shim_all_reduce_sum(SelfconGroup* group, at::Tensor* const* tensors, int64_t n, char** err) {
  SHIM_TRY(err, -1)
  in_place(group, tensors, n, [group](at::Tensor& t) { return start_all_reduce_sum(group, t); });
  return 0;
  SHIM_CATCH(err, -1)
}

// outputs[r] receives rank r's `input` (all ranks' inputs have the same shape and dtype).
int selfcon_shim_all_gather(SelfconGroup* group, const at::Tensor* input, at::Tensor** outputs, char** err) {
  SHIM_TRY(err, -1)
  const std::vector<at::Tensor> gathered = gather(group, *input);
  for (int r = 0; r < group->size; ++r) outputs[r] = new at::Tensor(gathered[r].to(input->device()));
  return 0;
  SHIM_CATCH(err, -1)
}

// Overwrites every tensor with root's values.
int selfcon_shim_broadcast(SelfconGroup* group, at::Tensor* const* tensors, int64_t n, int root, char** err) {
  SHIM_TRY(err, -1)
  in_place(group, tensors, n, [group, root](at::Tensor& t) {
    std::vector<at::Tensor> list{t};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    return start_collective([&] { return group->backend->broadcast(list, opts); });
  });
  return 0;
  SHIM_CATCH(err, -1)
}

int selfcon_shim_barrier(SelfconGroup* group, char** err) {
  SHIM_TRY(err, -1)
  start_collective([&] { return group->backend->barrier(); })->wait();
  return 0;
  SHIM_CATCH(err, -1)
}

// Training-mode SyncBatchNorm of `input` [N, C, ...] over the group (see SyncBatchNormFunction);
// updates the running statistics in place. CUDA tensors only.
at::Tensor* selfcon_shim_sync_batch_norm(SelfconGroup* group, const at::Tensor* input, const at::Tensor* weight,
                                         const at::Tensor* bias, const at::Tensor* running_mean,
                                         const at::Tensor* running_var, double eps, double momentum, char** err) {
  SHIM_TRY(err, nullptr)
  return new at::Tensor(SyncBatchNormFunction::apply(*input, *weight, *bias, *running_mean, *running_var, eps, momentum,
                                                     reinterpret_cast<int64_t>(group)));
  SHIM_CATCH(err, nullptr)
}

// Every rank's `input` stacked as [world size, ...], differentiable (see AllGatherFunction).
at::Tensor* selfcon_shim_all_gather_autograd(SelfconGroup* group, const at::Tensor* input, char** err) {
  SHIM_TRY(err, nullptr)
  return new at::Tensor(AllGatherFunction::apply(*input, reinterpret_cast<int64_t>(group)));
  SHIM_CATCH(err, nullptr)
}

}  // extern "C"
