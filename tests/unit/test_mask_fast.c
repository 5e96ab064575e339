/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the fast paths of mask.c and mask_json.c, and for the ways
 * around them:
 *   - the detectors' length prefilter (mask_min_match): a value of exactly
 *     each detector's shortest length is still masked, alone and in JSON;
 *   - strings without escapes are scanned in place (no decode copy), strings
 *     with one are decoded first: escaped quotes, \u escapes spelling '@' or
 *     digits, in values and in member names, at every offset around the
 *     8-byte word scan and at the very end of the body;
 *   - a differential check: random documents, once plain and once with one
 *     character of every string \u-escaped, must mask alike (jansson
 *     compares the decoded outputs);
 *   - the bit-parallel path states: nested arrays, indexes, wildcards, names
 *     of the same length and first byte as a path's, and the key filter in
 *     front of the step compares (escaped names, names on the same bit,
 *     non-ASCII);
 *   - the report's name cache: a name listed once, more names than the cache;
 *   - huge strings and invalid JSON (fail closed as before).
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>

#include "mask.h"
#include "policy.h"
#include "unit.h"

static struct mask_rules *compile(const char *const *det, size_t ndet, const char *const *json, size_t njson)
{
	struct policy_mask pm = { .present = true, .detectors = { (char **)det, ndet },
				  .json = { (char **)json, njson } };
	const struct policy_mask *one[1] = { &pm };
	char err[256];
	struct mask_rules *m = mask_compile(one, 1, err, sizeof(err));

	if (!m)
		fprintf(stderr, "  mask_compile: %s\n", err);
	return m;
}

/* mask_json on an exact-size heap copy (ASan sees any read past the body);
 * returns the output (caller frees) or NULL, rc in *rc. */
static char *mj(const struct mask_rules *m, const char *in, size_t len, int *rc, struct mask_report *rep)
{
	char *copy = malloc(len ? len : 1), *out = NULL;
	size_t outlen = 0;

	memcpy(copy, in, len);
	*rc = mask_json(m, copy, len, &out, &outlen, rep);
	free(copy);
	if (!*rc && strlen(out) != outlen) {   /* no NUL inside: the length is right */
		fprintf(stderr, "  output length %zu != strlen %zu\n", outlen, strlen(out));
		unit_failed_checks++;
	}
	return out;
}

static char *mjs(const struct mask_rules *m, const char *in, int *rc)
{
	return mj(m, in, strlen(in), rc, NULL);
}

/* ---- the shortest match of each detector --------------------------------- */

static void test_min_lengths(void)
{
	static const struct { const char *det, *in; size_t minlen; } c[] = {
		{ "credit_card", "4222222222222", 13 },
		{ "email", "a@b.cc", 6 },
		{ "us_ssn", "123-45-6789", 11 },
		{ "iban", "NO9386011117947", 15 },
		{ "phone", "+12345678", 9 },
		{ "jwt", "eyJhbGci.xxxxxxxxxx.", 20 },
		{ "api_key", "xoxb-1234567890", 15 },
	};

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		const char *det[1] = { c[i].det };
		struct mask_rules *m = compile(det, 1, NULL, 0);
		size_t n = strlen(c[i].in);
		char out[64], body[128], want[64], *o;
		unsigned hits = 0;
		size_t on;
		int rc;

		CHECK(m != NULL);
		if (!m)
			continue;
		CHECK(n == c[i].minlen);
		CHECK(mask_min_match(m) == c[i].minlen);
		on = mask_value(m, c[i].in, n, out, sizeof(out), &hits);
		if (on != MASK_TOKEN_LEN || memcmp(out, MASK_TOKEN, MASK_TOKEN_LEN) || hits != 1) {
			fprintf(stderr, "  %s: shortest match '%s' not masked\n", c[i].det, c[i].in);
			unit_failed_checks++;
		}
		CHECK(mask_value_maybe(m, c[i].in, n));
		/* one byte shorter is below the prefilter: given back as is */
		CHECK(!mask_value_maybe(m, c[i].in, n - 1));
		CHECK(mask_value(m, c[i].in, n - 1, out, sizeof(out), &hits) == n - 1);
		CHECK(memcmp(out, c[i].in, n - 1) == 0);
		/* in JSON: as a value and as a member name */
		snprintf(body, sizeof(body), "{\"%s\":[\"%s\"]}", c[i].in, c[i].in);
		o = mjs(m, body, &rc);
		snprintf(want, sizeof(want), "{\"****\":[\"****\"]}");
		CHECK(rc == 0 && o && strcmp(o, want) == 0);
		free(o);
		mask_free(m);
	}
	/* with a custom pattern any non-empty value is looked at */
	{
		const char *det[2] = { "credit_card", "regex:Q" };
		struct mask_rules *m = compile(det, 2, NULL, 0);
		char out[8];
		int rc;
		char *o;

		CHECK(m && mask_min_match(m) == 1);
		CHECK(m && mask_value_maybe(m, "Q", 1));
		CHECK(m && mask_value(m, "Q", 1, out, sizeof(out), NULL) == MASK_TOKEN_LEN);
		o = m ? mjs(m, "{\"Q\":\"Q\",\"a\":\"\\u0051\"}", &rc) : NULL;
		CHECK(o && rc == 0 && strcmp(o, "{\"****\":\"****\",\"a\":\"****\"}") == 0);
		free(o);
		mask_free(m);
	}
	/* a '%' or a '+' anywhere in a value the detectors would pass (no
	 * digits, no '@') gets it looked at (url_encoded() may decode a
	 * match), at every offset of every length to 40 */
	{
		const char *det[1] = { "email" };
		struct mask_rules *m = compile(det, 1, NULL, 0);
		char v[48];
		int bad = 0;

		CHECK(m != NULL);
		for (size_t n = 1; m && n <= 40; n++) {
			memset(v, 'x', n);
			if (n >= mask_min_match(m) && mask_value_maybe(m, v, n))
				bad++;      /* nothing to look at */
			for (size_t at = 0; at < n; at++)
				for (int k = 0; k < 3; k++) {
					memset(v, 'x', n);
					v[at] = "%+&"[k];
					if (n >= mask_min_match(m) && mask_value_maybe(m, v, n) != (k < 2))
						bad++;
				}
		}
		CHECK(bad == 0);
		mask_free(m);
	}
	/* no detectors: nothing to match, SIZE_MAX */
	{
		const char *json[1] = { "$.a" };
		struct mask_rules *m = compile(NULL, 0, json, 1);

		CHECK(m && mask_min_match(m) == SIZE_MAX);
		CHECK(m && !mask_value_maybe(m, "4111111111111111", 16));
		mask_free(m);
	}
}

