/* The checks of the C unit tests in tests/c: each counts, and a failure
 * prints where and what and is counted; main() reports the two counts. */
#ifndef MP_TEST_CHECK_H
#define MP_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int failures;
static int checks;

#define CHECK(cond) do {                                                      \
    checks++;                                                                 \
    if (!(cond)) {                                                            \
        failures++;                                                           \
        fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                         \
} while (0)

#define CHECK_EQ_U64(a, b) do {                                               \
    unsigned long long _a = (unsigned long long)(a), _b = (unsigned long long)(b); \
    checks++;                                                                 \
    if (_a != _b) {                                                           \
        failures++;                                                           \
        fprintf(stderr, "%s:%d: %s == %llu, expected %s == %llu\n",           \
                __FILE__, __LINE__, #a, _a, #b, _b);                          \
    }                                                                         \
} while (0)

#define CHECK_STR(got, want) do {                                             \
    checks++;                                                                 \
    if (strcmp((got), (want)) != 0) {                                         \
        failures++;                                                           \
        fprintf(stderr, "%s:%d: got \"%s\", expected \"%s\"\n",               \
                __FILE__, __LINE__, (got), (want));                           \
    }                                                                         \
} while (0)

#endif
