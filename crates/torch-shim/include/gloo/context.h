// See README.md: declarations only. ProcessGroupGloo.hpp holds contexts through shared_ptr and
// names one member in an inline function (setTimeout), which the shim never calls.
#pragma once

#include <chrono>

namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
}  // namespace gloo