/* ---- escapes: the decoded text is what is scanned -------------------------- */

static void test_escapes(void)
{
	const char *det[2] = { "credit_card", "email" };
	const char *json[2] = { "$..card", "$.a[1]" };
	struct mask_rules *m = compile(det, 2, json, 2);
	static const struct { const char *in, *want; } c[] = {
		/* an escaped quote in front of a card: decoded, found, re-encoded */
		{ "{\"a\":\"x\\\"4111111111111111\"}", "{\"a\":\"x\\\"****\"}" },
		/* \u0040 spells the '@' */
		{ "[\"ada\\u0040example.com\"]", "[\"****\"]" },
		{ "[\"ada\\u0040example\\u002ecom\"]", "[\"****\"]" },
		/* digits spelled as \u escapes: 16 bytes decoded, 26 raw */
		{ "[\"\\u003411111111111111\\u0031\"]", "[\"****\"]" },
		/* and 11 bytes raw that decode to fewer than the 13 a card needs */
		{ "[\"\\u0034111111\"]", "[\"\\u0034111111\"]" },
		/* a short raw text that decodes to nothing matchable, kept as it is */
		{ "[\"\\u0041da\"]", "[\"\\u0041da\"]" },
		/* escapes in a member name: the path matches the decoded name */
		{ "[{\"\\u0063ard\":\"1\"},{\"c\\u0061rd\":{\"x\":1}}]", "[{\"\\u0063ard\":\"****\"},{\"c\\u0061rd\":\"****\"}]" },
		/* two spellings of one name in one object are duplicates */
		{ "{\"\\u0063ard\":\"1\",\"card\":2}", NULL },
		/* names the same length and first byte as "card" are not it */
		{ "{\"cart\":\"1\",\"carD\":2,\"card\":3}", "{\"cart\":\"1\",\"carD\":2,\"card\":\"****\"}" },
		/* a name that is a card is masked itself, its value by content */
		{ "{\"4111111111111111\":\"ok\"}", "{\"****\":\"ok\"}" },
		/* a solidus, a tab and a non-ASCII letter around a card */
		{ "[\"\\/4111111111111111\\t\\u00e9\"]", "[\"/****\\t\xc3\xa9\"]" },
		/* a surrogate pair right before an email */
		{ "[\"\\ud83d\\ude00 a@b.cc\"]", "[\"\xf0\x9f\x98\x80 ****\"]" },
		/* the card as a JSON number */
		{ "{\"n\":4111111111111111,\"m\":-4111111111111111}", "{\"n\":\"****\",\"m\":\"****\"}" },
	};

	CHECK(m != NULL);
	for (size_t i = 0; m && i < sizeof(c) / sizeof(c[0]); i++) {
		int rc;
		char *o = mjs(m, c[i].in, &rc);

		if (c[i].want ? (rc || !o || strcmp(o, c[i].want)) : (rc != -EINVAL || o)) {
			fprintf(stderr, "  escapes #%zu: rc %d '%s', want '%s'\n", i, rc, o ? o : "(null)",
				c[i].want ? c[i].want : "-EINVAL");
			unit_failed_checks++;
		}
		free(o);
	}
	mask_free(m);
}

