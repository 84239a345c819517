// .pt tensor files through libtorch's pickler: torch::pickle_load reads the zip archives that
// torch.save writes, and torch::pickle_save writes archives that torch.load reads.
#include "fused3d/tensor_io.h"

#include "fused3d/errors.h"

#include <torch/serialize.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

namespace fused3d {

at::Tensor load_tensor(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw InputError("cannot open tensor file '" + path + "': " + std::strerror(errno));
  std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (file.bad()) throw InputError("cannot read tensor file '" + path + "'");
  c10::IValue value;
  try {
    value = torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
    throw InputError("'" + path + "' is not a tensor file written by torch.save: " +
                     first_line(c10_error ? c10_error->what_without_backtrace() : e.what()));
  }
  if (!value.isTensor())
    throw InputError("'" + path + "' holds a " + value.type()->str() + ", expected a single tensor");
  return value.toTensor();
}

void save_tensor(const std::string& path, const at::Tensor& t) {
  const std::vector<char> bytes = torch::pickle_save(t.cpu());
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) throw InputError("cannot write output file '" + path + "': " + std::strerror(errno));
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!file.flush()) throw InputError("cannot write output file '" + path + "'");
}

}  // namespace fused3d
