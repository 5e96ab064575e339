// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer target for userspace/mask.c and mask_json.c. The input is
 *
 *   <mode><json path>\n<body>
 *
 * mode 'D': the seven fixed detectors, 'R': those and one custom pattern,
 * anything else: no detectors. The path (may be empty or invalid: then no
 * path) is compiled with the detectors; the body goes through mask_json()
 * and mask_value(). Without a '\n' the whole input is a body, no rules.
 *
 * Checked promises (mask.h):
 *   mask_json: rc is 0, -EINVAL or -E2BIG; on success the output is JSON
 *   this library accepts, given back byte for byte when re-masked with no
 *   rules (whitespace is kept, nothing else changes), NUL-terminated, and
 *   the report is bounded.
 *   mask_value: the length is within mask_value_bound(); no hit means the
 *   value comes back unchanged, a hit leaves a token; the union of all
 *   detectors misses nothing any single one of them finds. (A second pass
 *   is NOT idempotent by design: "ghp_...+2000000000" has no phone number,
 *   "****+2000000000" has one, since boundaries look at the neighbours.)
 * Seeds come from the unit test:
 *   test_mask --write-corpus tests/fuzz/corpus/mask_json
 * tests/fuzz/replay.c runs this on the corpus without libFuzzer.
 */
#include "mask.h"
#include "policy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const FIXED[] = {
	"credit_card", "email", "us_ssn", "iban", "phone", "jwt", "api_key",
	"regex:(a|b)+c|x[0-9]{2,}" };

static void must(int cond)
{
	if (!cond)
		abort();
}

static struct mask_rules *rules_for(const uint8_t *data, size_t hdr)
{
	char *det[8], *json[1];
	char path[MASK_PATH_MAX_LEN + 1];
	struct policy_mask pm = { .present = true };
	const struct policy_mask *one[1] = { &pm };
	struct mask_rules *m;
	size_t ndet = 0;

	if (hdr > 0 && (data[0] == 'D' || data[0] == 'R'))
		ndet = data[0] == 'D' ? 7 : 8;
	for (size_t i = 0; i < ndet; i++)
		det[i] = (char *)FIXED[i];
	pm.detectors.v = det;
	pm.detectors.n = ndet;
	if (hdr > 1 && hdr - 1 <= MASK_PATH_MAX_LEN && !memchr(data + 1, '\0', hdr - 1)) {
		memcpy(path, data + 1, hdr - 1);
		path[hdr - 1] = '\0';
		if (mask_json_path_check(path, NULL, 0) == 0) {
			json[0] = path;
			pm.json.v = json;
			pm.json.n = 1;
		}
	}
	m = mask_compile(one, 1, NULL, 0);
	must(m != NULL);
	return m;
}

static void check_json(const struct mask_rules *m, const struct mask_rules *none,
		       const char *body, size_t len)
{
	struct mask_report rep;
	char *out = NULL, *again = NULL;
	size_t outlen = 0, againlen = 0;
	int rc = mask_json(m, body, len, &out, &outlen, &rep);

	must(rc == 0 || rc == -EINVAL || rc == -E2BIG);
	if (rc) {
		must(out == NULL && rep.hits == 0);
		return;
	}
	must(out && out[outlen] == '\0' && strlen(rep.fields) < sizeof(rep.fields));
	must(rep.columns <= rep.hits);
	rc = mask_json(none, out, outlen, &again, &againlen, NULL);
	/* Two member names masked to the same text are a documented repeat. */
	must(rc == 0 || (rc == -EINVAL && rep.hits > 0));
	if (rc == 0)
		must(againlen == outlen && memcmp(again, out, outlen) == 0);
	free(again);
	free(out);
}

/* One rules object per fixed detector, built once. */
static struct mask_rules *single[7];

static void build_singles(void)
{
	for (int i = 0; i < 7 && !single[i]; i++) {
		char *det[1] = { (char *)FIXED[i] };
		struct policy_mask pm = { .present = true, .detectors = { det, 1 } };
		const struct policy_mask *one[1] = { &pm };

		single[i] = mask_compile(one, 1, NULL, 0);
		must(single[i] != NULL);
	}
}

static void check_value(const struct mask_rules *m, const char *in, size_t len)
{
	size_t cap = mask_value_bound(len), n;
	char *out = malloc(cap);
	unsigned hits = 0;

	must(out != NULL);
	n = mask_value(m, in, len, out, cap, &hits);
	must(n != (size_t)-1 && n <= cap);
	if (!hits)
		must(n == len && memcmp(out, in, len) == 0);
	else
		must(memmem(out, n, MASK_TOKEN, MASK_TOKEN_LEN) != NULL);
	must(mask_value_matches(m, in, len) == (hits > 0));
	/* The union masks whatever any one of its detectors masks. */
	if (mask_has_detectors(m) && !hits) {
		build_singles();
		for (int i = 0; i < 7; i++)
			must(!mask_value_matches(single[i], in, len));
	}
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t hdr = nl ? (size_t)(nl - data) : 0;
	const uint8_t *body = nl ? nl + 1 : data;
	size_t blen = nl ? size - hdr - 1 : size;
	struct mask_rules *m = nl ? rules_for(data, hdr) : mask_compile(NULL, 0, NULL, 0);
	struct mask_rules *none = mask_compile(NULL, 0, NULL, 0);
	char *copy = malloc(blen ? blen : 1);   /* exact size: ASan sees over-reads */

	must(m && none && copy);
	memcpy(copy, body, blen);
	check_json(m, none, copy, blen);
	check_value(m, copy, blen);
	free(copy);
	mask_free(m);
	mask_free(none);
	return 0;
}
