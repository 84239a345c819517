// File jobs on the host: which files a command's names give, their shares and output names.
#include "fused3d/errors.h"
#include "fused3d/jobs.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <set>

namespace fused3d::test {
namespace {

// (The shell for set-up and clean-up: std::filesystem's calls can bind to libtorch's copies.)
class Jobs : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/fused3d_jobs_" + std::to_string(getpid()) + "/";
    ASSERT_EQ(std::system(("rm -rf " + dir_ + " && mkdir -p " + dir_ + "sub").c_str()), 0);
    for (const char* name : {"b.pt", "a.pt", "c.pt", "notes.txt", "sub/d.pt"}) std::ofstream(dir_ + name) << "x";
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }
  std::string at(const std::string& name) const { return dir_ + name; }
  std::string dir_;
};

TEST_F(Jobs, NamesExpandToSortedFilesOnce) {
  // A directory gives its .pt files (not sub-directories' and not other files); a pattern its
  // matches; a file itself; each file once, sorted.
  EXPECT_EQ(expand_inputs({at("")}), (std::vector<std::string>{at("a.pt"), at("b.pt"), at("c.pt")}));
  EXPECT_EQ(expand_inputs({at("[bc].pt"), at("sub/d.pt"), at("b.pt")}),
            (std::vector<std::string>{at("b.pt"), at("c.pt"), at("sub/d.pt")}));
  EXPECT_EQ(expand_inputs({at("*.txt")}), (std::vector<std::string>{at("notes.txt")}));
}

TEST_F(Jobs, NamesThatNameNothingAreErrors) {
  EXPECT_THROW(expand_inputs({at("missing.pt")}), InputError);
  EXPECT_THROW(expand_inputs({at("*.npy")}), InputError);
  ASSERT_EQ(std::system(("mkdir " + dir_ + "empty").c_str()), 0);
  EXPECT_THROW(expand_inputs({at("empty")}), InputError);
  try {
    expand_inputs({at("q*.pt")});
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("matches no file"), std::string::npos) << e.what();
  }
}

// The shares of N processes partition the inputs: every input in exactly one, sizes within one
// of each other, the same shares on every call (the order is the sorted list's).
TEST(JobShards, SharesPartitionTheInputs) {
  for (const int files : {0, 1, 5, 32, 33})
    for (const int count : {1, 2, 3, 7, 40}) {
      std::vector<std::string> inputs;
      for (int i = 0; i < files; ++i) inputs.push_back("f" + std::to_string(1000 + i));
      std::multiset<std::string> seen;
      size_t least = inputs.size(), most = 0;
      for (int k = 0; k < count; ++k) {
        const std::vector<std::string> share = shard_of(inputs, Shard{k, count});
        EXPECT_EQ(share, shard_of(inputs, Shard{k, count}));
        seen.insert(share.begin(), share.end());
        least = std::min(least, share.size());
        most = std::max(most, share.size());
      }
      EXPECT_EQ(seen, std::multiset<std::string>(inputs.begin(), inputs.end())) << files << " files, " << count;
      EXPECT_LE(most - least, 1u);
    }
}

TEST(JobShards, ParsesKOfN) {
  EXPECT_EQ(parse_shard("0/1").index, 0);
  const Shard s = parse_shard("3/8");
  EXPECT_EQ(s.index, 3);
  EXPECT_EQ(s.count, 8);
  for (const char* bad : {"", "3", "8/8", "-1/4", "1/0", "a/b", "1/2/3", " 1/2", "1/2 "})
    EXPECT_THROW(parse_shard(bad), InputError) << "'" << bad << "'";
}

TEST_F(Jobs, OutputDirectoriesAreMadeWhole) {
  make_directories(at("x/y/z"));
  std::ofstream(at("x/y/z/f")) << "x";
  EXPECT_TRUE(is_file(at("x/y/z/f")));
  EXPECT_FALSE(is_file(at("x/y")));
  EXPECT_THROW(make_directories(at("x/y/z/f/g")), InputError);
}

TEST(JobDevices, ListsSplitAtCommas) {
  EXPECT_EQ(device_list("cuda:0"), (std::vector<std::string>{"cuda:0"}));
  EXPECT_EQ(device_list("cuda:0,cuda:1,cpu"), (std::vector<std::string>{"cuda:0", "cuda:1", "cpu"}));
  for (const char* bad : {"", ",", "cuda:0,", ",cpu", "cpu,,cpu"}) EXPECT_THROW(device_list(bad), InputError) << bad;
}

TEST(JobOutputs, KeepFileNamesAndRefuseCollisions) {
  EXPECT_EQ(outputs_in({"in/a.pt", "in/sub/b.pt"}, "out"), (std::vector<std::string>{"out/a.pt", "out/b.pt"}));
  EXPECT_THROW(outputs_in({"in/a.pt", "other/a.pt"}, "out"), InputError);
}

}  // namespace
}  // namespace fused3d::test
