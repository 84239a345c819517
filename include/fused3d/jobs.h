// File-to-file jobs: the inputs a command names (files, directories, glob patterns), a
// deterministic share of them for one of several processes, and the output each one gets.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fused3d {

// The share of a job's inputs one process takes: input i (in sorted order) when i % count == index.
// "K/N" on the command line, 0 <= K < N: a Slurm array task K of 0..N-1, a Kubernetes indexed
// job's completion index, GNU parallel's slot - 1.
struct Shard {
  int64_t index = 0, count = 1;
};

// Throws InputError unless text is "K/N" with whole numbers 0 <= K < N.
Shard parse_shard(const std::string& text);

// Every name as the files it names: a file as itself, a directory as its *.pt files (not
// recursive), anything else as a glob pattern (it must match at least one file). Sorted, each file
// once. Throws InputError for a name that names nothing.
std::vector<std::string> expand_inputs(const std::vector<std::string>& names);

// inputs[i] for i % shard.count == shard.index, in order.
std::vector<std::string> shard_of(const std::vector<std::string>& inputs, const Shard& shard);

// DIR/<the input's file name>. Throws InputError when two inputs would write the same output.
std::vector<std::string> outputs_in(const std::vector<std::string>& inputs, const std::string& dir);

// "cuda:0,cuda:1" -> {"cuda:0", "cuda:1"}; throws InputError for an empty name in the list.
std::vector<std::string> device_list(const std::string& text);

// Whether path is a regular file (following links).
bool is_file(const std::string& path);
// mkdir -p; throws InputError where it cannot.
void make_directories(const std::string& path);

}  // namespace fused3d
