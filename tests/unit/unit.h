/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A minimal unit-test harness: one binary per module, each test a function.
 * CHECK() records a failure and goes on; the binary prints one summary line
 * "unit <name>: N passed, M failed" and exits 1 if anything failed.
 * tests/run.sh adds these lines up.
 */
#ifndef AGENTGATE_UNIT_H
#define AGENTGATE_UNIT_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int unit_failed_checks;
static int unit_passed, unit_failed;

/* --write-corpus DIR: tests that parse agent bytes keep their named inputs
 * as fuzzing seeds in DIR (tests/fuzz/corpus/<parser>/). */
static const char *unit_corpus_dir;

static void __attribute__((unused)) unit_seed(const char *name, const void *buf, size_t len)
{
	char path[512];

	if (!unit_corpus_dir)
		return;
	if (snprintf(path, sizeof(path), "%s/%s", unit_corpus_dir, name) >= (int)sizeof(path))
		abort();
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, buf, len) != (ssize_t)len) {
		fprintf(stderr, "write-corpus: '%s': %s\n", path, strerror(errno));
		exit(2);
	}
	close(fd);
}

#define CHECK(cond) do { \
	if (!(cond)) { \
		fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
		unit_failed_checks++; \
	} \
} while (0)

#define CHECK_STR(a, b) do { \
	const char *a_ = (a), *b_ = (b); \
	if (!a_ || !b_ || strcmp(a_, b_) != 0) { \
		fprintf(stderr, "  %s:%d: CHECK_STR failed: '%s' != '%s'\n", \
			__FILE__, __LINE__, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
		unit_failed_checks++; \
	} \
} while (0)

#define RUN(fn) do { \
	int before_ = unit_failed_checks; \
	fn(); \
	if (unit_failed_checks == before_) { unit_passed++; } \
	else { unit_failed++; fprintf(stderr, "FAIL %s\n", #fn); } \
} while (0)

#define UNIT_DONE(name) do { \
	printf("unit %s: %d passed, %d failed\n", name, unit_passed, unit_failed); \
	return unit_failed ? 1 : 0; \
} while (0)

#endif
