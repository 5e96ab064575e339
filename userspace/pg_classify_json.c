// SPDX-License-Identifier: Apache-2.0
/*
 * pg_classify_json: a token walker over libpg_query's JSON parse tree.
 *
 * Why by hand: the notes (§0.7, §4.4) measured jansson's DOM at ~70 us per
 * statement on top of the 20 us parse, and yajl's SAX pass at ~16 us; the
 * protobuf output costs 72 us before unpacking. This tokenizer makes one
 * pass over text libpg_query itself wrote (so: well-formed, no whitespace,
 * keys without escapes), into one array of tokens that records each
 * subtree's end, so the classifier can index fields and skip subtrees
 * without building nodes. It still checks everything it relies on and
 * fails (returns -EINVAL) on anything else; it never trusts the input to
 * be well-formed, because a bug here must deny, not crash.
 */
#include "pg_classify_json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int push(struct pgj *j, uint8_t type, uint32_t start)
{
	struct pgj_tok *t;

	if (j->ntok == j->cap) {
		uint32_t cap = j->cap ? j->cap * 2 : 256;

		if (cap > PGJ_MAX_TOKENS)
			return -E2BIG;
		t = realloc(j->t, cap * sizeof(*t));
		if (!t)
			return -ENOMEM;
		j->t = t;
		j->cap = cap;
	}
	t = &j->t[j->ntok];
	t->type = type;
	t->start = start;
	t->len = 0;
	t->n = 0;
	t->next = 0;
	t->dec = 0;
	return (int)j->ntok++;
}

/* Counts a new member of parent; in an object, members alternate key
 * (a string) and value, so an even count wants a string. */
static bool add_child(struct pgj *j, uint32_t parent, uint8_t type)
{
	struct pgj_tok *p = &j->t[parent];

	if (p->type == PGJ_OBJ && p->n % 2 == 0 && type != PGJ_STR)
		return false;
	p->n++;
	return true;
}

/* A string's end (index of the closing quote), or 0 when unterminated: the
 * first '"' not escaped, i.e. preceded by an even number of backslashes. */
static uint32_t str_end(const char *s, uint32_t len, uint32_t i)
{
	const char *open = s + i + 1, *p = open, *e = s + len;

	while (p < e) {
		const char *q = memchr(p, '"', (size_t)(e - p)), *b;

		if (!q)
			return 0;
		for (b = q; b > open && b[-1] == '\\'; b--)
			;
		if ((q - b) % 2 == 0)
			return (uint32_t)(q - s);
		p = q + 1;
	}
	return 0;
}

int pgj_tokenize(struct pgj *j, const char *s, size_t slen)
{
	uint32_t stack[PGJ_MAX_DEPTH];
	uint32_t depth = 0, len = (uint32_t)slen;
	bool want_value = true;

	if (slen >= UINT32_MAX / 2)
		return -E2BIG;
	/* libpg_query's JSON has a token per 8 bytes or so: reserve once
	 * rather than doubling through every size */
	if (j->cap < slen / 6 && slen / 6 <= PGJ_MAX_TOKENS) {
		struct pgj_tok *t = realloc(j->t, slen / 6 * sizeof(*t));

		if (!t)
			return -ENOMEM;
		j->t = t;
		j->cap = (uint32_t)(slen / 6);
	}
	j->s = s;
	j->ntok = 0;
	for (uint32_t i = 0; i < len; i++) {
		char c = s[i];
		int k;

		switch (c) {
		case '{':
		case '[':
			if (!want_value || depth == PGJ_MAX_DEPTH)
				return depth == PGJ_MAX_DEPTH ? -E2BIG : -EINVAL;
			if (depth && !add_child(j, stack[depth - 1], PGJ_OBJ))
				return -EINVAL;
			if ((k = push(j, c == '{' ? PGJ_OBJ : PGJ_ARR, i)) < 0)
				return k;
			stack[depth++] = (uint32_t)k;
			want_value = true;
			break;
		case '}':
		case ']': {
			struct pgj_tok *t;

			if (!depth)
				return -EINVAL;
			t = &j->t[stack[--depth]];
			if (t->type != (c == '}' ? PGJ_OBJ : PGJ_ARR) || (want_value && t->n))
				return -EINVAL;
			if (t->type == PGJ_OBJ && t->n % 2)
				return -EINVAL;
			t->next = j->ntok;
			want_value = false;
			break;
		}
		case ',':
			/* in an object a comma follows a value: the count is even */
			if (!depth || want_value || (j->t[stack[depth - 1]].type == PGJ_OBJ &&
						     j->t[stack[depth - 1]].n % 2))
				return -EINVAL;
			want_value = true;
			break;
		case ':':
			/* only after a key: the parent object has an odd count */
			if (!depth || j->t[stack[depth - 1]].type != PGJ_OBJ ||
			    j->t[stack[depth - 1]].n % 2 == 0)
				return -EINVAL;
			want_value = true;
			break;
		case '"': {
			uint32_t e = str_end(s, len, i);

			if (!e || !want_value)
				return -EINVAL;
			if (depth && !add_child(j, stack[depth - 1], PGJ_STR))
				return -EINVAL;
			if ((k = push(j, PGJ_STR, i + 1)) < 0)
				return k;
			j->t[k].len = e - i - 1;
			j->t[k].next = j->ntok;
			i = e;
			want_value = false;
			break;
		}
		default: {
			uint32_t e = i;

			if (!want_value)
				return -EINVAL;
			while (e < len && s[e] != ',' && s[e] != '}' && s[e] != ']' && s[e] != ':')
				e++;
			if (depth && !add_child(j, stack[depth - 1], PGJ_PRIM))
				return -EINVAL;
			if ((k = push(j, PGJ_PRIM, i)) < 0)
				return k;
			j->t[k].len = e - i;
			j->t[k].next = j->ntok;
			i = e - 1;
			want_value = false;
			break;
		}
		}
	}
	if (depth || j->ntok == 0)
		return -EINVAL;
	/* room for every string decoded once: never more than the text */
	if (j->arena_cap < slen + j->ntok + 8) {
		char *a = realloc(j->arena, slen + j->ntok + 8);

		if (!a)
			return -ENOMEM;
		j->arena = a;
		j->arena_cap = slen + j->ntok + 8;
	}
	j->arena_used = 0;
	return 0;
}

