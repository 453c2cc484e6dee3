// See ../README.md: declarations only; libtorch's ProcessGroupGloo.hpp uses nothing from here.
#pragma once
