// SPDX-License-Identifier: Apache-2.0
/*
 * http_scrub — see http_scrub.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "http_scrub.h"

/* Letters, digits and -._: what every percent-encoder leaves as it is and
 * JSON and HTML never escape. Not '~', though RFC 3986 calls it
 * unreserved: PHP urlencode() and Java's URLEncoder write it %7E. */
static bool plain_byte(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
	       c == '.' || c == '_';
}

static bool blank(uint8_t c)
{
	return c == ' ' || c == '\t';
}

int scrub_add(struct scrub *z, const uint8_t *s, size_t len)
{
	struct scrub_secret *x;
	uint8_t *copy;

	/* A field value's leading and trailing blanks are not part of it for
	 * the upstream (RFC 9110 5.5): an echo shows the value without them. */
	while (len && blank(s[0])) {
		s++;
		len--;
	}
	while (len && blank(s[len - 1]))
		len--;
	if (len < SCRUB_MIN_LEN || len > SCRUB_SECRET_MAX)
		return 0;
	for (unsigned i = 0; i < z->n; i++)
		if (z->sec[i].len == len && CRYPTO_memcmp(z->sec[i].s, s, len) == 0)
			return 0;
	if (!(copy = malloc(len)))
		return -ENOMEM;
	memcpy(copy, s, len);
	if (z->n == SCRUB_MAX) {   /* the oldest goes */
		OPENSSL_cleanse(z->sec[0].s, z->sec[0].len);
		free(z->sec[0].s);
		memmove(&z->sec[0], &z->sec[1], (SCRUB_MAX - 1) * sizeof(z->sec[0]));
		z->n--;
	}
	x = &z->sec[z->n++];
	x->s = copy;
	x->len = len;
	for (x->plain = 0; x->plain < len && plain_byte(s[x->plain]); x->plain++)
		;
	return 0;
}

void scrub_clear(struct scrub *z)
{
	for (unsigned i = 0; i < z->n; i++) {
		OPENSSL_cleanse(z->sec[i].s, z->sec[i].len);
		free(z->sec[i].s);
	}
	memset(z, 0, sizeof(*z));
}

size_t scrub_hold(const struct scrub *z)
{
	size_t m = 0;

	for (unsigned i = 0; i < z->n; i++)
		if (z->sec[i].len * SCRUB_ENC_MAX - 1 > m)
			m = z->sec[i].len * SCRUB_ENC_MAX - 1;
	return m;
}

