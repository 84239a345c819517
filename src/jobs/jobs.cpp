// Which inputs a job has, its shares, and its outputs' names (fused3d/jobs.h).
#include "fused3d/jobs.h"

#include "fused3d/errors.h"

#include <dirent.h>
#include <glob.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <set>

// POSIX calls, not std::filesystem: libtorch's shared library carries its own copies of some
// std::filesystem symbols, and a call that binds to them crashes.
namespace fused3d {
namespace {

bool is_directory(const std::string& path) {
  struct stat s{};
  return stat(path.c_str(), &s) == 0 && S_ISDIR(s.st_mode);
}

std::string file_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string joined(const std::string& dir, const std::string& name) {
  return dir.empty() || dir.back() == '/' ? dir + name : dir + "/" + name;
}

}  // namespace

std::vector<std::string> device_list(const std::string& text) {
  std::vector<std::string> names;
  size_t begin = 0;
  while (true) {
    const size_t comma = text.find(',', begin);
    names.push_back(text.substr(begin, comma == std::string::npos ? std::string::npos : comma - begin));
    if (names.back().empty()) throw InputError("--device list has an empty name: '" + text + "'");
    if (comma == std::string::npos) return names;
    begin = comma + 1;
  }
}

bool is_file(const std::string& path) {
  struct stat s{};
  return stat(path.c_str(), &s) == 0 && S_ISREG(s.st_mode);
}

void make_directories(const std::string& path) {
  for (size_t at = 1; at <= path.size(); ++at) {
    if (at < path.size() && path[at] != '/') continue;
    const std::string prefix = path.substr(0, at);
    if (mkdir(prefix.c_str(), 0777) != 0 && errno != EEXIST)
      throw InputError("cannot create output directory '" + path + "': " + std::strerror(errno));
  }
  if (!is_directory(path)) throw InputError("cannot create output directory '" + path + "': not a directory");
}

Shard parse_shard(const std::string& text) {
  const size_t slash = text.find('/');
  const auto whole = [](const std::string& s, int64_t& v) {
    if (s.empty() || s.size() > 18 || s.find_first_not_of("0123456789") != std::string::npos) return false;
    v = std::stoll(s);
    return true;
  };
  Shard s;
  if (slash == std::string::npos || !whole(text.substr(0, slash), s.index) || !whole(text.substr(slash + 1), s.count) ||
      s.count < 1 || s.index >= s.count)
    throw InputError("--shard must be K/N with whole numbers 0 <= K < N, got '" + text + "'");
  return s;
}

std::vector<std::string> expand_inputs(const std::vector<std::string>& names) {
  std::set<std::string> files;
  for (const std::string& name : names) {
    if (is_file(name)) {
      files.insert(name);
    } else if (is_directory(name)) {
      DIR* dir = opendir(name.c_str());
      if (!dir) throw InputError("cannot list input directory '" + name + "': " + std::strerror(errno));
      size_t found = 0;
      while (const dirent* entry = readdir(dir)) {
        const std::string entry_name = entry->d_name;
        const std::string path = joined(name, entry_name);
        if (entry_name.size() > 3 && entry_name.compare(entry_name.size() - 3, 3, ".pt") == 0 && is_file(path)) {
          files.insert(path);
          ++found;
        }
      }
      closedir(dir);
      if (found == 0) throw InputError("input directory '" + name + "' has no .pt files");
    } else {
      glob_t matches{};
      const int result = glob(name.c_str(), GLOB_NOSORT, nullptr, &matches);
      size_t found = 0;
      for (size_t i = 0; result == 0 && i < matches.gl_pathc; ++i)
        if (is_file(matches.gl_pathv[i])) {
          files.insert(matches.gl_pathv[i]);
          ++found;
        }
      globfree(&matches);
      if (found == 0)
        throw InputError(name.find_first_of("*?[") == std::string::npos
                             ? "input file '" + name + "' does not exist"
                             : "input pattern '" + name + "' matches no file");
    }
  }
  return {files.begin(), files.end()};
}

std::vector<std::string> shard_of(const std::vector<std::string>& inputs, const Shard& shard) {
  std::vector<std::string> share;
  for (size_t i = static_cast<size_t>(shard.index); i < inputs.size(); i += static_cast<size_t>(shard.count))
    share.push_back(inputs[i]);
  return share;
}

std::vector<std::string> outputs_in(const std::vector<std::string>& inputs, const std::string& dir) {
  std::vector<std::string> outputs;
  std::map<std::string, std::string> owner;  // output -> the input that writes it
  for (const std::string& input : inputs) {
    const std::string out = joined(dir, file_name(input));
    const auto [it, fresh] = owner.emplace(out, input);
    if (!fresh)
      throw InputError("inputs '" + it->second + "' and '" + input + "' would both write '" + out +
                       "' (--output-dir keeps file names)");
    outputs.push_back(out);
  }
  return outputs;
}

}  // namespace fused3d
