/* SPDX-License-Identifier: Apache-2.0 */
/*
 * audit_json_dump() must write exactly what
 * json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER) writes: the audit hash
 * chain covers these bytes. Compared over fixed edge cases and many
 * generated trees (strings with escapes, control characters, every UTF-8
 * length, invalid UTF-8, keys with NUL bytes, integer extremes, reals,
 * nesting), and the refusals must agree too.
 */
#include <float.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "unit.h"
#include "audit.h"
#include "audit_json.h"
#include "agentgate_abi.h"   /* AG_COMM_LEN */

#define FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER)

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* json_dumps's text with U+0085, U+2028 and U+2029 escaped, as the audit
 * writer writes them (one event, one line, for every reader). */
static char *escape_seps(char *ref)
{
	size_t n = ref ? strlen(ref) : 0, o = 0;
	char *out;

	if (!ref || !(out = malloc(3 * n + 1)))
		return ref;
	for (size_t i = 0; i < n; i++) {
		const unsigned char *c = (const unsigned char *)ref + i;

		if (i + 1 < n && c[0] == 0xc2 && c[1] == 0x85) {
			memcpy(out + o, "\\u0085", 6), o += 6, i += 1;
		} else if (i + 2 < n && c[0] == 0xe2 && c[1] == 0x80 && (c[2] == 0xa8 || c[2] == 0xa9)) {
			memcpy(out + o, c[2] == 0xa8 ? "\\u2028" : "\\u2029", 6), o += 6, i += 2;
		} else {
			out[o++] = ref[i];
		}
	}
	out[o] = 0;
	free(ref);
	return out;
}

/* Both serialisers on v; true when they agree (bytes, or both refuse). */
static bool same(const json_t *v)
{
	char *ref = escape_seps(json_dumps(v, FLAGS));
	struct audit_buf b = { 0 };
	int rc = audit_json_dump(v, &b);
	bool ok = ref ? rc == 0 && b.len == strlen(ref) && memcmp(b.p, ref, b.len) == 0 &&
			b.p[b.len] == 0
		      : rc == -1 && b.len == 0;

	if (!ok)
		fprintf(stderr, "  mismatch:\n    json_dumps: %s\n    audit_json: %s (rc %d)\n",
			ref ? ref : "(refused)", rc ? "(refused)" : b.p, rc);
	free(ref);
	audit_buf_free(&b);
	return ok;
}

/* Line separators in an agent's text (a path, a SQL identifier) are
 * written escaped: one event stays one line for every reader (review,
 * stop 26: splitlines() made four events of one). */
static void test_line_separators(void)
{
	const char *raw = "a\xe2\x80\xa8\"}{\"class_uid\":4001\xc2\x85z\xe2\x80\xa9";
	json_t *v = json_pack("{s:s}", "message", raw), *back;
	struct audit_buf b = { 0 };

	CHECK(v && audit_json_dump(v, &b) == 0);
	CHECK(b.p && !strstr(b.p, "\xe2\x80\xa8") && !strstr(b.p, "\xe2\x80\xa9") && !strstr(b.p, "\xc2\x85"));
	CHECK(b.p && strstr(b.p, "\\u2028") && strstr(b.p, "\\u2029") && strstr(b.p, "\\u0085"));
	back = b.p ? json_loads(b.p, 0, NULL) : NULL;
	CHECK(back && strcmp(json_string_value(json_object_get(back, "message")), raw) == 0);
	json_decref(back);
	json_decref(v);
	audit_buf_free(&b);
}

static void test_fixed(void)
{
	json_t *v = json_pack("{s:s, s:i, s:I, s:I, s:b, s:b, s:n, s:[], s:{}, s:[i, [s, {}], []]}",
			      "a", "plain", "i", 0, "max", (json_int_t)LLONG_MAX, "min",
			      (json_int_t)LLONG_MIN, "t", 1, "f", 0, "z", "ea", "eo", "nest",
			      -1, "x", "y");

	CHECK(same(v));
	json_decref(v);
	v = json_array();
	CHECK(same(v));   /* top-level empty array */
	json_decref(v);
	v = json_object();
	CHECK(same(v));
	json_object_set_new(v, "s", json_string("quote \" backslash \\ slash / tab\t nl\n cr\r "
						"bs\b ff\f del\x7f bell\x07 esc\x1b"));
	json_object_set_new(v, "u", json_string("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 "
						"\xef\xbf\xbf \xf4\x8f\xbf\xbf"));
	json_object_set_new(v, "nul", json_stringn("a\0b", 3));
	json_object_setn_new(v, "k\0\"ey\x01", 6, json_integer(7));
	json_object_set_new(v, "", json_string(""));
	CHECK(same(v));
	json_decref(v);
}

