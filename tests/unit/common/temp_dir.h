// A fresh directory for one test, named after the process and the running
// test (so parallel ctest runs never share one), removed again at the end.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace kiln::test {

struct TempDir {
  std::filesystem::path path;
  // `prefix` names the suite: /tmp/<prefix>-<pid>-<test name>.
  explicit TempDir(const std::string& prefix) {
    path = std::filesystem::temp_directory_path() /
           (prefix + "-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string operator/(const std::string& name) const { return (path / name).string(); }
  std::string file(const std::string& name = "out.bin") const { return (path / name).string(); }
};

}  // namespace kiln::test
