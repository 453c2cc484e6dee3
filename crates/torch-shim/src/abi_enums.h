// The c10 enum values that cross the C ABI as plain ints, in one list. build.rs turns each
// `#define SELFCON_<NAME> <value>` into the Rust constant `abi::<NAME>`; shim.cpp asserts every
// one against libtorch's own headers at compile time, so a libtorch that renumbers an enum fails
// the build loudly instead of silently passing the wrong device, dtype or layout.
#pragma once

// c10::DeviceType
#define SELFCON_DEVICE_CPU 0
#define SELFCON_DEVICE_CUDA 1
#define SELFCON_DEVICE_VULKAN 10
#define SELFCON_DEVICE_MPS 13

// c10::ScalarType
#define SELFCON_DTYPE_UINT8 0
#define SELFCON_DTYPE_HALF 5
#define SELFCON_DTYPE_FLOAT 6
#define SELFCON_DTYPE_BFLOAT16 15

// c10::MemoryFormat
#define SELFCON_MEMORY_CONTIGUOUS 0
#define SELFCON_MEMORY_CHANNELS_LAST 2

// c10 log severities (FLAGS_caffe2_log_level)
#define SELFCON_LOG_INFO 0
#define SELFCON_LOG_WARNING 1
#define SELFCON_LOG_ERROR 2