static void test_reals(void)
{
	static const double r[] = { 0.0, -0.0, 1.0, -1.0, 0.1, 1.5, 100.0, 1e16, 1e17, 1e-5,
				    1e-7, 123456789.125, 1e300, -1e-300, DBL_MAX, DBL_MIN,
				    5e-324, 3.141592653589793, 2.0 / 3.0, 1e21, 12345678901234567.0 };
	json_t *a = json_array();

	for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++)
		json_array_append_new(a, json_real(r[i]));
	for (int i = 0; i < 500; i++) {
		uint64_t bits = rnd();
		double d;

		memcpy(&d, &bits, sizeof(d));
		if (isfinite(d))
			json_array_append_new(a, json_real(d));
	}
	CHECK(same(a));
	json_decref(a);
}

/* Refused by both: invalid UTF-8 that json_string_nocheck lets in. */
static void test_invalid_utf8(void)
{
	unsigned long before = audit_json_fallbacks();

	static const char *bad[] = { "\x80", "\xc0\xaf", "\xc1\xbf", "\xe0\x80\xaf",
				     "\xed\xa0\x80" /* surrogate */, "\xf4\x90\x80\x80",
				     "\xf5\x80\x80\x80", "\xff", "ab\xc3", "\xe2\x82",
				     "\xc3\x28", "\xf0\x9f\x98" };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *v = json_pack("{s:i}", "x", 1);

		json_object_set_new(v, "s", json_string_nocheck(bad[i]));
		CHECK(same(v));
		json_decref(v);
		v = json_object();
		json_object_set_new_nocheck(v, bad[i], json_true());
		CHECK(same(v));
		json_decref(v);
	}
	CHECK(audit_json_fallbacks() == before + 2 * sizeof(bad) / sizeof(bad[0]));
}

static void rand_bytes(char *s, size_t n)
{
	static const char *pieces[] = { "\"", "\\", "/", "\n", "\t", "\x01", "\x1f", "\x7f",
					"\xc3\xa9", "\xe2\x80\xa8", "\xf0\x9f\x92\xa9", "\xef\xbb\xbf",
					"\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xf0\x90\x80\x80" };
	size_t i = 0;

	while (i < n) {
		uint64_t r = rnd();

		if (r % 4) {
			s[i++] = (r >> 8) % 2 ? 'a' + (r >> 16) % 26 : ' ' + (r >> 16) % 95;
			continue;
		}
		const char *p = pieces[(r >> 8) % (sizeof(pieces) / sizeof(pieces[0]))];
		size_t l = strlen(p);

		if (i + l > n)
			break;
		memcpy(s + i, p, l);
		i += l;
	}
	s[i] = 0;
}

static json_t *gen(int depth)
{
	char s[200];
	uint64_t r = rnd();
	int kind = depth >= 5 ? r % 6 : r % 9;

	switch (kind) {
	case 0: return json_null();
	case 1: return json_boolean(r & 64);
	case 2: {
		static const json_int_t edge[] = { 0, 1, -1, 9, 10, -10, 99, 100, INT_MAX,
						   (json_int_t)INT_MAX + 1, INT_MIN, LLONG_MAX,
						   LLONG_MIN, LLONG_MIN + 1, 1000000000000000000ll };
		return json_integer(r & 128 ? edge[(r >> 8) % 15] : (json_int_t)rnd());
	}
	case 3: {
		double d = (double)(int64_t)rnd() / (double)(1ull << (r % 60));

		return json_real(d);
	}
	case 4:
	case 5:
		rand_bytes(s, rnd() % 120);
		return json_string(s);
	case 6:
	case 7: {
		json_t *o = json_object();
		int n = rnd() % 8;

		for (int i = 0; i < n; i++) {
			rand_bytes(s, rnd() % 24);
			json_object_set_new(o, s, gen(depth + 1));
		}
		return o;
	}
	default: {
		json_t *a = json_array();
		int n = rnd() % 6;

		for (int i = 0; i < n; i++)
			json_array_append_new(a, gen(depth + 1));
		return a;
	}
	}
}

static void test_generated(void)
{
	unsigned long before = audit_json_fallbacks();
	int bad = 0;

	for (int i = 0; i < 5000; i++) {
		json_t *v = json_object();
		int n = 1 + rnd() % 10;

		for (int k = 0; k < n; k++) {
			char key[40];

			rand_bytes(key, rnd() % 16);
			json_object_set_new(v, key, gen(0));
		}
		if (i % 3 == 0)   /* replace a key in place: its position must stay */
			json_object_set_new(v, json_object_iter_key(json_object_iter(v)),
					    json_string("replaced"));
		if (!same(v) && ++bad > 5)
			break;
		json_decref(v);
	}
	CHECK(bad == 0);
	CHECK(audit_json_fallbacks() == before);   /* all valid: none left the fast path */
}

