// Where tests find shared test data and the kiln binary.
#pragma once

#include <string>

namespace kiln::test {

// ../shared (KILN_SHARED_DIR at configure time, or $KILN_SHARED_DIR at run time).
std::string shared_dir();
std::string testdata(const std::string& rel);  // shared_dir()/testdata/rel
std::string source_dir();                      // the repository root
std::string kiln_binary();                     // path of the built `kiln`
std::string read_file(const std::string& path);  // whole file; aborts the test if missing

}  // namespace kiln::test