/* ---- every offset around the word scan ----------------------------------- */

/* A string of n filler bytes with special at offset k, ending the body right
 * after (tail = "]") or well before it. */
static void at_offsets(const struct mask_rules *m, const char *special, int want_rc, const char *what)
{
	for (size_t n = 0; n < 40; n++)   /* past two 16-byte and five 8-byte windows */
		for (size_t k = 0; k <= n; k++)
			for (int pad = 0; pad < 2; pad++) {
				char body[128], *o;
				size_t len = 0, sl = strlen(special);
				int rc;

				body[len++] = '[';
				body[len++] = '"';
				for (size_t i = 0; i < n; i++) {
					if (i == k) {
						memcpy(body + len, special, sl);
						len += sl;
					}
					body[len++] = "ghijklmopqsvwxyz"[i % 16];   /* no hex digit, no escape letter */
				}
				if (k == n) {
					memcpy(body + len, special, sl);
					len += sl;
				}
				body[len++] = '"';
				if (pad) {
					memcpy(body + len, ",1,2,3,4,5,6,7,8,9", 18);
					len += 18;
				}
				body[len++] = ']';
				o = mj(m, body, len, &rc, NULL);
				if (rc != want_rc) {
					fprintf(stderr, "  %s at %zu of %zu (pad %d): rc %d, want %d\n", what, k, n,
						pad, rc, want_rc);
					unit_failed_checks++;
				}
				if (!rc && want_rc == 0 && (!o || memcmp(o, body, len) != 0)) {
					fprintf(stderr, "  %s at %zu of %zu: output changed: %s\n", what, k, n, o);
					unit_failed_checks++;
				}
				free(o);
			}
}

static void test_word_scan_offsets(void)
{
	const char *det[1] = { "email" };
	struct mask_rules *m = compile(det, 1, NULL, 0);

	CHECK(m != NULL);
	if (!m)
		return;
	at_offsets(m, "\x01", -EINVAL, "control byte");
	at_offsets(m, "\x1f", -EINVAL, "unit separator");
	at_offsets(m, "\"", -EINVAL, "stray quote");   /* ends the string early: junk follows */
	at_offsets(m, "\\", -EINVAL, "lone backslash");
	at_offsets(m, "\\x", -EINVAL, "bad escape");
	at_offsets(m, "\\u12", -EINVAL, "short \\u");
	at_offsets(m, "\\u0000", -EINVAL, "\\u0000");
	at_offsets(m, "\\udc00", -EINVAL, "lone low surrogate");
	at_offsets(m, "\\ud800x", -EINVAL, "lone high surrogate");
	at_offsets(m, "\xff", -EINVAL, "byte 0xff");
	at_offsets(m, "\xc3", -EINVAL, "cut UTF-8");
	at_offsets(m, "\xc0\xaf", -EINVAL, "overlong UTF-8");
	at_offsets(m, "\xed\xa0\x80", -EINVAL, "UTF-8 surrogate");
	at_offsets(m, "\x7f", 0, "DEL");                /* allowed by RFC 8259 */
	at_offsets(m, "\xc3\xa9", 0, "two-byte UTF-8");
	at_offsets(m, "\xf0\x9f\x98\x80", 0, "four-byte UTF-8");
	at_offsets(m, "\\\"", 0, "escaped quote");
	at_offsets(m, "\\\\", 0, "escaped backslash");
	at_offsets(m, "\\u00e9", 0, "\\u escape");
	at_offsets(m, "\\ud83d\\ude00", 0, "surrogate pair");
	/* unterminated strings of every length, at the very end of the body */
	for (size_t n = 0; n < 24; n++) {
		char body[32];
		int rc;
		char *o;

		body[0] = '"';
		memset(body + 1, 'x', n);
		o = mj(m, body, n + 1, &rc, NULL);
		CHECK(rc == -EINVAL && o == NULL);
		body[n] = '\\';
		o = mj(m, body, n + 1, &rc, NULL);
		CHECK(n == 0 || (rc == -EINVAL && o == NULL));
	}
	mask_free(m);
}

/* ---- differential: plain vs escaped strings ------------------------------ */

static unsigned rnd_state = 12345;

static unsigned rnd(unsigned n)
{
	rnd_state = rnd_state * 1103515245u + 12345u;
	return (rnd_state >> 8) % n;
}

/* Appends a random string's content: pieces that detectors look for,
 * a space between them (so each stays whole for its detector). */
static size_t rnd_text(char *o)
{
	static const char *const piece[] = {
		"4111111111111111", "4111 1111 1111 1111", "ada@example.com", "a@b.cc", "+14155552671",
		"123-45-6789", "DE89370400440532013000", "x", " ", "-", ".", "@", "+", "12", "7",
		"\xc3\xa9", "plain words", "eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.c2ln", "AKIAIOSFODNN7EXAMPLE",
	};
	size_t n = 0, k = rnd(5);

	for (size_t i = 0; i < k; i++) {
		const char *p = piece[rnd(sizeof(piece) / sizeof(piece[0]))];

		if (i)
			o[n++] = ' ';
		memcpy(o + n, p, strlen(p));
		n += strlen(p);
	}
	return n;
}

