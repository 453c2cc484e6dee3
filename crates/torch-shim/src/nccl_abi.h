// The C ABI between the shim (src/distributed.cpp, which dlopens the NCCL object) and the NCCL
// shim object (src/nccl.cpp): one declaration for both sides.
#pragma once

#include <cstdint>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

extern "C" {
// 0 when this object's nccl.h is the version libtorch_cuda was built with; else -1 and `err`.
using SelfconNcclCheck = int (*)(char** err);
// A connected ProcessGroupNCCL on cuda:`device` (owning; intrusive_ptr::reclaim it), or null and `err`.
using SelfconNcclBackendNew = c10d::Backend* (*)(const c10::intrusive_ptr<c10d::Store>* store, int rank, int size,
                                                 int64_t timeout_ms, int device, char** err);
}
