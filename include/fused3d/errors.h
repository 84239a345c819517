// Errors a user can cause (a missing file, a model or input fused3d cannot take). The executable
// prints what() as one line and exits with kExitUsage; anything else is a bug.
#pragma once

#include <stdexcept>
#include <string>

namespace fused3d {

constexpr int kExitUsage = 2;        // bad input: file, model, tensor, option
constexpr int kExitCheckFailed = 1;  // --check found the fused result out of tolerance
constexpr int kExitInternal = 3;     // a failure that is not the user's input (CUDA error, bug)

struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The first sentence of a (possibly multi-line, backtrace-carrying) library message.
std::string first_line(const std::string& message);

}  // namespace fused3d
