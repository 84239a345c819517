#include "fused3d/errors.h"

namespace fused3d {

std::string first_line(const std::string& message) {
  const std::string line = message.substr(0, message.find('\n'));
  const size_t sentence = line.find(". ");
  return sentence == std::string::npos ? line : line.substr(0, sentence);
}

}  // namespace fused3d