/* Writes text as a JSON string; esc: one ASCII character as a \u escape. */
static size_t put_str(char *o, const char *t, size_t n, bool esc)
{
	size_t k = 0, which = n ? rnd((unsigned)n) : 0;
	bool done = false;

	o[k++] = '"';
	for (size_t i = 0; i < n; i++) {
		if (esc && !done && i >= which && (uint8_t)t[i] < 0x80) {
			k += (size_t)sprintf(o + k, "\\u%04x", (unsigned)t[i]);
			done = true;
		} else {
			o[k++] = t[i];
		}
	}
	o[k++] = '"';
	return k;
}

static void test_differential(void)
{
	const char *det[7] = { "credit_card", "email", "us_ssn", "iban", "phone", "jwt", "api_key" };
	const char *json[3] = { "$..card", "$.items[*].secret", "$.a[2]" };
	static const char *const names[] = { "card", "secret", "id", "items", "a", "name", "ada@example.com" };
	struct mask_rules *m = compile(det, 7, json, 3);
	char *plain = malloc(1 << 16), *esc = malloc(1 << 16);
	int bad = 0;

	CHECK(m != NULL);
	for (int iter = 0; m && iter < 3000 && bad < 5; iter++) {
		size_t pn = 0, en = 0, nitems = 1 + rnd(6);
		struct mask_report rp, re;
		char *op, *oe;
		int rcp, rce;
		json_t *jp, *je;

		plain[pn++] = esc[en++] = '{';
		for (size_t i = 0; i < nitems; i++) {
			char t[256];
			const char *nm = names[rnd(sizeof(names) / sizeof(names[0]))];
			size_t tn = rnd_text(t);

			if (i) {
				plain[pn++] = esc[en++] = ',';
			}
			/* member names are unique: a suffix with the index */
			{
				char key[64];
				size_t kn = (size_t)snprintf(key, sizeof(key), "%s%s", nm, i ? "" : "");

				if (i)   /* an address keeps its shape with the index in front */
					kn = (size_t)snprintf(key, sizeof(key), strchr(nm, '@') ? "%2$zu%1$s" : "%1$s%2$zu",
							      nm, i);
				pn += put_str(plain + pn, key, kn, false);
				en += put_str(esc + en, key, kn, true);
			}
			plain[pn++] = esc[en++] = ':';
			switch (rnd(3)) {
			case 0:
				pn += put_str(plain + pn, t, tn, false);
				en += put_str(esc + en, t, tn, true);
				break;
			case 1: {   /* an array of strings, nested */
				plain[pn++] = esc[en++] = '[';
				plain[pn++] = esc[en++] = '[';
				pn += put_str(plain + pn, t, tn, false);
				en += put_str(esc + en, t, tn, true);
				plain[pn++] = esc[en++] = ']';
				plain[pn++] = esc[en++] = ',';
				pn += put_str(plain + pn, t, tn, false);
				en += put_str(esc + en, t, tn, true);
				plain[pn++] = esc[en++] = ']';
				break;
			}
			default: {  /* an object with a card member */
				const char *o = "{\"card\":";

				memcpy(plain + pn, o, 8);
				memcpy(esc + en, o, 8);
				pn += 8;
				en += 8;
				pn += put_str(plain + pn, t, tn, false);
				en += put_str(esc + en, t, tn, true);
				plain[pn++] = esc[en++] = '}';
			}
			}
		}
		plain[pn++] = esc[en++] = '}';
		op = mj(m, plain, pn, &rcp, &rp);
		oe = mj(m, esc, en, &rce, &re);
		jp = op ? json_loads(op, JSON_REJECT_DUPLICATES, NULL) : NULL;
		je = oe ? json_loads(oe, JSON_REJECT_DUPLICATES, NULL) : NULL;
		/* names masked alike may repeat in the output: compare loosely then */
		if (rcp || rce || rp.hits != re.hits || rp.columns != re.columns ||
		    strcmp(rp.fields, re.fields) || (jp && je && !json_equal(jp, je)) || (!jp != !je)) {
			fprintf(stderr, "  differential: rc %d/%d hits %u/%u\n   %.*s\n   %.*s\n   -> %s\n   -> %s\n",
				rcp, rce, rp.hits, re.hits, (int)pn, plain, (int)en, esc, op ? op : "-", oe ? oe : "-");
			unit_failed_checks++;
			bad++;
		}
		/* nothing a detector finds survives in either output */
		if (op && (strstr(op, "4111") || strstr(op, "ada@example") || strstr(op, "AKIA") ||
			   strstr(op, "123-45-6789") || strstr(op, "DE8937"))) {
			fprintf(stderr, "  differential: unmasked in %s\n", op);
			unit_failed_checks++;
			bad++;
		}
		json_decref(jp);
		json_decref(je);
		free(op);
		free(oe);
	}
	free(plain);
	free(esc);
	mask_free(m);
}

