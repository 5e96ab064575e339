/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Written by hand because no library call fits: json_dumps is the reference
 * (same escapes, same number formats, keys in insertion order), and
 * tests/unit/test_audit_json.c compares the two over generated trees. One
 * difference: U+0085, U+2028 and U+2029 are written escaped.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "audit_json.h"
#include "util.h"

#define MAX_DEPTH 64   /* events nest 4 deep; deeper is a loop json_dumps reports */

static _Atomic unsigned long fallbacks;

unsigned long audit_json_fallbacks(void)
{
	return fallbacks;
}

int audit_buf_grow(struct audit_buf *b, size_t n)
{
	size_t cap = b->cap ? b->cap : 4096;
	char *p;

	while (cap - b->len <= n) {
		if (cap > SIZE_MAX / 2)
			return -1;
		cap *= 2;
	}
	if (!(p = realloc(b->p, cap)))
		return -1;
	b->p = p;
	b->cap = cap;
	return 0;
}

void audit_buf_free(struct audit_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

/* Byte classes: 0 copied as is, 1 escaped, 2 the lead of a UTF-8 sequence
 * (2, 3 or 4 bytes: validated), 5 never valid in UTF-8. */
enum { C_PLAIN, C_ESC, C_LEAD2, C_LEAD3, C_LEAD4, C_BAD };

static const uint8_t cls[256] = {
	[0 ... 0x1f] = C_ESC, ['"'] = C_ESC, ['\\'] = C_ESC,
	[0x80 ... 0xc1] = C_BAD, [0xc2 ... 0xdf] = C_LEAD2, [0xe0 ... 0xef] = C_LEAD3,
	[0xf0 ... 0xf4] = C_LEAD4, [0xf5 ... 0xff] = C_BAD,
};

/* Length of the valid UTF-8 sequence at s (lead class k), 0 if invalid:
 * overlong forms, surrogates and code points past U+10FFFF are refused,
 * as jansson refuses them. */
static size_t utf8_seq(const uint8_t *s, size_t avail, int k)
{
	size_t n = k == C_LEAD2 ? 2 : k == C_LEAD3 ? 3 : 4;
	uint32_t cp = s[0] & (n == 2 ? 0x1f : n == 3 ? 0x0f : 0x07);

	if (n > avail)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || (n == 2 && cp < 0x80) ||
	    (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000))
		return 0;
	return n;
}

static const char hexd[] = "0123456789ABCDEF";

/* true when none of the 8 bytes in x needs a look (a control character,
 * '"', '\\', or a byte >= 0x80). Per term, the lowest such byte sets its
 * own top bit without a borrow from below; bytes that need nothing set
 * none, so the test is exact. */
static inline bool word_plain(const uint8_t *s)
{
	const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
	uint64_t x;

	memcpy(&x, s, 8);
	return !(((x - ones * 0x20) | ((x ^ (ones * '"')) - ones) | ((x ^ (ones * '\\')) - ones) |
		  x) & highs);
}

/* lossy: invalid UTF-8 is written as U+FFFD, a byte at a time (the
 * writer below: a value an agent chose must not cost the event); otherwise
 * it fails the string, as json_dumps does. */
