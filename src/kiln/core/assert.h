// KILN_ASSERT: aborts with file:line on a broken invariant (a bug, never bad
// input — bad input returns an Error, see core/status.h).
#pragma once

#include <cstdio>
#include <cstdlib>

#define KILN_ASSERT(cond)                                                        \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::fprintf(stderr, "kiln: assertion failed: %s (%s:%d)\n", #cond, __FILE__, \
                   __LINE__);                                                    \
      std::abort();                                                              \
    }                                                                            \
  } while (0)

#define KILN_ASSERT_MSG(cond, msg)                                               \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::fprintf(stderr, "kiln: assertion failed: %s: %s (%s:%d)\n", #cond, msg, \
                   __FILE__, __LINE__);                                          \
      std::abort();                                                              \
    }                                                                            \
  } while (0)