/* ---- paths through nested arrays ------------------------------------------ */

static void test_paths_nested(void)
{
	const char *json[4] = { "$..card", "$.items[1].secret", "$.grid[*][0]", "$.customer.email" };
	const char *det[1] = { "credit_card" };
	struct mask_rules *m = compile(det, 1, json, 4);
	static const struct { const char *in, *want; } c[] = {
		{ "[[[{\"card\":1}]],[[[{\"x\":{\"card\":[2]}}]]]]", "[[[{\"card\":\"****\"}]],[[[{\"x\":{\"card\":\"****\"}}]]]]" },
		{ "{\"items\":[{\"secret\":1},{\"secret\":2},{\"secret\":3}]}",
		  "{\"items\":[{\"secret\":1},{\"secret\":\"****\"},{\"secret\":3}]}" },
		{ "{\"grid\":[[1,2],[3,4],[]]}", "{\"grid\":[[\"****\",2],[\"****\",4],[]]}" },
		{ "{\"items\":[{\"customer\":{\"email\":\"a@b.cc\"}}],\"customer\":{\"email\":\"c@d.ee\"}}",
		  "{\"items\":[{\"customer\":{\"email\":\"a@b.cc\"}}],\"customer\":{\"email\":\"****\"}}" },
		/* the subtree under a masked value is validated all the same */
		{ "{\"card\":{\"a\":[1,2,{\"b\":\"\\u0000\"}]}}", NULL },
		{ "{\"card\":[1,2,}", NULL },
		{ "{\"card\":{\"a\":1,\"a\":2}}", NULL },
	};

	CHECK(m != NULL);
	for (size_t i = 0; m && i < sizeof(c) / sizeof(c[0]); i++) {
		int rc;
		char *o = mjs(m, c[i].in, &rc);

		if (c[i].want ? (rc || !o || strcmp(o, c[i].want)) : (rc != -EINVAL || o)) {
			fprintf(stderr, "  nested #%zu: rc %d '%s', want '%s'\n", i, rc, o ? o : "(null)",
				c[i].want ? c[i].want : "-EINVAL");
			unit_failed_checks++;
		}
		free(o);
	}
	mask_free(m);
}

/* ---- the key filter of the path steps ------------------------------------- */

/*
 * A member name that hashes to no name step's bit skips the step compares
 * (step_states()): what a step names must still match through the filter,
 * a name sharing a step's first byte and length (the same bit) must not,
 * and wildcard and index steps advance whatever the name.
 */
static void test_key_filter(void)
{
	const char *json[5] = { "$..card", "$.a.*.z", "$['%']", "$..\xc3\xa9t\xc3\xa9", "$.l[2]" };
	struct mask_rules *m = compile(NULL, 0, json, 5);
	static const struct { const char *in, *want; } c[] = {
		{ "{\"cart\":1,\"card\":2,\"drac\":3,\"car\":4,\"cards\":5}",
		  "{\"cart\":1,\"card\":\"****\",\"drac\":3,\"car\":4,\"cards\":5}" },
		{ "{\"\\u0063ard\":1,\"x\":{\"c\\u0061rd\":[2]}}", "{\"\\u0063ard\":\"****\",\"x\":{\"c\\u0061rd\":\"****\"}}" },
		{ "{\"a\":{\"q\":{\"z\":1,\"y\":2},\"\\u00ff\":{\"z\":3},\"\":{\"z\":4}}}",
		  "{\"a\":{\"q\":{\"z\":\"****\",\"y\":2},\"\\u00ff\":{\"z\":\"****\"},\"\":{\"z\":\"****\"}}}" },
		/* "" and "%" have the same bit ('%' is 37, the length term of 1) */
		{ "{\"\":5,\"%\":6,\"b\":{\"%\":7}}", "{\"\":5,\"%\":\"****\",\"b\":{\"%\":7}}" },
		{ "{\"x\":[{\"\xc3\xa9t\xc3\xa9\":1}],\"\\u00e9t\\u00e9\":2,\"\xc3\xa9t\xc3\xa8\":3}",
		  "{\"x\":[{\"\xc3\xa9t\xc3\xa9\":\"****\"}],\"\\u00e9t\\u00e9\":\"****\",\"\xc3\xa9t\xc3\xa8\":3}" },
		{ "{\"l\":[0,1,2,3],\"m\":[0,1,2]}", "{\"l\":[0,1,\"****\",3],\"m\":[0,1,2]}" },
	};

	CHECK(m != NULL);
	for (size_t i = 0; m && i < sizeof(c) / sizeof(c[0]); i++) {
		int rc;
		char *o = mjs(m, c[i].in, &rc);

		if (rc || !o || strcmp(o, c[i].want)) {
			fprintf(stderr, "  key filter #%zu: rc %d '%s', want '%s'\n", i, rc, o ? o : "(null)", c[i].want);
			unit_failed_checks++;
		}
		free(o);
	}
	mask_free(m);
}