/* Every special byte at every offset of short strings: the fast path
 * looks at 8 bytes at a time, its edges must not hide one. */
static void test_offsets(void)
{
	static const char *special[] = { "\"", "\\", "\n", "\x01", "\x1f", "\x7f", " ", "!",
					 "#", "[", "]", "\xc3\xa9", "\xe2\x82\xac",
					 "\xf0\x9f\x98\x80", "\xff" };
	int bad = 0;

	for (size_t k = 0; k < sizeof(special) / sizeof(special[0]); k++)
		for (int len = 0; len < 34; len++)
			for (int at = 0; at <= len; at++) {
				char s[64];
				json_t *v = json_object();
				size_t l = strlen(special[k]);

				/* at x's, the special byte(s), then len - at x's */
				memset(s, 'x', sizeof(s));
				memcpy(s + at, special[k], l);
				s[len + l] = 0;
				json_object_set_new(v, "k", json_string_nocheck(s));
				bad += !same(v);
				json_decref(v);
			}
	CHECK(bad == 0);
}

/* A reused buffer appends, and a refusal leaves what was there. */
static void test_append(void)
{
	struct audit_buf b = { 0 };
	json_t *v = json_pack("{s:s}", "a", "b"), *w = json_object();

	json_object_set_new(w, "bad", json_string_nocheck("\xff"));
	CHECK(audit_json_dump(v, &b) == 0);
	CHECK(audit_json_dump(v, &b) == 0);
	CHECK_STR(b.p, "{\"a\":\"b\"}{\"a\":\"b\"}");
	CHECK(audit_json_dump(w, &b) == -1);
	CHECK(b.len == 18);
	CHECK_STR(b.p, "{\"a\":\"b\"}{\"a\":\"b\"}");
	b.len = 0;
	json_t *s = json_string("x");
	CHECK(audit_json_dump(s, &b) == -1);   /* not an object or array: json_dumps refuses */
	CHECK(json_dumps(s, FLAGS) == NULL);
	json_decref(s);
	json_decref(v);
	json_decref(w);
	audit_buf_free(&b);
}

/* A string large enough to grow the buffer several times. */
static void test_large(void)
{
	size_t n = 1 << 20;
	char *s = malloc(n + 1);
	json_t *v;

	for (size_t i = 0; i < n; i++)
		s[i] = i % 97 == 0 ? '\x02' : 'a' + i % 26;
	s[n] = 0;
	v = json_pack("{s:s}", "big", s);
	CHECK(same(v));
	json_decref(v);
	free(s);
}

/* The member writer: what it writes parses back to the values given. */
static json_t *writer_parse(struct audit_obj *o)
{
	struct audit_buf b = { 0 };
	json_error_t err;
	json_t *v;

	audit_buf_put(&b, "{", 1);
	audit_buf_put(&b, o->b.p, o->b.len);
	audit_buf_put(&b, "}", 1);
	v = json_loadb(b.p, b.len, JSON_ALLOW_NUL, &err);
	if (!v)
		fprintf(stderr, "  writer output does not parse (%s): %.*s\n", err.text, (int)b.len, b.p);
	audit_buf_free(&b);
	return v;
}

