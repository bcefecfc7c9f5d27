/*
 * Test helpers shared by every package's tests (test-only).
 *
 * Time scale: tests that assert a wall-clock upper bound ("the lease is gone
 * within 3.5 s") run on slow machines too: under ASan or TSan, on 2 cores
 * shared with other jobs. Rather than loosening each bound by hand, every
 * such bound goes through sl_test_scaled_ms, and the environment variable
 *
 *   SLUICE_TIME_SCALE   a number >= 1, default 1 (tools/test.sh sets it
 *                       for sanitizer runs)
 *
 * stretches them all at once. Lower bounds ("not before 250 ms") and the
 * durations a test configures (TTLs, timeouts it passes to the code under
 * test) are never scaled: only how long the test is willing to wait.
 */
#ifndef SL_COMMON_TESTING_H
#define SL_COMMON_TESTING_H

#include <stdbool.h>
#include <stdint.h>

/* The factor from SLUICE_TIME_SCALE, read once. A value that is not a number
 * in [1, 100] stops the test with a message naming the variable: a typo must
 * not silently run with the wrong bounds. */
double sl_test_time_scale(void);

/* ms multiplied by the time scale (rounded up). */
int64_t sl_test_scaled_ms(int64_t ms);

/* Threads of this process whose name (/proc/self/task/N/comm) begins with
 * prefix; -1 if /proc cannot be read. */
int sl_test_threads_named(const char *prefix);

/* Whether any file under dir (recursively) holds the bytes of needle, e.g.
 * a payload that must not be stored in the clear. A missing dir holds
 * nothing. */
bool sl_test_tree_holds(const char *dir, const char *needle);

#endif
