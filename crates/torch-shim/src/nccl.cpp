// The NCCL process group, as a second shared object (libselfcon_nccl.so) beside the shim.
//
// c10d::ProcessGroupNCCL lives in libtorch_cuda.so, which CPU machines do not have, so this object
// is not linked into the binary: it is built only when the CUDA/NCCL headers are installed
// (`SELFCON_NCCL=1 ./scripts/setup.sh`), leaves libtorch's symbols undefined, and is dlopen'ed by
// src/distributed.cpp after the engine loaded libtorch_cuda.so with RTLD_GLOBAL, which resolves
// them. Its one function returns the process group as a c10d::Backend; everything else (the
// collectives, buckets, the autograd all-gather) is the shim's generic c10d code.
#include <torch/csrc/cuda/nccl.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "nccl_abi.h"
#include "shim_error.h"

namespace {

std::string dotted(std::uint64_t major, std::uint64_t minor, std::uint64_t patch) {
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

// ProcessGroupNCCL's options embed nccl.h's ncclConfig_t, whose size changes between NCCL
// versions, and this object allocates them: its nccl.h must be the one libtorch_cuda was built
// with. torch::cuda::nccl::version() is that build-time version (major << 32 | minor << 16 | patch).
void check_nccl_version() {
  const std::uint64_t built = torch::cuda::nccl::version();
  const std::uint64_t ours = (static_cast<std::uint64_t>(NCCL_MAJOR) << 32) |
                             (static_cast<std::uint64_t>(NCCL_MINOR) << 16) | static_cast<std::uint64_t>(NCCL_PATCH);
  if (built != ours) {
    throw std::runtime_error("the NCCL shim was compiled with nccl.h " + dotted(NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH) +
                             " but this libtorch_cuda was built with NCCL " +
                             dotted(built >> 32, (built >> 16) & 0xffff, built & 0xffff) +
                             " (use libtorch 2.11 from PyPI torch==2.11.0, or rebuild against matching headers)");
  }
}

}  // namespace

extern "C" {

int selfcon_nccl_check(char** err) {
  SHIM_TRY(err, -1)
  check_nccl_version();
  return 0;
  SHIM_CATCH(err, -1)
}
static_assert(std::is_same_v<decltype(&selfcon_nccl_check), SelfconNcclCheck>);

// A ProcessGroupNCCL of `size` ranks bound to cuda:`device`, its NCCL communicator connected now
// (so a broken NCCL setup fails when joining, not at the first collective). `store` is borrowed;
// the result is an owning reference (intrusive_ptr::release), reclaimed by the caller.
c10d::Backend* selfcon_nccl_backend_new(const c10::intrusive_ptr<c10d::Store>* store, int rank, int size,
                                        int64_t timeout_ms, int device, char** err) {
  SHIM_TRY(err, nullptr)
  check_nccl_version();
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = std::chrono::milliseconds(timeout_ms);
  // Its own key space in the rendezvous store (NCCL's unique ids are stored under counters).
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("selfcon/nccl", *store);
  auto group = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rank, size, opts);
  const at::Device cuda(at::kCUDA, static_cast<c10::DeviceIndex>(device));
  group->setBoundDeviceId(cuda);
  group->eagerConnectSingleDevice(cuda);
  return group.release();
  SHIM_CATCH(err, nullptr)
}
static_assert(std::is_same_v<decltype(&selfcon_nccl_backend_new), SelfconNcclBackendNew>);

}  // extern "C"