static void test_writer(void)
{
	struct audit_obj o = { 0 };
	json_t *v, *want;
	char ctl[40];

	for (int i = 0; i < 32; i++)
		ctl[i] = (char)(i + 1 == 32 ? '"' : i + 1);
	ctl[32] = 0;
	aobj_reset(&o);
	aobj_int(&o, "a", -9223372036854775807ll - 1);
	aobj_str(&o, "s", "q\"b\\s/ \xc3\xa9 \xf0\x9f\x98\x80");
	aobj_str(&o, "ctl", ctl);
	aobj_str(&o, "skipped", NULL);   /* NULL writes nothing */
	aobj_open(&o, "o");
	aobj_bool(&o, "t", true);
	aobj_open(&o, "in");
	aobj_close(&o);
	aobj_bool(&o, "f", false);
	aobj_close(&o);
	aobj_strn(&o, "n", "ab\0cd", 5);   /* an embedded NUL is escaped */
	aobj_raw(&o, "r", "[1,2]", 5);
	CHECK(!o.bad && o.depth == 0);
	v = writer_parse(&o);
	want = json_pack("{s:I, s:s, s:s, s:{s:b, s:{}, s:b}, s:s%, s:[i,i]}", "a", (json_int_t)INT64_MIN,
			 "s", "q\"b\\s/ \xc3\xa9 \xf0\x9f\x98\x80", "ctl", ctl, "o", "t", 1, "in", "f", 0,
			 "n", "ab\0cd", (size_t)5, "r", 1, 2);
	CHECK(v && want && json_equal(v, want));
	/* the same escaping as json_dumps for a valid string */
	json_t *one = json_pack("{s:s}", "s", ctl);
	char *ref = json_dumps(one, FLAGS);
	aobj_reset(&o);
	aobj_str(&o, "s", ctl);
	CHECK(ref && o.b.len + 2 == strlen(ref) && memcmp(ref + 1, o.b.p, o.b.len) == 0);
	free(ref);
	json_decref(one);
	json_decref(v);
	json_decref(want);

	/* invalid UTF-8 (a lone continuation byte, an overlong '/', a
	 * surrogate, a truncated sequence) becomes U+FFFD, a byte at a time;
	 * the event is kept and the JSON stays valid */
	aobj_reset(&o);
	aobj_str(&o, "bad", "a\x80" "b\xc0\xaf" "c\xed\xa0\x80" "d\xe2\x82");
	CHECK(!o.bad);
	v = writer_parse(&o);
	const char *got = json_string_value(json_object_get(v, "bad"));
	CHECK(got && strcmp(got, "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd" "c"
			     "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" "d\xef\xbf\xbd\xef\xbf\xbd") == 0);
	json_decref(v);

	/* nesting is bounded; closing what is not open is an error; both
	 * mark the event bad (not recorded) instead of writing broken JSON */
	aobj_reset(&o);
	for (int i = 0; i < AOBJ_MAX_DEPTH + 2; i++)
		aobj_open(&o, "d");
	CHECK(o.bad);
	aobj_reset(&o);
	CHECK(!o.bad && o.b.len == 0);
	aobj_close(&o);
	CHECK(o.bad);
	/* once bad, nothing more is written */
	size_t len = o.b.len;
	aobj_str(&o, "x", "y");
	CHECK(o.b.len == len);
	aobj_free(&o);
}

/* The writer's caches (event header, agent members, verdict) write exactly the
 * bytes the members write uncached: w1 is the thread's writer (cached);
 * w2, begun while w1 is in use, is a heap writer (never cached). Agents
 * that differ in one input each, NULL against "", and repeats (hits)
 * interleaved with misses that evict slots. */
static void test_writer_cache(void)
{
	const char *names[] = { "a", "b", "", NULL, "a\"q" };
	const char *subs[] = { NULL, "", "s1", "s2" };
	const char *rules[] = { NULL, "role 'r' rule 1 (line 3)", "" };
	const char *reasons[] = { NULL, "denied: \"x\"", "" };
	int mismatches = 0, n = 0;

	for (int round = 0; round < 3; round++)
		for (int i = 0; i < 5 * 4 * 2 * 3; i++) {
			struct audit_agent a = {
				.name = names[i % 5], .cgroup = i % 2 ? "/agentgate/x" : "/agentgate/y",
				.pid = 100 + i % 3, .tid = 7, .uid = (uint32_t)i % 2, .comm = "psql\x01",
				.cgroup_id = 42, .iss = i % 3 ? "https://idp" : NULL,
				.sub = subs[(i / 5) % 4], .verified = (i / 20) % 2,
			};
			const char *act = i % 2 ? "Query" : "Open";
			struct audit_w *w1 = audit_begin(i % 2 ? 6005 : 4001, 1 + i % 2, act);
			struct audit_w *w2 = audit_begin(i % 2 ? 6005 : 4001, 1 + i % 2, act);

			CHECK(!w1->heap && w2->heap);
			audit_w_agent(w1, &a);
			audit_w_agent(w2, &a);
			audit_w_verdict(w1, i % 2, (i / 2) % 2, rules[i % 3], reasons[(i / 3) % 3]);
			audit_w_verdict(w2, i % 2, (i / 2) % 2, rules[i % 3], reasons[(i / 3) % 3]);
			aobj_str(&w1->top, "after", "x");
			aobj_str(&w2->top, "after", "x");
			CHECK(!w1->top.bad && !w1->um.bad && !w2->top.bad && !w2->um.bad);
			mismatches += w1->top.b.len != w2->top.b.len ||
				      memcmp(w1->top.b.p, w2->top.b.p, w1->top.b.len) ||
				      w1->um.b.len != w2->um.b.len ||
				      memcmp(w1->um.b.p, w2->um.b.p, w1->um.b.len);
			n++;
			audit_discard(w2);
			audit_discard(w1);
		}
	CHECK(n == 360 && mismatches == 0);
	/* the header of a long activity name is not cached, and still written */
	struct audit_w *w = audit_begin(4002, 99, "An activity name longer than sixty-four bytes, so never cached");
	CHECK(!w->top.bad && memmem(w->top.b.p, w->top.b.len, "sixty-four", 10));
	audit_discard(w);
}