/* ---- the report's name cache ---------------------------------------------- */

static void test_report_cache(void)
{
	const char *det[1] = { "credit_card" };
	struct mask_rules *m = compile(det, 1, NULL, 0);
	char *body = malloc(1 << 16), *o;
	struct mask_report rep;
	size_t n = 0;
	int rc;

	/* many hits under the same two names: each listed once */
	n += (size_t)sprintf(body + n, "{\"a\":[");
	for (int i = 0; i < 200; i++)
		n += (size_t)sprintf(body + n, "%s\"4111111111111111\"", i ? "," : "");
	n += (size_t)sprintf(body + n, "],\"b\":\"4111111111111111\"}");
	o = m ? mj(m, body, n, &rc, &rep) : NULL;
	CHECK(o && rc == 0 && rep.hits == 201 && rep.columns == 201);
	CHECK_STR(rep.fields, "a,b");
	free(o);
	/* more names than the cache holds, each with two hits: every one
	 * listed once, in order, then "..." when the list is full */
	n = (size_t)sprintf(body, "{");
	for (int i = 0; i < 40; i++)
		n += (size_t)sprintf(body + n, "%s\"name%02d\":[\"4111111111111111\",\"4111111111111111\"]",
				     i ? "," : "", i);
	n += (size_t)sprintf(body + n, ",\"name00x\":\"4111111111111111\"}");
	o = m ? mj(m, body, n, &rc, &rep) : NULL;
	CHECK(o && rc == 0 && rep.hits == 81);
	CHECK(strncmp(rep.fields, "name00,name01,name02,name03,name04,name05,name06,name07,name08,name09,", 70) == 0);
	CHECK(strstr(rep.fields, "name39,name00x") != NULL);
	{
		int count = 0;

		for (const char *p = rep.fields; (p = strstr(p, "name09")); p++)
			count++;
		CHECK(count == 1);
	}
	free(o);
	/* a long name (over the cache's 64 bytes) is listed once too */
	n = (size_t)sprintf(body, "{\"%0100d\":[\"4111111111111111\",\"4111111111111111\"]}", 7);
	o = m ? mj(m, body, n, &rc, &rep) : NULL;
	CHECK(o && rc == 0 && rep.hits == 2 && strlen(rep.fields) == 64 && !strchr(rep.fields, ','));
	free(o);
	free(body);
	mask_free(m);
}

/* ---- huge strings ---------------------------------------------------------- */

static void test_huge_strings(void)
{
	const char *det[2] = { "credit_card", "email" };
	struct mask_rules *m = compile(det, 2, NULL, 0);
	size_t n = 4u << 20;
	char *body = malloc(n + 64), *o;
	int rc;

	CHECK(m != NULL);
	if (!m) {
		free(body);
		return;
	}
	/* one 4 MiB string, a card at its very end, no escape (scanned in place) */
	body[0] = '"';
	memset(body + 1, 'a', n);
	memcpy(body + 1 + n - 16, "4111111111111111", 16);
	body[n + 1] = '"';
	o = mj(m, body, n + 2, &rc, NULL);
	CHECK(rc == 0 && o && strlen(o) == n - 16 + 4 + 2 && strcmp(o + 1 + n - 16, "****\"") == 0);
	free(o);
	/* the same with an escape at the very end (decoded whole) */
	memcpy(body + 1 + n - 6, "\\u0041", 6);
	memcpy(body + 1 + n - 22, "4111111111111111", 16);
	o = mj(m, body, n + 2, &rc, NULL);
	CHECK(rc == 0 && o && strcmp(o + 1 + n - 22, "****A\"") == 0);
	free(o);
	/* an email split by an escape in its middle is still one address */
	memcpy(body + 1, "ada\\u0040example.com ", 21);
	o = mj(m, body, n + 2, &rc, NULL);
	CHECK(rc == 0 && o && strncmp(o, "\"**** ", 6) == 0);
	free(o);
	/* a control byte 3 MiB in: refused */
	body[3u << 20] = '\n';
	o = mj(m, body, n + 2, &rc, NULL);
	CHECK(rc == -EINVAL && o == NULL);
	free(body);
	mask_free(m);
}

/* ---- scratch that starts inside the parser and moves to the heap --------- */