static int hexv(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The HTML character reference at p[0..n) (&amp; &#39; &#x27; ...) for
 * byte w: its length, or 0. Only those of SCRUB_ENC_MAX bytes at most. */
static size_t entity(const uint8_t *p, size_t n, uint8_t w)
{
	static const struct { uint8_t w; const char *e; } named[] = {
		{ '&', "&amp;" }, { '<', "&lt;" }, { '>', "&gt;" }, { '"', "&quot;" }, { '\'', "&apos;" },
	};
	size_t i = 2;
	unsigned v = 0, base = 10;

	if (n < 4)
		return 0;
	if (p[1] != '#') {
		for (size_t k = 0; k < sizeof(named) / sizeof(named[0]); k++) {
			size_t l = strlen(named[k].e);

			if (named[k].w == w && n >= l && memcmp(p, named[k].e, l) == 0)
				return l;
		}
		return 0;
	}
	if ((p[2] | 0x20) == 'x') {
		base = 16;
		i = 3;
	}
	for (size_t d = i; i < n && i < SCRUB_ENC_MAX; i++) {
		int h = hexv(p[i]);

		if (p[i] == ';')
			return i > d && v == w ? i + 1 : 0;
		if (h < 0 || (base == 10 && h > 9))
			return 0;
		v = v * base + (unsigned)h;
	}
	return 0;
}

/* The lengths of the text units at p[0..n) that stand for byte w: as it
 * is (1), %XX (3), %25XX (5), \/ \\ \" \t (2), \u00XX (6), an HTML character
 * reference (4 to 6), '+' for a space (1, form-encoded). Up to 4, into u;
 * how many. */
static unsigned units(const uint8_t *p, size_t n, uint8_t w, size_t u[4])
{
	unsigned k = 0;
	size_t e;

	if (p[0] == w)   /* first: a secret written as it is matches without a branch */
		u[k++] = 1;
	if (p[0] == '%' && n >= 3) {
		int h = hexv(p[1]), l = hexv(p[2]);

		if (h >= 0 && l >= 0 && (h << 4 | l) == w)
			u[k++] = 3;
		else if (h == 2 && l == 5 && n >= 5 && (h = hexv(p[3])) >= 0 && (l = hexv(p[4])) >= 0 &&
			 (h << 4 | l) == w)
			u[k++] = 5;   /* %25XX: encoded twice (a URL in a URL's query) */
	} else if (p[0] == '\\' && n >= 2) {
		if (((w == '/' || w == '\\' || w == '"') && p[1] == w) || (w == '\t' && p[1] == 't'))
			u[k++] = 2;
		if (p[1] == 'u' && n >= 6) {
			int a = hexv(p[2]), b = hexv(p[3]), c = hexv(p[4]), d = hexv(p[5]);

			if (a >= 0 && b >= 0 && c >= 0 && d >= 0 && (a << 12 | b << 8 | c << 4 | d) == w)
				u[k++] = 6;
		}
	} else if (p[0] == '&' && (e = entity(p, n, w))) {
		u[k++] = e;
	} else if (p[0] == '+' && w == ' ') {
		u[k++] = 1;
	}
	return k;
}

/* p[0..n) is the start of an escape cut short ("%2", "\u00"). */
static bool cut_escape(const uint8_t *p, size_t n)
{
	if (p[0] == '%' && n < 5) {   /* "%2", or "%25", "%252" of an escape encoded twice */
		for (size_t i = 1; i < n; i++)
			if (hexv(p[i]) < 0 || (n >= 3 && i <= 2 && p[i] != "_25"[i]))
				return false;
		return true;
	}
	if (p[0] == '\\' && n < 6) {
		if (n >= 2 && p[1] != 'u')
			return false;
		for (size_t i = 2; i < n; i++)
			if (hexv(p[i]) < 0)
				return false;
		return true;
	}
	if (p[0] == '&' && n < SCRUB_ENC_MAX) {
		static const char *const named[] = { "&amp;", "&lt;", "&gt;", "&quot;", "&apos;" };

		if (n >= 2 && p[1] == '#') {
			for (size_t i = 2; i < n; i++)
				if (hexv(p[i]) < 0 && !(i == 2 && (p[i] | 0x20) == 'x'))
					return false;
			return true;
		}
		for (size_t k = 0; k < sizeof(named) / sizeof(named[0]); k++)
			if (strlen(named[k]) > n && memcmp(p, named[k], n) == 0)
				return true;
	}
	return false;
}

/* Where an escape may begin. */
static bool escape_start(uint8_t c)
{
	return c == '%' || c == '\\' || c == '&';
}

#define WALK_CUT ((size_t)-1)

/*
 * Walks the secret s[0..len) over the text p[0..n), through the text's
 * escapes: the text length of a whole occurrence at p, or 0. With
 * open_end, a text that ends (or is cut inside an escape) before the
 * secret does gives WALK_CUT: it could be how an occurrence begins. Only
 * a secret byte that is itself '%', '\' or '&' can be read two ways (as
 * it is, or as the start of an escape); those branch, as it is first,
 * within a budget of branches that always covers the secret written as it
 * is (one branch per such byte).
 */
static size_t walk(const uint8_t *s, size_t len, const uint8_t *p, size_t n, bool open_end, unsigned *budget)
{
	size_t j = 0;

	for (size_t k = 0; k < len; k++) {
		size_t u[4];
		unsigned nu;

		if (open_end && (j >= n || cut_escape(p + j, n - j)))
			return WALK_CUT;
		if (j >= n || !(nu = units(p + j, n - j, s[k], u)))
			return 0;
		if (nu > 1) {
			for (unsigned i = 0; i < nu && *budget; i++) {
				size_t rest;

				(*budget)--;
				rest = walk(s + k + 1, len - k - 1, p + j + u[i], n - j - u[i], open_end, budget);
				if (rest == WALK_CUT)
					return WALK_CUT;
				/* open_end asks for a cut only: a whole one is no answer */
				if (!open_end && (rest || k + 1 == len))
					return j + u[i] + rest;
			}
			return 0;
		}
		j += u[0];
	}
	return j;
}

static size_t match_at(const uint8_t *s, size_t len, const uint8_t *p, size_t n, unsigned *budget)
{
	return walk(s, len, p, n, false, budget);
}

/* All of p[0..n) could be how an occurrence of s[0..len) begins: the text
 * ends before the secret does. */
static bool prefix_at(const uint8_t *s, size_t len, const uint8_t *p, size_t n, unsigned *budget)
{
	return walk(s, len, p, n, true, budget) == WALK_CUT;
}

size_t scrub_keep(const struct scrub *z, const uint8_t *p, size_t n)
{
	size_t hold = scrub_hold(z), from = n > hold ? n - hold : 0;

	for (size_t i = from; i < n; i++)
		for (unsigned k = 0; k < z->n; k++) {
			const struct scrub_secret *x = &z->sec[k];
			unsigned budget = (unsigned)x->len + 64;

			if ((p[i] == x->s[0] || escape_start(p[i])) &&
			    prefix_at(x->s, x->len, p + i, n - i, &budget))
				return n - i;
		}
	return 0;
}

/* The next place at or after p[off] where an occurrence of x may start. */
static const uint8_t *candidate(const struct scrub_secret *x, const uint8_t *p, size_t n, size_t off)
{
	/* no longer than the shortest prefix cut_short() stars */
	size_t half = (x->len + 1) / 2, most = x->len >= SCRUB_HIDDEN ? x->len - SCRUB_HIDDEN + 1 : 0;
	size_t need = half > most ? half : most;

	if (need < SCRUB_PREFIX)
		need = SCRUB_PREFIX;
	if (x->plain >= SCRUB_PREFIX)
		return memmem(p + off, n - off, x->s, x->plain < need ? x->plain : need);
	for (size_t i = off; i < n; i++)
		if (p[i] == x->s[0] || escape_start(p[i]))
			return p + i;
	return NULL;
}

/*
 * The secret cut short, as written, then other bytes: a reflection of a
 * request's first n bytes wrapped in more text (review, stop 25: all but
 * its last byte passed, the cut being no longer at the text's end, where
 * scrub_cut() looks). Starred when it shows so much that fewer than
 * SCRUB_HIDDEN of the secret's bytes stay unseen, and at least half of it
 * (a prefix other values share, a JWT's header, is not starred elsewhere).
 * The length of the prefix at p, or 0.
 */
static size_t cut_short(const struct scrub_secret *x, const uint8_t *p, size_t n)
{
	size_t m = 0, lim = x->len < n ? x->len : n;

	while (m < lim && p[m] == x->s[m])
		m++;
	/* the text ends inside it: it may go on in the next read (a stream's
	 * end is held back by scrub_keep(), a whole text's is scrub_cut()'s) */
	if (m == n)
		return 0;
	if (m == x->len || m < SCRUB_PREFIX || m < (x->len + 1) / 2 || m + SCRUB_HIDDEN <= x->len)
		return 0;
	return m;
}

unsigned scrub_buf(const struct scrub *z, uint8_t *p, size_t n)
{
	unsigned hits = 0;

	/* whole occurrences of every secret first, then the cut ones: a cut
	 * of one (a shared prefix) must not hide another's whole occurrence */
	for (int pass = 0; pass < 2; pass++)
		for (unsigned i = 0; i < z->n; i++) {
			const struct scrub_secret *x = &z->sec[i];
			const uint8_t *q;
			size_t off = 0;

			while (off < n && (q = candidate(x, p, n, off))) {
				size_t at = (size_t)(q - p), m;
				unsigned budget = (unsigned)x->len + 64;

				if ((m = pass ? cut_short(x, q, n - at) : match_at(x->s, x->len, q, n - at, &budget))) {
					memset(p + at, '*', m);
					hits++;
					off = at + m;
				} else {
					off = at + 1;
				}
			}
		}
	return hits;
}

/* How many bytes at the end of p[0..n) are how an occurrence of x begins,
 * cut short by the text's end (SCRUB_PREFIX or more), or 0. */
static size_t cut_end(const struct scrub_secret *x, const uint8_t *p, size_t n)
{
	size_t span = x->len * SCRUB_ENC_MAX, from = n > span ? n - span : 0;

	for (size_t i = from; i + SCRUB_PREFIX <= n; i++) {
		unsigned budget = (unsigned)x->len + 64;

		if ((p[i] == x->s[0] || escape_start(p[i])) && prefix_at(x->s, x->len, p + i, n - i, &budget))
			return n - i;
	}
	return 0;
}

/* How many bytes at the start of p[0..n) are how an occurrence of x ends
 * (its last SCRUB_PREFIX bytes or more), or n when all of p lies inside
 * one; else 0. */
static size_t cut_start(const struct scrub_secret *x, const uint8_t *p, size_t n)
{
	for (size_t k = 1; k + SCRUB_PREFIX <= x->len; k++) {
		unsigned budget = (unsigned)x->len + 64;
		size_t m;

		if (p[0] != x->s[k] && !escape_start(p[0]) && !(p[0] == '+' && x->s[k] == ' '))
			continue;
		if ((m = match_at(x->s + k, x->len - k, p, n, &budget)))
			return m;
		budget = (unsigned)x->len + 64;
		if (n >= SCRUB_PREFIX && prefix_at(x->s + k, x->len - k, p, n, &budget))
			return n;
	}
	return 0;
}

bool scrub_start_open(const struct scrub *z, const uint8_t *p, size_t n)
{
	if (n < SCRUB_PREFIX)
		return z->n > 0;
	for (unsigned i = 0; i < z->n; i++)
		if (cut_start(&z->sec[i], p, n) == n)
			return true;
	return false;
}

/* Stars the start of p that is how an occurrence of x ends; returns its length. */
static size_t star_start(const struct scrub_secret *x, uint8_t *p, size_t n)
{
	size_t m = cut_start(x, p, n);

	if (m)
		memset(p, '*', m);
	return m;
}

unsigned scrub_cut_start(const struct scrub *z, uint8_t *p, size_t n)
{
	unsigned hits = 0;

	for (unsigned i = 0; i < z->n && n; i++)
		hits += star_start(&z->sec[i], p, n) != 0;
	return hits;
}

unsigned scrub_cut(const struct scrub *z, uint8_t *p, size_t n)
{
	unsigned hits = 0;

	for (unsigned i = 0; i < z->n && n; i++) {
		size_t m = star_start(&z->sec[i], p, n);

		hits += m != 0;
		if (m < n && (m = cut_end(&z->sec[i], p + m, n - m))) {
			memset(p + n - m, '*', m);
			hits++;
		}
	}
	return hits;
}