void pgj_free(struct pgj *j)
{
	free(j->t);
	free(j->arena);
	memset(j, 0, sizeof(*j));
}

int pgj_unwrap(const struct pgj *j, int i, int *body)
{
	const struct pgj_tok *t;
	char c;

	if (i < 0 || j->t[i].type != PGJ_OBJ || j->t[i].n != 2)
		return -1;
	t = &j->t[i + 1];
	if (t->len == 0)
		return -1;
	c = j->s[t->start];
	if (c < 'A' || c > 'Z' || j->t[i + 2].type != PGJ_OBJ)
		return -1;
	*body = i + 2;
	return i + 1;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int hex4(const char *p)
{
	int v = 0;

	for (int k = 0; k < 4; k++) {
		int h = hexval(p[k]);

		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

static size_t put_utf8(char *o, uint32_t cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xC0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xE0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		o[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (char)(0xF0 | (cp >> 18));
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	o[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

/* Decodes the string token's escapes into the arena, once per token. A
 * decoded string is never longer than its escaped form, so an arena of the
 * JSON's length plus one NUL per token always suffices. NULL on a bad
 * escape (or a decoded NUL, which no identifier may hold). */
const char *pgj_str(struct pgj *j, int tok)
{
	struct pgj_tok *t;
	const char *p, *e;
	char *o, *start;

	if (tok < 0 || j->t[tok].type != PGJ_STR)
		return NULL;
	t = &j->t[tok];
	if (t->dec)
		return j->arena + t->dec - 1;
	if (j->arena_used + t->len + 1 > j->arena_cap)
		return NULL;
	start = o = j->arena + j->arena_used;
	p = j->s + t->start;
	e = p + t->len;
	while (p < e) {
		if (*p != '\\') {
			*o++ = *p++;
			continue;
		}
		if (++p >= e)
			return NULL;
		switch (*p++) {
		case '"': *o++ = '"'; break;
		case '\\': *o++ = '\\'; break;
		case '/': *o++ = '/'; break;
		case 'b': *o++ = '\b'; break;
		case 'f': *o++ = '\f'; break;
		case 'n': *o++ = '\n'; break;
		case 'r': *o++ = '\r'; break;
		case 't': *o++ = '\t'; break;
		case 'u': {
			int cp, lo;

			if (e - p < 4 || (cp = hex4(p)) <= 0)
				return NULL;
			p += 4;
			if (cp >= 0xD800 && cp <= 0xDBFF) {
				if (e - p < 6 || p[0] != '\\' || p[1] != 'u' ||
				    (lo = hex4(p + 2)) < 0xDC00 || lo > 0xDFFF)
					return NULL;
				p += 6;
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
			} else if (cp >= 0xDC00 && cp <= 0xDFFF) {
				return NULL;
			}
			/* \uXXXX is 6 bytes, its UTF-8 at most 4: stays in bounds */
			o += put_utf8(o, (uint32_t)cp);
			break;
		}
		default:
			return NULL;
		}
	}
	*o++ = '\0';
	t->dec = (uint32_t)(start - j->arena) + 1;
	j->arena_used = (size_t)(o - j->arena);
	return start;
}

bool pgj_int(const struct pgj *j, int tok, long *out)
{
	long v = 0;
	bool neg = false;
	uint32_t k = 0;

	if (tok < 0 || j->t[tok].type != PGJ_PRIM || j->t[tok].len == 0 || j->t[tok].len > 18)
		return false;
	if (j->s[j->t[tok].start] == '-') {
		neg = true;
		k = 1;
	}
	if (k == j->t[tok].len)
		return false;
	for (; k < j->t[tok].len; k++) {
		char c = j->s[j->t[tok].start + k];

		if (c < '0' || c > '9')
			return false;
		v = v * 10 + (c - '0');
	}
	*out = neg ? -v : v;
	return true;
}
