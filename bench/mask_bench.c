// SPDX-License-Identifier: Apache-2.0
/*
 * mask_bench: what masking one response body costs, with the policy of
 * bench/run.sh's HTTP section (json: $.customer.email, $..card; detectors:
 * credit_card). Not part of bench/run.sh; build and run by hand:
 *
 *   gcc -O2 -g -std=gnu11 -D_GNU_SOURCE -Iuserspace bench/mask_bench.c \
 *       userspace/mask.c userspace/mask_json.c userspace/http_mask.c \
 *       -o build/mask_bench -lpcre2-8 -lz -lpthread && build/mask_bench
 *
 * The documents are the ones run.sh has nginx serve, byte for byte (Python's
 * json.dumps spelling): "small" and "big" (the first list of items that
 * reaches 64 KiB). A FILE argument masks that file instead. For each it
 * prints the best of 5 runs of N calls of http_mask_body(), in µs per call
 * and MB/s. `mask_bench -n N [FILE]` does N calls of the big document (or
 * FILE) and nothing else, for callgrind. Nothing is asserted.
 */
#include "http_mask.h"
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RUNS 5

static char *json[] = { "$.customer.email", "$..card" };
static char *dets[] = { "credit_card" };
static const struct policy_mask pm = {
	.present = true, .detectors = { dets, 1 }, .json = { json, 2 },
};

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* run.sh's "big": {"items": [item 0, item 1, ...]} until >= 65536 bytes. */
static char *big_doc(size_t *len)
{
	size_t cap = 1 << 20, n = 0;
	char *b = malloc(cap);

	n = (size_t)snprintf(b, cap, "{\"items\": [");
	for (int i = 0;; i++) {
		n += (size_t)snprintf(b + n, cap - n, "%s{\"id\": %d, \"customer\": {\"name\": \"Ada\", "
				      "\"email\": \"ada%d@example.com\"}, \"card\": \"4111111111111111\", "
				      "\"total\": %d}", i ? ", " : "", i, i, i * 7);
		if (n + 2 >= 65536)
			break;
	}
	n += (size_t)snprintf(b + n, cap - n, "]}");
	*len = n;
	return b;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *b;
	long n;

	if (!f || fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
		perror(path);
		exit(1);
	}
	b = malloc((size_t)n + 1);
	if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) {
		perror(path);
		exit(1);
	}
	fclose(f);
	*len = (size_t)n;
	return b;
}

static void once(const struct mask_rules *m, const char *doc, size_t len, size_t *outlen, unsigned *hits)
{
	struct mask_report rep;
	const char *why = NULL;
	char *out;

	if (http_mask_body(m, (const uint8_t *)doc, len, NULL, 0, &out, outlen, &rep, &why)) {
		fprintf(stderr, "mask failed: %s\n", why);
		exit(1);
	}
	*hits = rep.hits;
	free(out);
}

static void measure(const struct mask_rules *m, const char *name, const char *doc, size_t len, int n)
{
	double best = 1e18;
	size_t outlen = 0;
	unsigned hits = 0;

	for (int r = 0; r < RUNS; r++) {
		double t0 = now_us();

		for (int i = 0; i < n; i++)
			once(m, doc, len, &outlen, &hits);
		t0 = (now_us() - t0) / n;
		if (t0 < best)
			best = t0;
	}
	printf("%-8s %7zu bytes -> %7zu, %4u hits: %8.2f us/call, %7.1f MB/s\n", name, len, outlen, hits,
	       best, len / best);
}

int main(int argc, char **argv)
{
	const struct policy_mask *pms[] = { &pm };
	static const char small[] =
		"{\"id\": 42, \"customer\": {\"name\": \"Ada\", \"email\": \"ada@example.com\"}, \"total\": 1234}";
	char err[256];
	struct mask_rules *m = mask_compile(pms, 1, err, sizeof(err));
	size_t blen, outlen;
	unsigned hits;
	char *big;
	long calls = 0;

	if (!m) {
		fprintf(stderr, "mask_compile: %s\n", err);
		return 1;
	}
	if (argc > 2 && strcmp(argv[1], "-n") == 0) {
		calls = atol(argv[2]);
		argc -= 2;
		argv += 2;
	}
	big = argc > 1 ? read_file(argv[1], &blen) : big_doc(&blen);
	if (calls) {
		for (long i = 0; i < calls; i++)
			once(m, big, blen, &outlen, &hits);
		printf("%ld calls, %zu bytes -> %zu, %u hits\n", calls, blen, outlen, hits);
	} else {
		measure(m, "small", small, sizeof(small) - 1, 20000);
		measure(m, argc > 1 ? argv[1] : "big", big, blen, 500);
	}
	free(big);
	mask_free(m);
	return 0;
}
