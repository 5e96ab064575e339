// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer target for userspace/http_path.c. Checks the promises of
 * http_path.h, not just "no crash":
 *  - an accepted path is never longer than the input, is NUL-terminated,
 *    and is a fixed point (canonicalising it again gives the same bytes);
 *  - it has no empty, "." or ".." segment, none that is one once a server
 *    trims its white space (dots and spaces alone: "..%C2%A0", "%20."),
 *    no '\', '#', ';' or '%' that is not an upper-case escape;
 *  - a rule that passes http_rule_check matches its own pattern taken as a
 *    path (a canonical pattern always matches itself).
 * tests/fuzz/replay.c runs this on the corpus without libFuzzer.
 */
#include "http_path.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void must(bool cond)
{
	if (!cond)
		abort();
}

static int hex(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Written apart from http_path.c's own test: a segment of dots and white
 * space that some server's trim drops, with a dot in it. */
static bool trims_to_dots(const char *s, size_t n)
{
	uint8_t b[4096];
	size_t m = 0;
	bool dot = false;

	for (size_t i = 0; i < n && m < sizeof(b); i++) {
		if (s[i] == '%' && i + 2 < n && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
			b[m++] = (uint8_t)(hex(s[i + 1]) << 4 | hex(s[i + 2]));
			i += 2;
		} else {
			b[m++] = (uint8_t)s[i];
		}
	}
	for (size_t i = 0; i < m;) {
		uint32_t cp = b[i];
		size_t k = cp < 0x80 ? 1 : cp >= 0xf0 ? 4 : cp >= 0xe0 ? 3 : 2;

		if (k > 1) {
			if (i + k > m)
				return false;
			cp &= 0x3fu >> (k - 1);
			for (size_t j = 1; j < k; j++)
				cp = cp << 6 | (b[i + j] & 0x3fu);
		}
		i += k;
		if (cp == '.')
			dot = true;
		else if (!(cp == ' ' || cp == 0x85 || cp == 0xa0 || cp == 0x1680 || cp == 0x180e ||
			   (cp >= 0x2000 && cp <= 0x200b) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
			   cp == 0x205f || cp == 0x3000 || cp == 0xfeff))
			return false;
	}
	return dot;
}

static void check_canonical(const char *p, size_t n)
{
	for (size_t i = 1, seg = 1; i <= n; i++)
		if (i == n || p[i] == '/') {
			must(!trims_to_dots(p + seg, i - seg));
			seg = i + 1;
		}
	must(p[0] == '/' && strlen(p) == n);
	must(!strstr(p, "//") && !strstr(p, "/./") && !strstr(p, "/../"));
	must(!(n >= 2 && strcmp(p + n - 2, "/.") == 0) && !(n >= 3 && strcmp(p + n - 3, "/..") == 0));
	for (size_t i = 0; i < n; i++) {
		must(p[i] != '\\' && p[i] != '#' && p[i] != ';' && p[i] != '?');
		if (p[i] == '%')
			must(i + 2 < n && ((p[i + 1] >= '0' && p[i + 1] <= '9') || (p[i + 1] >= 'A' && p[i + 1] <= 'F')) &&
			     ((p[i + 2] >= '0' && p[i + 2] <= '9') || (p[i + 2] >= 'A' && p[i + 2] <= 'F')));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *out = malloc(size + 2), *again = malloc(size + 2), *rule;
	struct http_target r, r2;
	const char *why;

	if (!out || !again)
		abort();
	for (int connect = 0; connect < 2; connect++) {
		if (http_target_canon(data, size, connect, out, size + 2, &r) < 0) {
			must(r.error != NULL);
			continue;
		}
		must(r.path_len <= size || (r.form == HTTP_FORM_ABSOLUTE && r.path_len == 1));
		must(out[r.path_len] == '\0');
		if (r.form == HTTP_FORM_ORIGIN || r.form == HTTP_FORM_ABSOLUTE) {
			check_canonical(out, r.path_len);
			must(http_target_canon((const uint8_t *)out, r.path_len, false, again, size + 2, &r2) == 0);
			must(r2.path_len == r.path_len && memcmp(out, again, r.path_len) == 0);
			/* a review rule takes at least what the same rule as an
			 * allow rule takes (its aliases only add) */
			static const char *const rules[] = {
				"GET /files/secret.txt", "DELETE /v1/invoices/*", "GET /admin/**", "POST /v1/payouts",
				"PUT /a/*/b/**", "GET /",
			};
			static const char *const methods[] = { "GET", "HEAD", "DELETE", "POST", "PUT", "PATCH" };
			for (size_t k = 0; k < sizeof(rules) / sizeof(rules[0]); k++)
				for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
					size_t ml = strlen(methods[m]);
					bool al = http_rule_match(rules[k], methods[m], ml, false, out, r.path_len);

					must(!al || http_review_match(rules[k], methods[m], ml, false, out, r.path_len));
				}
		}
		if (r.query)
			must(r.query >= data && r.query + r.query_len <= data + size);
	}
	/* the same bytes as a JSON and as a multipart body: whole or cut in
	 * two anywhere, the scanners answer alike (they read in pieces) */
	{
		struct http_json_scan j1, j2;
		static struct http_multipart_scan m1, m2;
		static const char ct[] = "multipart/form-data; boundary=b";
		size_t cut = size ? data[0] % (size + 1) : 0;
		bool a, b;

		http_json_scan_init(&j1);
		http_json_scan_init(&j2);
		a = http_json_scan(&j1, data, size);
		b = http_json_scan(&j2, data, cut) || http_json_scan(&j2, data + cut, size - cut);
		must(a == b);
		must(http_multipart_scan_init(&m1, ct, sizeof(ct) - 1) == 0);
		must(http_multipart_scan_init(&m2, ct, sizeof(ct) - 1) == 0);
		a = http_multipart_scan(&m1, data, size);
		b = http_multipart_scan(&m2, data, cut) || http_multipart_scan(&m2, data + cut, size - cut);
		must(a == b);
	}
	/* the same bytes as a rule */
	rule = malloc(size + 1);
	if (!rule)
		abort();
	memcpy(rule, data, size);
	rule[size] = '\0';
	if (strlen(rule) == size && http_rule_check(rule, &why) == 0) {
		const char *sp = strchr(rule, ' ');

		must(http_pattern_match(sp + 1, strlen(sp + 1), sp + 1, strlen(sp + 1)));
	}
	free(rule);
	free(out);
	free(again);
	return 0;
}
