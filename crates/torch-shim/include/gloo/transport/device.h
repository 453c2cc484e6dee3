// See ../README.md: declarations only; ProcessGroupGloo.hpp holds these through smart pointers.
#pragma once

namespace gloo {
namespace transport {
class Device;
class UnboundBuffer;
}  // namespace transport
}  // namespace gloo
