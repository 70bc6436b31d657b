// Locations of shared test data, resolved once from the build configuration.
#include "common/paths.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace kiln::test {

std::string shared_dir() {
  if (const char* env = std::getenv("KILN_SHARED_DIR"); env && *env) return env;
  return KILN_SHARED_DIR;
}
std::string testdata(const std::string& rel) { return shared_dir() + "/testdata/" + rel; }
std::string source_dir() { return KILN_SOURCE_DIR; }
std::string kiln_binary() { return KILN_BINARY; }

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    ADD_FAILURE() << "cannot open " << path;
    return {};
  }
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace kiln::test
