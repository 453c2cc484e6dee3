// How shim functions report C++ exceptions: the text goes to `err` (malloc'ed, freed by
// selfcon_shim_free_error) and the function returns its failure value, instead of unwinding into
// Rust. Shared by every .cpp file of the shim.
#pragma once

#include <cstdlib>
#include <cstring>
#include <exception>

namespace selfcon_shim {

inline void set_error(char** err, const char* what) {
  if (err == nullptr) return;
  *err = static_cast<char*>(std::malloc(std::strlen(what) + 1));
  if (*err != nullptr) std::strcpy(*err, what);
}

}  // namespace selfcon_shim

#define SHIM_TRY(err, fail) \
  try {
#define SHIM_CATCH(err, fail)                              \
  }                                                        \
  catch (const std::exception& e) {                        \
    selfcon_shim::set_error(err, e.what());                \
    return fail;                                           \
  }                                                        \
  catch (...) {                                            \
    selfcon_shim::set_error(err, "unknown C++ exception"); \
    return fail;                                           \
  }