/* The agent and verdict caches' hit test compares the inputs against the
 * stored key where it lies. Each variant below differs from the base in one
 * input only, some by a prefix ("a" against "ab", a comm of AG_COMM_LEN
 * bytes without a NUL against its first 15): written right after the base
 * (cached), it must miss, and written again it must hit; every event is
 * compared with an uncached writer's. */
static int writer_pair(const struct audit_agent *a, bool allowed, bool would, const char *rule,
		       const char *reason)
{
	struct audit_w *w1 = audit_begin(6005, 2, "Query");
	struct audit_w *w2 = audit_begin(6005, 2, "Query");
	int bad;

	CHECK(!w1->heap && w2->heap);
	audit_w_agent(w1, a);
	audit_w_agent(w2, a);
	audit_w_verdict(w1, allowed, would, rule, reason);
	audit_w_verdict(w2, allowed, would, rule, reason);
	CHECK(!w1->top.bad && !w1->um.bad && !w2->top.bad && !w2->um.bad);
	bad = w1->top.b.len != w2->top.b.len || memcmp(w1->top.b.p, w2->top.b.p, w1->top.b.len) ||
	      w1->um.b.len != w2->um.b.len || memcmp(w1->um.b.p, w2->um.b.p, w1->um.b.len);
	audit_discard(w2);
	audit_discard(w1);
	return bad;
}

static void test_writer_cache_fields(void)
{
	static const char full[AG_COMM_LEN] = "0123456789abcdef";   /* no NUL */
	const struct audit_agent base = {
		.name = "agent", .cgroup = "/agentgate/x", .pid = 100, .tid = 7, .uid = 0,
		.comm = "0123456789abcde", .cgroup_id = 42, .iss = "https://idp", .sub = "s",
		.verified = true, .policy_hash = "ab", .policy_path = "/p.yaml",
	};
	struct audit_agent v[20];
	int nv = 0, mismatches = 0, n = 0;

#define VARY(field, value) do { v[nv] = base; v[nv].field = value; nv++; } while (0)
	VARY(name, "agen"); VARY(name, "agent2"); VARY(name, NULL); VARY(cgroup, "/agentgate/x/");
	VARY(pid, 101); VARY(tid, 8); VARY(uid, 1); VARY(comm, full); VARY(comm, NULL); VARY(comm, "");
	VARY(cgroup_id, 42 + (1ull << 40)); VARY(iss, NULL); VARY(sub, "s "); VARY(verified, false);
	VARY(policy_hash, "a"); VARY(policy_hash, "abc"); VARY(policy_hash, NULL);
	VARY(policy_path, "/p.yam"); VARY(policy_path, NULL);
#undef VARY
	for (int i = 0; i < nv; i++)
		for (int k = 0; k < 4; k++) {   /* base, variant, variant again, base */
			const struct audit_agent *a = k == 1 || k == 2 ? &v[i] : &base;

			mismatches += writer_pair(a, true, false, "rule 1", "no");
			n++;
		}
	/* the verdict's inputs, the same way */
	const char *rules[] = { "rule 1", "rule 12", "rule ", NULL, "" };
	const char *reasons[] = { "no", "no ", "n", NULL, "" };

	for (int i = 0; i < 5 * 5 * 4; i++)
		for (int k = 0; k < 3; k++) {   /* base, variant, variant again */
			bool var = k > 0;

			mismatches += writer_pair(&base, var ? i % 2 : true, var ? (i / 2) % 2 : false,
						  var ? rules[(i / 4) % 5] : "rule 1",
						  var ? reasons[(i / 20) % 5] : "no");
			n++;
		}
	CHECK(n == nv * 4 + 300 && mismatches == 0);
}

int main(void)
{
	RUN(test_fixed);
	RUN(test_line_separators);
	RUN(test_reals);
	RUN(test_invalid_utf8);
	RUN(test_generated);
	RUN(test_offsets);
	RUN(test_append);
	RUN(test_large);
	RUN(test_writer);
	RUN(test_writer_cache);
	RUN(test_writer_cache_fields);
	UNIT_DONE("audit_json");
}
