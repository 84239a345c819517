// .pt tensor files: the zip archives torch.save writes, read through libtorch's stream reader and
// unpickler; written with torch::pickle_save, which torch.load reads.
#include "fused3d/tensor_io.h"

#include "fused3d/errors.h"
#include "fused_layer.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/import_read.h>
#include <torch/csrc/jit/serialization/storage_context.h>
#include <torch/serialize.h>

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <vector>

namespace fused3d {
namespace {

// The pickle declares sizes, strides and an offset into a storage that is stored separately, and
// libtorch takes them as written: a file whose view reaches past its storage would read (and
// segfault on) memory it does not own. So the view is checked against the storage, with every
// product checked for overflow.
std::string view_outside_storage(const at::Tensor& t) {
  if (t.numel() == 0) return "";
  uint64_t last = static_cast<uint64_t>(t.storage_offset());  // element index of the furthest element
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.stride(d) < 0) return "a negative stride";
    uint64_t reach = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(t.size(d) - 1), static_cast<uint64_t>(t.stride(d)), &reach) ||
        __builtin_add_overflow(last, reach, &last))
      return "a view whose extent overflows 64 bits";
  }
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(last + 1, static_cast<uint64_t>(t.element_size()), &bytes) || bytes > t.storage().nbytes())
    return "sizes " + shape_string(t.sizes()) +
           (t.storage_offset() ? " at offset " + std::to_string(t.storage_offset()) : std::string()) +
           " that need more than its " + std::to_string(t.storage().nbytes()) + " bytes of data";
  return "";
}

}  // namespace

at::Tensor load_tensor(const std::string& path, at::Allocator* allocator) {
  if (!std::ifstream(path, std::ios::binary).good())
    throw InputError("cannot open tensor file '" + path + "': " + std::strerror(errno));
  c10::IValue value;
  try {
    // The storages are read first, each straight into one allocation of `allocator` (a torch.save
    // archive stores them uncompressed), and handed to the unpickler through its storage context:
    // reading the whole file into memory and letting the unpickler copy each storage out of it
    // took the time of two copies of the file.
    caffe2::serialize::PyTorchStreamReader reader(path);
    auto storages = std::make_shared<torch::jit::DeserializationStorageContext>();
    at::Allocator* into = allocator != nullptr ? allocator : at::getCPUAllocator();
    const std::string prefix = "data/";
    for (const std::string& record : reader.getAllRecords()) {
      if (record.rfind(prefix, 0) != 0) continue;
      auto [data, bytes] = reader.getRecord(record, into);
      storages->addStorage(record.substr(prefix.size()),
                           c10::Storage(c10::Storage::use_byte_size_t(), bytes, std::move(data), into, false));
    }
    value = torch::jit::readArchiveAndTensors("data", "", "", std::nullopt, std::nullopt, std::nullopt, reader,
                                              torch::jit::Unpickler::defaultTypeParser, storages);
  } catch (const std::exception& e) {
    const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
    throw InputError("'" + path + "' is not a tensor file written by torch.save: " +
                     first_line(c10_error ? c10_error->what_without_backtrace() : e.what()));
  }
  if (!value.isTensor())
    throw InputError("'" + path + "' holds a " + value.type()->str() + ", expected a single tensor");
  const at::Tensor t = value.toTensor();
  if (const std::string why = view_outside_storage(t); !why.empty())
    throw InputError("'" + path + "' is corrupt: its tensor declares " + why);
  return t;
}

// Written to a temporary name beside the output and renamed over it when complete: a reader (or
// a rerun that skips existing outputs) never sees a truncated file, whatever stops the write.
void save_tensor(const std::string& path, const at::Tensor& t) {
  const std::vector<char> bytes = torch::pickle_save(t.cpu());
  const std::string temporary = path + ".tmp-" + std::to_string(getpid());
  {
    std::ofstream file(temporary, std::ios::binary | std::ios::trunc);
    if (!file) throw InputError("cannot write output file '" + path + "': " + std::strerror(errno));
    file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!file.flush()) {
      std::remove(temporary.c_str());
      throw InputError("cannot write output file '" + path + "'");
    }
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(temporary.c_str());
    throw InputError("cannot write output file '" + path + "': " + why);
  }
}

}  // namespace fused3d