static int dump_string_x(const char *str, size_t len, struct audit_buf *b, bool lossy)
{
	const uint8_t *s = (const uint8_t *)str, *end = s + len, *run;
	char *o;

	/* worst case: every byte a control character, \u00XX */
	if (len > (SIZE_MAX - 2) / 6 || audit_buf_reserve(b, 6 * len + 2))
		return -1;
	o = b->p + b->len;
	*o++ = '"';
	while (s < end) {
		run = s;
		while (end - s >= 8 && word_plain(s))
			s += 8;
		while (s < end && cls[*s] == C_PLAIN)
			s++;
		memcpy(o, run, s - run);
		o += s - run;
		if (s == end)
			break;
		int k = cls[*s];
		if (k == C_ESC) {
			*o++ = '\\';
			switch (*s) {
			case '"': *o++ = '"'; break;
			case '\\': *o++ = '\\'; break;
			case '\b': *o++ = 'b'; break;
			case '\f': *o++ = 'f'; break;
			case '\n': *o++ = 'n'; break;
			case '\r': *o++ = 'r'; break;
			case '\t': *o++ = 't'; break;
			default:
				memcpy(o, "u00", 3);
				o[3] = hexd[*s >> 4];
				o[4] = hexd[*s & 15];
				o += 5;
			}
			s++;
			continue;
		}
		size_t n = k == C_BAD ? 0 : utf8_seq(s, end - s, k);
		if (!n && lossy) {   /* "\ufffd" is no longer than the 6 bytes reserved */
			memcpy(o, "\\ufffd", 6);
			o += 6;
			s++;
			continue;
		}
		if (!n)
			return -1;   /* json_dumps refuses invalid UTF-8 as well */
		/* U+0085, U+2028 and U+2029 end a line for some readers (Python's
		 * splitlines, JavaScript before ES2019): written escaped, one
		 * event stays one line whatever splits it (review, stop 26;
		 * json_dumps writes them raw). At most 6 bytes for 2 or 3. */
		if ((n == 2 && s[0] == 0xc2 && s[1] == 0x85) ||
		    (n == 3 && s[0] == 0xe2 && s[1] == 0x80 && (s[2] == 0xa8 || s[2] == 0xa9))) {
			memcpy(o, n == 2 ? "\\u0085" : s[2] == 0xa8 ? "\\u2028" : "\\u2029", 6);
			o += 6;
			s += n;
			continue;
		}
		memcpy(o, s, n);
		o += n;
		s += n;
	}
	*o++ = '"';
	b->len = o - b->p;
	return 0;
}

static int dump_string(const char *str, size_t len, struct audit_buf *b)
{
	return dump_string_x(str, len, b, false);
}

static int dump_int(json_int_t v, struct audit_buf *b)
{
	char tmp[24], *e = tmp + sizeof(tmp);
	char *p = u64_dec(e, v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v);

	if (v < 0)
		*--p = '-';
	if (audit_buf_reserve(b, e - p))
		return -1;
	memcpy(b->p + b->len, p, e - p);
	b->len += e - p;
	return 0;
}

/* Reals are rare in events and jansson's formatting depends on its build
 * (printf %.17g with fix-ups, or dtoa): let jansson format them. */
static int dump_real(const json_t *v, struct audit_buf *b)
{
	char tmp[128];
	size_t n = json_dumpb(v, tmp, sizeof(tmp), JSON_COMPACT | JSON_ENCODE_ANY);

	if (!n || n > sizeof(tmp) || audit_buf_reserve(b, n))
		return -1;
	memcpy(b->p + b->len, tmp, n);
	b->len += n;
	return 0;
}

static int dump(const json_t *v, struct audit_buf *b, int depth)
{
	if (!v || depth > MAX_DEPTH)
		return -1;
	switch (json_typeof(v)) {
	case JSON_NULL:
		return audit_buf_put(b, "null", 4);
	case JSON_TRUE:
		return audit_buf_put(b, "true", 4);
	case JSON_FALSE:
		return audit_buf_put(b, "false", 5);
	case JSON_INTEGER:
		return dump_int(json_integer_value(v), b);
	case JSON_REAL:
		return dump_real(v, b);
	case JSON_STRING:
		return dump_string(json_string_value(v), json_string_length(v), b);
	case JSON_ARRAY: {
		size_t n = json_array_size(v);

		if (audit_buf_put(b, "[", 1))
			return -1;
		for (size_t i = 0; i < n; i++)
			if ((i && audit_buf_put(b, ",", 1)) || dump(json_array_get(v, i), b, depth + 1))
				return -1;
		return audit_buf_put(b, "]", 1);
	}
	case JSON_OBJECT: {
		bool first = true;

		if (audit_buf_put(b, "{", 1))
			return -1;
		/* jansson keeps insertion order; json_dumps walks the same iterator */
		for (void *it = json_object_iter((json_t *)v); it;
		     it = json_object_iter_next((json_t *)v, it), first = false)
			if ((!first && audit_buf_put(b, ",", 1)) ||
			    dump_string(json_object_iter_key(it), json_object_iter_key_len(it), b) ||
			    audit_buf_put(b, ":", 1) || dump(json_object_iter_value(it), b, depth + 1))
				return -1;
		return audit_buf_put(b, "}", 1);
	}
	}
	return -1;
}