static void test_scratch_growth(void)
{
	const char *json[6] = { "$.k099", "$..deep", "$.a", "$.b", "$.c", "$.d" };
	const char *det[1] = { "credit_card" };
	struct mask_rules *m4 = compile(det, 1, json, 2), *m6 = compile(det, 1, json, 6);
	char *body = malloc(1 << 16), *o;
	size_t n;
	int rc;

	CHECK(m4 && m6);
	if (!m4 || !m6) {
		free(body);
		mask_free(m4);
		mask_free(m6);
		return;
	}
	/* 100 members with 40-byte names: more keys and name bytes than start
	 * inline; the last is named by a path */
	for (int dup = 0; dup < 2; dup++) {
		n = (size_t)sprintf(body, "{");
		for (int i = 0; i < 100; i++)
			n += (size_t)sprintf(body + n, "%s\"k%03d%036d\":%d", i ? "," : "", i, 0, i);
		n += (size_t)sprintf(body + n, ",\"k099\":\"4111111111111111\"");
		if (dup)   /* the first name again, at the very end */
			n += (size_t)sprintf(body + n, ",\"k000%036d\":1", 0);
		n += (size_t)sprintf(body + n, "}");
		o = mj(m4, body, n, &rc, NULL);
		if (dup) {
			CHECK(rc == -EINVAL && o == NULL);
		} else {
			CHECK(rc == 0 && o && strstr(o, "\"k099\":\"****\"}") && !strstr(o, "4111"));
			CHECK(o && strstr(o, "\"k098000000000000000000000000000000000000\":98,"));
		}
		free(o);
	}
	/* 20 open objects with 60-byte names: the names of the open objects
	 * outgrow the inline arena while they are all still open */
	n = 0;
	for (int i = 0; i < 20; i++)
		n += (size_t)sprintf(body + n, "{\"%060d\":", i);
	n += (size_t)sprintf(body + n, "{\"deep\":1,\"x\":\"4111111111111111\"}");
	for (int i = 0; i < 20; i++)
		body[n++] = '}';
	o = mj(m4, body, n, &rc, NULL);
	CHECK(rc == 0 && o && strstr(o, "{\"deep\":\"****\",\"x\":\"****\"}}}"));
	free(o);
	/* more paths than live on the stack: the same answers */
	o = mj(m6, body, n, &rc, NULL);
	CHECK(rc == 0 && o && strstr(o, "{\"deep\":\"****\",\"x\":\"****\"}}}"));
	free(o);
	o = mjs(m6, "{\"a\":1,\"b\":[2],\"c\":{\"d\":3},\"d\":\"x\",\"e\":5}", &rc);
	CHECK(rc == 0 && o && strcmp(o, "{\"a\":\"****\",\"b\":\"****\",\"c\":\"****\",\"d\":\"****\",\"e\":5}") == 0);
	free(o);
	free(body);
	mask_free(m4);
	mask_free(m6);
}

/* ---- short copies (copy_short): every run and name length ----------------- */

/* Runs between two masked values and member names of every length from 0
 * to 40 are copied exactly (output = input with each masked value replaced,
 * whitespace kept), and names that differ only in their first or last byte
 * are told apart while equal ones are duplicates (the names' copies in the
 * arena are exact too). */
static void test_short_runs(void)
{
	static const char *const json[] = { "$..x" };
	struct mask_rules *m = compile(NULL, 0, json, 1);
	char in[8192], want[8192], name[64];
	size_t n = 0, k = 0;
	char *o;
	int rc;

	CHECK(m != NULL);
	in[n++] = '[';
	want[k++] = '[';
	for (int len = 0; len <= 40; len++) {
		for (int i = 0; i < len; i++)
			name[i] = (char)('a' + (len + i * 7) % 26);
		name[len] = '\0';
		/* {"name" :\t<len + 1 digits> ,\n"x" : 7}: the run from one
		 * masked x to the next grows by two bytes per object */
		n += (size_t)sprintf(in + n, "%s{\"%s\" :\t", len ? " ," : "", name);
		k += (size_t)sprintf(want + k, "%s{\"%s\" :\t", len ? " ," : "", name);
		for (int i = 0; i <= len; i++) {
			in[n++] = (char)('1' + (i + len) % 9);
			want[k++] = in[n - 1];
		}
		n += (size_t)sprintf(in + n, " ,\n\"x\" : %d}", len);
		k += (size_t)sprintf(want + k, " ,\n\"x\" : \"****\"}");
	}
	n += (size_t)sprintf(in + n, " ]");
	k += (size_t)sprintf(want + k, " ]");
	o = mj(m, in, n, &rc, NULL);
	CHECK(rc == 0 && o && strcmp(o, want) == 0);
	free(o);
	for (int len = 1; len <= 40; len++) {
		char a[64], b[64], doc[256];

		for (int i = 0; i < len; i++)
			a[i] = b[i] = (char)('a' + (len + i * 5) % 26);
		a[len] = b[len] = '\0';
		snprintf(doc, sizeof(doc), "{\"%s\": 1, \"%s\": 2}", a, b);
		o = mjs(m, doc, &rc);
		CHECK(rc == -EINVAL && !o);   /* a duplicate name */
		b[len - 1] = 'Z';
		snprintf(doc, sizeof(doc), "{\"%s\": 1, \"%s\": 2}", a, b);
		o = mjs(m, doc, &rc);
		CHECK(rc == 0 && o);
		free(o);
		b[len - 1] = a[len - 1];
		b[0] = 'Z';
		snprintf(doc, sizeof(doc), "{\"%s\": 1, \"%s\": 2}", a, b);
		o = mjs(m, doc, &rc);
		CHECK(rc == 0 && o);
		free(o);
	}
	mask_free(m);
}