int audit_json_dump(const json_t *v, struct audit_buf *b)
{
	size_t start = b->len;
	char *ref;
	int err;

	if ((json_is_object(v) || json_is_array(v)) && !dump(v, b, 0) && !audit_buf_reserve(b, 0)) {
		b->p[b->len] = 0;
		return 0;
	}
	/* Invalid UTF-8 (only json_*_nocheck lets it in), a loop, or no memory:
	 * whatever json_dumps makes of it, byte for byte. It refuses invalid
	 * UTF-8 in a value, but writes a key's invalid UTF-8 as a lone '"'. */
	b->len = start;
	fallbacks++;
	ref = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
	err = ref ? audit_buf_put(b, ref, strlen(ref)) : -1;
	free(ref);
	if (b->p)
		b->p[b->len] = 0;
	return err;
}

/* ---- the member-by-member writer ------------------------------------------ */

void aobj_reset(struct audit_obj *o)
{
	o->b.len = 0;
	o->depth = 0;
	o->has = 0;
	o->bad = false;
}

void aobj_free(struct audit_obj *o)
{
	audit_buf_free(&o->b);
}

/* ',' when the open object already has a member, then "key": */
static void member(struct audit_obj *o, const char *key, size_t kl)
{
	uint32_t bit = 1u << o->depth;

	if (o->bad || audit_buf_reserve(&o->b, kl + 4)) {
		o->bad = true;
		return;
	}
	char *w = o->b.p + o->b.len;
	if (o->has & bit)
		*w++ = ',';
	*w++ = '"';
	memcpy(w, key, kl);   /* keys are constant ASCII (callers' literals) */
	w += kl;
	*w++ = '"';
	*w++ = ':';
	o->b.len = w - o->b.p;
	o->has |= bit;
}

void aobj_open_k(struct audit_obj *o, const char *key, size_t kl)
{
	member(o, key, kl);
	if (o->bad || o->depth + 1 >= AOBJ_MAX_DEPTH || audit_buf_put(&o->b, "{", 1)) {
		o->bad = true;
		return;
	}
	o->depth++;
	o->has &= ~(1u << o->depth);
}

void aobj_close(struct audit_obj *o)
{
	if (o->bad || !o->depth || audit_buf_put(&o->b, "}", 1)) {
		o->bad = true;
		return;
	}
	o->depth--;
}

void aobj_strn_k(struct audit_obj *o, const char *key, size_t kl, const char *v, size_t len)
{
	if (!v)
		return;
	member(o, key, kl);
	if (!o->bad && dump_string_x(v, len, &o->b, true))
		o->bad = true;
}

void aobj_str_k(struct audit_obj *o, const char *key, size_t kl, const char *v)
{
	if (v)
		aobj_strn_k(o, key, kl, v, strlen(v));
}

void aobj_int_k(struct audit_obj *o, const char *key, size_t kl, long long v)
{
	member(o, key, kl);
	if (!o->bad && dump_int(v, &o->b))
		o->bad = true;
}

void aobj_bool_k(struct audit_obj *o, const char *key, size_t kl, bool v)
{
	member(o, key, kl);
	if (!o->bad && audit_buf_put(&o->b, v ? "true" : "false", v ? 4 : 5))
		o->bad = true;
}

void aobj_raw_k(struct audit_obj *o, const char *key, size_t kl, const char *json, size_t len)
{
	member(o, key, kl);
	if (!o->bad && audit_buf_put(&o->b, json, len))
		o->bad = true;
}

void aobj_members(struct audit_obj *o, const char *members, size_t len)
{
	if (!len || o->bad)
		return;
	if (((o->has >> o->depth) & 1u) && audit_buf_put(&o->b, ",", 1)) {
		o->bad = true;
		return;
	}
	if (audit_buf_put(&o->b, members, len))
		o->bad = true;
	o->has |= 1u << o->depth;
}

int audit_buf_str(struct audit_buf *b, const char *s, size_t n)
{
	return dump_string_x(s, n, b, true);
}

int audit_buf_int(struct audit_buf *b, long long v)
{
	return dump_int(v, b);
}