/* Duplicate names are found by a filter of bits (one per name, equal
 * names on the same bit) before any names are compared: every pair of
 * one-letter names, many of them on one bit ("a" and "q"), and the
 * empty name, as the second and as the third member, with the first one
 * escaped too. Equal names are duplicates, different ones are not. */
static void test_dup_filter(void)
{
	static const char *const json[] = { "$..x" };
	struct mask_rules *m = compile(NULL, 0, json, 1);
	static const char names[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
	int bad = 0;

	CHECK(m != NULL);
	for (int i = -1; m && i < (int)sizeof(names) - 1; i++)
		for (int j = -1; j < (int)sizeof(names) - 1; j++)
			for (int form = 0; form < 3; form++) {
				char a[2] = { i < 0 ? 0 : names[i], 0 }, b[2] = { j < 0 ? 0 : names[j], 0 };
				char doc[128], ea[8];
				char *o;
				int rc;

				if (form == 2 && i >= 0)
					snprintf(ea, sizeof(ea), "\\u%04x", (unsigned)a[0]);
				else
					snprintf(ea, sizeof(ea), "%s", a);
				if (form == 0)
					snprintf(doc, sizeof(doc), "{\"%s\": 1, \"%s\": 2}", a, b);
				else
					snprintf(doc, sizeof(doc), "{\"%s\": 1, \"mid\": 0, \"%s\": 2}", ea, b);
				o = mjs(m, doc, &rc);
				if (i == j ? rc != -EINVAL || o : rc != 0 || !o)
					bad++;
				free(o);
			}
	CHECK(bad == 0);
	mask_free(m);
}

/* Whitespace runs of 1 to 9 bytes (of all four kinds) between every two
 * tokens are kept as they are, masked values replaced between them; a control byte that is not JSON whitespace
 * (\v, \f, \x01) after or inside such a run is not JSON. */
static void test_ws_runs(void)
{
	static const char *const json[] = { "$..card" };
	static const char *const det[] = { "credit_card" };
	static const char *const toks[] = { "{", "\"a\"", ":", "[", "1", ",", "\"4111111111111111\"", ",",
					    "{", "\"card\"", ":", "true", "}", "]", ",", "\"b\"", ":", "null", "}" };
	static const char wsch[] = " \t\n\r";
	struct mask_rules *m = compile(det, 1, json, 1);
	char in[1024], bad[1024], want[1024];
	char *o;
	int rc;

	CHECK(m != NULL);
	for (int k = 1; k <= 9; k++) {
		size_t n = 0, wn = 0;

		for (size_t t = 0; t < sizeof(toks) / sizeof(toks[0]); t++) {
			for (int i = 0; i < k; i++)
				want[wn++] = in[n++] = wsch[(i + t + (size_t)k) % 4];
			n += (size_t)sprintf(in + n, "%s", toks[t]);
			/* the card by the detector, card's value by the path */
			wn += (size_t)sprintf(want + wn, "%s", t == 6 || t == 11 ? "\"****\"" : toks[t]);
		}
		for (int i = 0; i < k; i++)
			want[wn++] = in[n++] = wsch[i % 4];
		in[n] = want[wn] = '\0';
		o = mj(m, in, n, &rc, NULL);
		CHECK(rc == 0 && o && strcmp(o, want) == 0);
		free(o);
		/* a control byte at each place of a run after the first ':' */
		for (int at = 0; at <= k; at++) {
			static const char ctl[] = "\v\f\x01";

			for (int c = 0; c < 3; c++) {
				const char *colon = strchr(in, ':');
				size_t pos = (size_t)(colon - in) + 1 + (size_t)at;

				memcpy(bad, in, pos);
				bad[pos] = ctl[c];
				memcpy(bad + pos + 1, in + pos, n - pos);
				o = mj(m, bad, n + 1, &rc, NULL);
				CHECK(rc == -EINVAL && !o);
				free(o);
			}
		}
	}
	mask_free(m);
}

int main(void)
{
	RUN(test_min_lengths);
	RUN(test_escapes);
	RUN(test_word_scan_offsets);
	RUN(test_differential);
	RUN(test_paths_nested);
	RUN(test_key_filter);
	RUN(test_report_cache);
	RUN(test_huge_strings);
	RUN(test_scratch_growth);
	RUN(test_short_runs);
	RUN(test_dup_filter);
	RUN(test_ws_runs);
	UNIT_DONE("mask_fast");
}
