// SPDX-License-Identifier: Apache-2.0
/*
 * mask_json: JSON paths and masking of JSON bodies.
 *
 * The body is validated and rewritten in one pass by a small recursive
 * descent parser instead of jansson's DOM: jansson re-prints numbers (0.1
 * comes back as 0.10000000000000001, integers past int64 are refused), and
 * a masking proxy must hand the agent the upstream's bytes except where it
 * masks. So values are copied from the input as they are (whitespace
 * between tokens too), strings are decoded only to be
 * scanned, and only a masked string is re-encoded. Strictness is jansson's
 * with JSON_REJECT_DUPLICATES | JSON_DISALLOW_NUL: one RFC 8259 value,
 * valid UTF-8, paired surrogates, no duplicate member names, no \u0000.
 * Nesting is bounded by MASK_JSON_DEPTH, so the recursion is too.
 *
 * Paths are matched while parsing: every path is a small NFA whose states
 * (bit i = "steps 0..i-1 matched") are carried down one level at a time; a
 * value reached with a final state is replaced whole by "****" and its
 * subtree is only validated.
 */
#include "mask.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

static void setwhy(char *why, size_t whylen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void setwhy(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (!why || !whylen)
		return;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}

/* ---- paths --------------------------------------------------------------- */

void mask_path_release(struct mask_path *p)
{
	for (unsigned i = 0; p && i < p->nsteps; i++) {
		free(p->step[i].name);
		p->step[i].name = NULL;
	}
	if (p)
		p->nsteps = 0;
}

static bool name_char(unsigned char c)
{
	return c >= 0x20 && c != 0x7f && !strchr(".[]*\"' $?@()=,:!<>", c);
}

/* Parses one bracket step after '['; *pp is moved past ']'. */
static int parse_bracket(const char **pp, struct mask_step *st, char *why, size_t whylen)
{
	const char *p = *pp;

	if (p[0] == '*' && p[1] == ']') {
		st->kind = MSTEP_ANY;
		*pp = p + 2;
		return 0;
	}
	if (p[0] == '"' || p[0] == '\'') {
		char q = p[0], *name;
		size_t n = 0;

		name = malloc(strlen(p) + 1);
		if (!name)
			return -ENOMEM;
		for (p++; *p && *p != q; p++) {
			if (*p == '\\') {
				if (p[1] != '\\' && p[1] != '"' && p[1] != '\'') {
					free(name);
					setwhy(why, whylen, "only \\\\, \\\" and \\' escapes are supported in a quoted name");
					return -EINVAL;
				}
				p++;
			}
			name[n++] = *p;
		}
		if (*p != q || p[1] != ']') {
			free(name);
			setwhy(why, whylen, "unterminated quoted name");
			return -EINVAL;
		}
		if (n == 0) {
			free(name);
			setwhy(why, whylen, "empty member name");
			return -EINVAL;
		}
		name[n] = '\0';
		st->kind = MSTEP_NAME;
		st->name = name;
		st->namelen = n;
		*pp = p + 2;
		return 0;
	}
	if (p[0] >= '0' && p[0] <= '9') {
		uint32_t v = 0;

		if (p[0] == '0' && p[1] >= '0' && p[1] <= '9') {
			setwhy(why, whylen, "index with a leading zero");
			return -EINVAL;
		}
		for (; *p >= '0' && *p <= '9'; p++) {
			if (v > 99999999u) {
				setwhy(why, whylen, "index too large");
				return -EINVAL;
			}
			v = v * 10 + (uint32_t)(*p - '0');
		}
		if (*p != ']') {
			setwhy(why, whylen, "%s are not supported", *p == ':' ? "slices" :
			       *p == ',' ? "unions" : "only [N], [*] and [\"name\"] are");
			return -EINVAL;
		}
		st->kind = MSTEP_INDEX;
		st->index = v;
		*pp = p + 1;
		return 0;
	}
	if (p[0] == '-')
		setwhy(why, whylen, "negative indexes are not supported");
	else if (p[0] == '?' || p[0] == '(')
		setwhy(why, whylen, "filter and script expressions are not supported");
	else
		setwhy(why, whylen, "only [N], [*] and [\"name\"] are supported in brackets");
	return -EINVAL;
}

int mask_path_parse(const char *path, struct mask_path *mp, char *why, size_t whylen)
{
	const char *p = path;
	int rc;

	memset(mp, 0, sizeof(*mp));
	if (!path || path[0] != '$') {
		setwhy(why, whylen, "a JSON path starts with '$'");
		return -EINVAL;
	}
	if (strlen(path) > MASK_PATH_MAX_LEN) {
		setwhy(why, whylen, "longer than %d bytes", MASK_PATH_MAX_LEN);
		return -EINVAL;
	}
	if (!path[1]) {
		setwhy(why, whylen, "'$' alone would mask the whole body; name a member");
		return -EINVAL;
	}
	for (p++; *p; ) {
		struct mask_step *st = &mp->step[mp->nsteps];

		if (mp->nsteps == MASK_PATH_MAX_STEPS) {
			setwhy(why, whylen, "more than %d steps", MASK_PATH_MAX_STEPS);
			goto fail;
		}
		memset(st, 0, sizeof(*st));
		if (p[0] == '.' && p[1] == '.') {
			st->descendant = true;
			p += 2;
			if (*p == '[') {
				p++;
				if ((rc = parse_bracket(&p, st, why, whylen)))
					goto fail_rc;
				mp->nsteps++;
				continue;
			}
		} else if (p[0] == '.') {
			p++;
		} else if (p[0] == '[') {
			p++;
			if ((rc = parse_bracket(&p, st, why, whylen)))
				goto fail_rc;
			mp->nsteps++;
			continue;
		} else {
			setwhy(why, whylen, "unexpected '%c' at offset %zu", *p, (size_t)(p - path));
			goto fail;
		}
		if (*p == '*') {
			st->kind = MSTEP_ANY;
			p++;
		} else {
			const char *s = p;

			while (name_char((unsigned char)*p))
				p++;
			if (p == s) {
				if (*p)
					setwhy(why, whylen, "unexpected '%c' at offset %zu", *p,
					       (size_t)(p - path));
				else
					setwhy(why, whylen, "empty member name at the end");
				goto fail;
			}
			st->kind = MSTEP_NAME;
			st->namelen = (size_t)(p - s);
			if (!(st->name = strndup(s, st->namelen))) {
				rc = -ENOMEM;
				goto fail_rc;
			}
		}
		mp->nsteps++;
		if (*p && *p != '.' && *p != '[') {
			setwhy(why, whylen, "unexpected '%c' at offset %zu", *p, (size_t)(p - path));
			goto fail;
		}
	}
	return 0;
fail:
	rc = -EINVAL;
fail_rc:
	if (rc == -ENOMEM)
		setwhy(why, whylen, "out of memory");
	mask_path_release(mp);
	return rc;
}

int mask_json_path_check(const char *path, char *why, size_t whylen)
{
	struct mask_path mp;
	int rc = mask_path_parse(path, &mp, why, whylen);

	mask_path_release(&mp);
	return rc;
}

/* ---- the rewriter -------------------------------------------------------- */

/* A path's steps by kind, one bit per step (see step_states()). */
struct pbits {
	uint64_t desc, any, name, index;
	unsigned nsteps;
};

#define REPORT_CACHE      8
#define REPORT_CACHE_NAME 64

struct keyref {
	size_t off, len;               /* decoded name in w->arena */
};

struct jw {
	const struct mask_rules *m;
	const uint8_t *s;
	size_t len, pos;
	size_t cp;                     /* the output run not yet copied starts here */
	bool detect;                   /* detectors configured */
	bool lenient;                  /* mask_json_lenient(): what lenient readers take */
	size_t minlen;                 /* shorter values are never changed by them */
	char *out;                     /* output */
	size_t on, ocap;
	uint8_t *dec;                  /* decoded string, scratch */
	size_t dcap;
	char *mbuf;                    /* masked string, scratch */
	size_t mcap;
	uint8_t *arena;                /* names of the open objects */
	size_t an, acap;
	struct keyref *keys;
	size_t nk, kcap;               /* kcap in bytes */
	const struct mask_path *paths;
	size_t npaths;
	const struct pbits *pb;        /* [npaths] */
	uint64_t *st;                  /* [MASK_JSON_DEPTH + 2][npaths] */
	struct mask_report *rep;
	struct { char name[REPORT_CACHE_NAME]; size_t len; } rcache[REPORT_CACHE];
	unsigned nrcache;              /* names already in rep->fields */
	/* step_states()'s filter: bit key_hash(name) for the name of every
	 * name step of every path, and whether any path has an index step. A
	 * key whose bit is clear matches no name step (a set bit may be
	 * another name's: the steps are then compared). */
	uint64_t names[4];
	bool indexes;
	/* where arena and keys start, so a small body needs no allocation */
	uint8_t arena0[256];
	struct keyref keys0[32];
};

#define STACK_PATHS 4              /* path states of this many paths live on the stack */

#define OUT_MAX ((size_t)MASK_JSON_MAX * 4)

static int grow(void **p, size_t *cap, size_t need, size_t max)
{
	size_t c = *cap ? *cap : 256;
	void *np;

	if (need <= *cap)
		return 0;
	if (need > max)
		return -E2BIG;
	while (c < need)
		c = c > max / 2 ? max : c * 2;
	if (!(np = realloc(*p, c)))
		return -ENOMEM;
	*p = np;
	*cap = c;
	return 0;
}

static int emit_grow(struct jw *w, size_t n)
{
	return grow((void **)&w->out, &w->ocap, w->on + n + 1, OUT_MAX + 1);
}

/*
 * memcpy for the short pieces the rewriter copies (member names, runs
 * between two masked values such as `, "card": `): two overlapping moves of 8,
 * 4 or 2 bytes, both inside [src, src + n) so nothing outside it is read or
 * written, instead of a call to memcpy; longer ones go to memcpy.
 */
static inline __attribute__((always_inline)) void copy_short(void *dst, const void *src, size_t n)
{
	uint8_t *d = dst;
	const uint8_t *s = src;

	if (n >= 8 && n <= 16) {
		uint64_t a, b;

		memcpy(&a, s, 8);
		memcpy(&b, s + n - 8, 8);
		memcpy(d, &a, 8);
		memcpy(d + n - 8, &b, 8);
	} else if (n >= 4 && n < 8) {
		uint32_t a, b;

		memcpy(&a, s, 4);
		memcpy(&b, s + n - 4, 4);
		memcpy(d, &a, 4);
		memcpy(d + n - 4, &b, 4);
	} else if (n >= 2 && n < 4) {
		uint16_t a, b;

		memcpy(&a, s, 2);
		memcpy(&b, s + n - 2, 2);
		memcpy(d, &a, 2);
		memcpy(d + n - 2, &b, 2);
	} else if (n == 1) {
		*d = *s;
	} else if (n) {
		memcpy(d, s, n);
	}
}

static inline __attribute__((always_inline)) int emit(struct jw *w, const void *p, size_t n)
{
	int rc;

	if (!n)
		return 0;
	if (w->on + n + 1 > w->ocap && (rc = emit_grow(w, n)))
		return rc;
	copy_short(w->out + w->on, p, n);
	w->on += n;
	return 0;
}

static inline int emitc(struct jw *w, char c)
{
	if (w->on + 2 > w->ocap)
		return emit(w, &c, 1);
	w->out[w->on++] = c;
	return 0;
}

static inline bool is_ws(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * The output is the input's own bytes in runs: w->cp is where the run not
 * yet copied starts. Only a replaced value ends a run; every other token
 * (whitespace, punctuation, names, values nothing matched) is already in
 * it, so it costs no copy of its own.
 */
static int flush(struct jw *w, size_t upto)
{
	int rc = emit(w, w->s + w->cp, upto - w->cp);

	w->cp = upto;
	return rc;
}

/* Skips whitespace. It stays in the run: the agent gets the upstream's
 * spacing, and a pretty-printed body costs no copy per line. */
static inline void skip_ws(struct jw *w)
{
	size_t p = w->pos;

	if (p >= w->len || w->s[p] > ' ' || !is_ws(w->s[p]))
		return;   /* the common case: no whitespace at all */
	p++;
	while (p < w->len && w->s[p] <= ' ' && is_ws(w->s[p]))
		p++;
	w->pos = p;
}

static int hex4(const uint8_t *p, uint32_t *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++) {
		uint8_t c = p[i];
		int d = c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ?
			(c | 0x20) - 'a' + 10 : -1;

		if (d < 0)
			return -EINVAL;
		*v = (*v << 4) | (uint32_t)d;
	}
	return 0;
}

/* Up to max hex digits at s (n bytes there) into *v; how many were read. */
static size_t hex_run(const char *s, size_t n, size_t max, uint32_t *v)
{
	size_t k = 0;

	*v = 0;
	for (; k < n && k < max; k++) {
		uint8_t c = (uint8_t)s[k], d;

		if (c >= '0' && c <= '9')
			d = c - '0';
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			d = (c | 0x20) - 'a' + 10;
		else
			break;
		*v = *v << 4 | d;
	}
	return k;
}

/* The HTML character reference at s[i] ('&'; n bytes in all): its code
 * point in *cp and its length, or 0. Numeric ones with or without the ';'
 * (browsers take both), and the named ones of the characters detectors
 * look for ("&commat;" is how pages hide an '@' from harvesters). */
static size_t html_ref(const char *s, size_t n, size_t i, uint32_t *cp)
{
	static const struct { const char *name; char c; } named[] = {
		{ "commat;", '@' }, { "period;", '.' }, { "plus;", '+' }, { "hyphen;", '-' }, { "dash;", '-' },
		{ "amp;", '&' }, { "lt;", '<' }, { "gt;", '>' }, { "quot;", '"' }, { "apos;", '\'' },
		{ "lpar;", '(' }, { "rpar;", ')' }, { "lowbar;", '_' }, { "sol;", '/' }, { "colon;", ':' },
		/* a space between a card's groups to the detectors, as the
		 * U+00A0 it is ("4111&nbsp;1111&nbsp;...": found by review) */
		{ "nbsp;", ' ' }, { "thinsp;", ' ' }, { "numsp;", ' ' },
	};
	size_t k;

	if (i + 2 < n && s[i + 1] == '#') {
		bool hex = (s[i + 2] | 0x20) == 'x';
		size_t at = i + 2 + hex;

		/* every digit is read, leading zeros too ("&#000000064;" is an
		 * '@' to a browser); past U+10FFFF the value stops growing */
		*cp = 0;
		for (k = 0; at + k < n; k++) {
			uint8_t c = (uint8_t)s[at + k];
			uint32_t d;

			if (c >= '0' && c <= '9')
				d = c - '0';
			else if (hex && (c | 0x20) >= 'a' && (c | 0x20) <= 'f')
				d = (c | 0x20) - 'a' + 10;
			else
				break;
			if (*cp <= 0x10ffff)
				*cp = *cp * (hex ? 16 : 10) + d;
		}
		if (!k || *cp > 0x10ffff)
			return 0;
		return at + k - i + (at + k < n && s[at + k] == ';');
	}
	for (size_t j = 0; j < sizeof(named) / sizeof(named[0]); j++) {
		k = strlen(named[j].name);
		if (n - i - 1 >= k && memcmp(s + i + 1, named[j].name, k) == 0) {
			*cp = (uint8_t)named[j].c;
			return k + 1;
		}
	}
	return 0;
}

/*
 * One round of mask_escapes_hide(): s's escapes (n bytes) undone into d,
 * which holds n bytes and may be s itself (every escape is longer than
 * what it spells, and is read whole before what it spells is written, so
 * the writes never pass the reads). Returns the length in d.
 */
static size_t unescape_round(const char *s, size_t n, uint8_t *d)
{
	const char *bs = memchr(s, '\\', n), *amp = memchr(s, '&', n);
	size_t o, i;

	if (!bs && !amp)
		o = i = n;
	else
		o = i = (size_t)((bs && (!amp || bs < amp) ? bs : amp) - s);
	if ((const char *)d != s)
		memcpy(d, s, o);
	while (i < n) {
		uint32_t cp, lo;
		size_t k;

		if (s[i] == '&' && (k = html_ref(s, n, i, &cp))) {
			if (cp >= 0xd800 && cp <= 0xdfff)
				cp = 0xfffd;
			o += mask_put_utf8(d + o, cp);
			i += k;
			continue;
		}
		if (s[i] != '\\' || i + 1 == n) {
			d[o++] = (uint8_t)s[i++];
			continue;
		}
		cp = (uint8_t)s[i + 1];
		k = 2;
		switch (s[i + 1]) {
		case 'u':
			if (i + 2 < n && s[i + 2] == '{') {   /* \u{1F600}, leading zeros allowed */
				size_t z = 0, h;

				while (i + 3 + z < n && s[i + 3 + z] == '0')
					z++;
				h = hex_run(s + i + 3 + z, n - i - 3 - z, 6, &lo);
				if ((h || z) && i + 3 + z + h < n && s[i + 3 + z + h] == '}' && lo <= 0x10ffff)
					cp = lo, k = z + h + 4;
				else
					cp = 'u';
			} else if (hex_run(s + i + 2, n - i - 2, 4, &cp) == 4) {
				k = 6;
				if (cp >= 0xd800 && cp <= 0xdbff && n - i >= 12 && s[i + 6] == '\\' && s[i + 7] == 'u' &&
				    hex_run(s + i + 8, 4, 4, &lo) == 4 && lo >= 0xdc00 && lo <= 0xdfff) {
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
					k = 12;
				}
			} else {
				cp = 'u';
			}
			break;
		case 'x':
			if (hex_run(s + i + 2, n - i - 2, 2, &cp) == 2)
				k = 4;
			else
				cp = 'x';
			break;
		case 'b': cp = '\b'; break;
		case 'f': cp = '\f'; break;
		case 'n': cp = '\n'; break;
		case 'r': cp = '\r'; break;
		case 't': cp = '\t'; break;
		case 'v': cp = '\v'; break;
		case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7': {
			/* octal, as sloppy-mode JavaScript (a JSONP script), Python
			 * and C read it: "\100" is an '@'; "\0" alone a NUL */
			size_t h = 1, max = s[i + 1] <= '3' ? 3 : 2;

			cp = (uint32_t)(s[i + 1] - '0');
			while (h < max && i + 1 + h < n && s[i + 1 + h] >= '0' && s[i + 1 + h] <= '7')
				cp = cp * 8 + (uint32_t)(s[i + 1 + h++] - '0');
			k = 1 + h;
			break;
		}
		default:   /* \", \\, \/ and JavaScript's identity escapes ("\@"): the byte */
			d[o++] = (uint8_t)s[i + 1];
			i += 2;
			continue;
		}
		if (cp >= 0xd800 && cp <= 0xdfff)
			cp = 0xfffd;   /* a lone surrogate: what readers make of it */
		o += mask_put_utf8(d + o, cp);
		i += k;
	}
	return o;
}

/* Rounds of undoing: a value under another layer of escaping (COPY's
 * text format, an array's or a record's text form, JSON in a JSON
 * string, "&amp;#64;") spells it only once that layer is undone too. */
#define ESC_ROUNDS 4

int mask_escapes_hide(const struct mask_rules *m, const char *s, size_t n)
{
	size_t len = n, o;
	uint8_t *d;
	bool hit = false;

	if ((!memchr(s, '\\', n) && !memchr(s, '&', n)) || !mask_has_detectors(m))
		return 0;
	if (!(d = malloc(n)))
		return -ENOMEM;
	o = unescape_round(s, n, d);
	for (int r = 1; o < len; r++) {
		if ((hit = mask_value_matches(m, (const char *)d, o)) || r == ESC_ROUNDS ||
		    (!memchr(d, '\\', o) && !memchr(d, '&', o)))
			break;
		len = o;
		o = unescape_round((const char *)d, len, d);
	}
	free(d);
	return hit;
}

/* ---- what a document says of its own reading ---------------------------- */

bool mask_charset_ok(const char *v, size_t n)
{
	static const struct { const char *name; bool family; } ok[] = {
		{ "utf-8", false }, { "utf8", false }, { "us-ascii", false }, { "ascii", false },
		{ "latin1", false }, { "iso-8859-", true }, { "windows-125", true },
	};

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		size_t l = strlen(ok[i].name), k = l;

		if (n < l || strncasecmp(v, ok[i].name, l) != 0)
			continue;
		if (!ok[i].family)
			return n == l;
		while (k < n && v[k] >= '0' && v[k] <= '9')
			k++;
		return k == n && n > l;
	}
	return false;
}

static bool decl_space(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * The charsets text names for itself: an XML declaration's encoding="..."
 * (libxml2, under lxml, PHP, Nokogiri and xmllint, decodes by it when the
 * Content-Type names none, UTF-7 included), an HTML meta's charset=... (in
 * its own attribute or in a content="text/html; charset=...") and CSS's
 * @charset "...". Under UTF-7 "ada+AEA-example.com" is an address the
 * detectors did not see in the bytes, as under a Content-Type naming it
 * (found by review). So every such name must be one mask_charset_ok() takes,
 * wherever it is (a parser reads a meta anywhere in a head; fail closed
 * for prose that writes "charset=utf-7"). An encoding= without a quote is
 * no XML declaration's (a query's "?encoding=json").
 */
bool mask_declared_charsets_ok(const char *s, size_t n)
{
	const uint8_t *p = (const uint8_t *)s;

	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i] | 0x20;
		size_t k, vs;
		bool enc, quoted = false;

		/* two bytes first: an 'e' or a 'c' is in most words of prose */
		if ((c != 'c' && c != 'e') || n - i < 7 || (p[i + 1] | 0x20) != (c == 'c' ? 'h' : 'n'))
			continue;
		if (c == 'c' && strncasecmp((const char *)p + i, "charset", 7) == 0)
			enc = false, k = i + 7;
		else if (c == 'e' && n - i >= 8 && strncasecmp((const char *)p + i, "encoding", 8) == 0)
			enc = true, k = i + 8;
		else
			continue;
		while (k < n && decl_space(p[k]))
			k++;
		if (k < n && p[k] == '=') {
			k++;
			while (k < n && decl_space(p[k]))
				k++;
		} else if (enc || i == 0 || p[i - 1] != '@') {
			continue;   /* a word of prose: nothing named */
		}
		if (k < n && (p[k] == '"' || p[k] == '\'')) {
			quoted = true;
			k++;
		}
		if (enc && !quoted)
			continue;
		vs = k;
		while (k < n && !decl_space(p[k]) && p[k] != '"' && p[k] != '\'' && p[k] != ';' && p[k] != '>' &&
		       p[k] != '/' && p[k] != ',' && p[k] != '?' && p[k] != '&')
			k++;
		if (!mask_charset_ok((const char *)p + vs, k - vs))
			return false;
		i = k - 1;
	}
	return true;
}

/*
 * An XML entity declaration: <!DOCTYPE r [<!ENTITY a "ada@exa"><!ENTITY b
 * "mple.com">]><r>&a;&b;</r> is ada@example.com to a reader that expands
 * entities (libxml2 with substitution: xmllint --noent, lxml's default,
 * PHP, Nokogiri; Python's ElementTree and minidom), an address no detector
 * saw in the pieces (found by review). Every declaration, general or
 * parameter (<!ENTITY % p "...">, whose text may declare more), starts
 * with "<!ENTITY" in the text itself, in an internal subset or in a DTD the
 * route serves (a reader loading it from here); so that is looked for
 * anywhere, in any case (fail closed for prose quoting one).
 */
bool mask_declares_entities(const char *s, size_t n)
{
	const uint8_t *p = (const uint8_t *)s, *at = p, *end = p + n;

	while ((size_t)(end - at) >= 8 && (at = memchr(at, '<', (size_t)(end - at) - 7))) {
		if (at[1] == '!' && strncasecmp((const char *)at + 2, "ENTITY", 6) == 0)
			return true;
		at++;
	}
	return false;
}

/* Length of the valid UTF-8 sequence at p (n bytes left), 0 if invalid. */
static size_t utf8_seq(const uint8_t *p, size_t n)
{
	uint8_t c = p[0];
	size_t k;
	uint32_t cp, min;

	if (c >= 0xc2 && c <= 0xdf) { k = 1; cp = c & 0x1f; min = 0x80; }
	else if (c >= 0xe0 && c <= 0xef) { k = 2; cp = c & 0x0f; min = 0x800; }
	else if (c >= 0xf0 && c <= 0xf4) { k = 3; cp = c & 0x07; min = 0x10000; }
	else return 0;
	if (n <= k)
		return 0;
	for (size_t j = 1; j <= k; j++) {
		if ((p[j] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[j] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return k + 1;
}

/*
 * The first of the 8 bytes at s that needs a look in a string (a control
 * character, '"', '\\' or a byte >= 0x80), or 8 when none does. Per byte,
 * the lowest such byte sets its own top bit in t without a borrow from
 * below (every byte under it is in 0x20..0x7f and neither '"' nor '\\'),
 * so the lowest set bit of t is exact; bits above it may be noise and are
 * never used.
 */
static inline unsigned first_special(const uint8_t *s)
{
	const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
	uint64_t x, t;

	memcpy(&x, s, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	x = __builtin_bswap64(x);      /* byte 0 in the low bits, as below */
#endif
	t = ((x - ones * 0x20) | ((x ^ (ones * '"')) - ones) | ((x ^ (ones * '\\')) - ones) | x) & highs;
	return t ? (unsigned)__builtin_ctzll(t) >> 3 : 8;
}

#ifdef __SSE2__
/* first_special() over 16 bytes (SSE2 is in every x86-64): the same bytes
 * are special, a signed compare with 0x20 taking both the control
 * characters and the bytes >= 0x80 (negative as signed). Exact: a mask bit
 * per byte, no borrow between them. *quotes: the bytes that are '"'. */
static inline unsigned first_special16(const uint8_t *s, unsigned *quotes)
{
	__m128i x = _mm_loadu_si128((const __m128i *)(const void *)s);
	__m128i q = _mm_cmpeq_epi8(x, _mm_set1_epi8('"'));
	__m128i t = _mm_or_si128(_mm_or_si128(q, _mm_cmpeq_epi8(x, _mm_set1_epi8('\\'))),
				 _mm_cmplt_epi8(x, _mm_set1_epi8(0x20)));
	unsigned msk = (unsigned)_mm_movemask_epi8(t);

	*quotes = (unsigned)_mm_movemask_epi8(q);
	return msk ? (unsigned)__builtin_ctz(msk) : 16;
}
#endif

/* Decodes the escapes of the string whose body starts at b (after its
 * '"'); p is the first '\\' (everything before it is plain, validated).
 * Decoded text goes to w->dec (*dlen bytes); *end is the closing '"'. */
static int decode_string(struct jw *w, size_t b, size_t p, size_t *end, size_t *dlen)
{
	const uint8_t *s = w->s;
	size_t o = p - b;
	int rc;

	/* Decoded text is never longer than its escaped form. */
	if ((rc = grow((void **)&w->dec, &w->dcap, w->len - b + 1, MASK_JSON_MAX + 1)))
		return rc;
	memcpy(w->dec, s + b, o);
	for (;;) {
		uint8_t c;

		if (p >= w->len)
			return -EINVAL;
		/* runs of plain ASCII, 8 bytes at a time */
		if (w->len - p >= 8) {
			unsigned k = first_special(s + p);

			memcpy(w->dec + o, s + p, 8);   /* dec has room: see grow() */
			o += k;
			p += k;
			if (k == 8)
				continue;
		}
		c = s[p];
		if (c == '"')
			break;
		if (c < 0x20)
			return -EINVAL;
		if (c < 0x80 && c != '\\') {
			w->dec[o++] = c;
			p++;
		} else if (c >= 0x80) {
			size_t k = utf8_seq(s + p, w->len - p);

			if (!k && !w->lenient)
				return -EINVAL;
			k += !k;   /* lenient: an invalid byte is one U+FFFD to them */
			memcpy(w->dec + o, s + p, k);
			o += k;
			p += k;
		} else {
			uint32_t cp, lo;

			if (p + 1 >= w->len)
				return -EINVAL;
			switch (s[p + 1]) {
			case '"': case '\\': case '/':
				w->dec[o++] = s[p + 1]; p += 2; continue;
			case 'b': w->dec[o++] = '\b'; p += 2; continue;
			case 'f': w->dec[o++] = '\f'; p += 2; continue;
			case 'n': w->dec[o++] = '\n'; p += 2; continue;
			case 'r': w->dec[o++] = '\r'; p += 2; continue;
			case 't': w->dec[o++] = '\t'; p += 2; continue;
			case 'u': break;
			default: return -EINVAL;
			}
			if (w->len - p < 6 || hex4(s + p + 2, &cp))
				return -EINVAL;
			p += 6;
			if (cp == 0 || (cp >= 0xdc00 && cp <= 0xdfff)) {
				if (!w->lenient)
					return -EINVAL;
				cp = cp ? 0xfffd : 0;   /* lenient readers take both */
			}
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (w->len - p < 6 || s[p] != '\\' || s[p + 1] != 'u' ||
				    hex4(s + p + 2, &lo) || lo < 0xdc00 || lo > 0xdfff) {
					if (!w->lenient)
						return -EINVAL;
					lo = 0;   /* a lone high surrogate */
				}
				if (lo) {
					p += 6;
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				} else {
					cp = 0xfffd;
				}
			}
			o += mask_put_utf8(w->dec + o, cp);
		}
	}
	*end = p;
	*dlen = o;
	return 0;
}

/*
 * Parses the string at w->pos (on '"'). Its decoded text is *d, *dlen
 * bytes: the input's own bytes when the string has no escape (then they
 * ARE its decoded text: validated UTF-8, no control byte, nothing to
 * undo), else w->dec. raw and rawlen give the token with its quotes.
 */
static inline __attribute__((always_inline)) int parse_string(struct jw *w, size_t *raw, size_t *rawlen, const uint8_t **d, size_t *dlen)
{
	const uint8_t *s = w->s;
	size_t b = w->pos + 1, p = b;
	int rc;

	for (;;) {
		uint8_t c;

		for (;;) {
			unsigned k;

#ifdef __SSE2__
			if (w->len - p >= 16) {
				unsigned q;

				k = first_special16(s + p, &q);
				p += k;
				if (k < 16 && (q >> k & 1)) {
					/* the closing '"', known from the
					 * compare: no load of it again */
					*d = s + b;
					*dlen = p - b;
					goto closed;
				}
				if (k < 16)
					break;
				continue;
			}
#endif
			if (w->len - p < 8)
				break;
			k = first_special(s + p);
			p += k;
			if (k < 8)
				break;
		}
		if (p >= w->len)
			return -EINVAL;
		c = s[p];
		if (c == '"') {
			*d = s + b;
			*dlen = p - b;
			break;
		}
		if (c == '\\') {
			if ((rc = decode_string(w, b, p, &p, dlen)))
				return rc;
			*d = w->dec;
			break;
		}
		if (c < 0x20)
			return -EINVAL;
		if (c < 0x80) {
			p++;
		} else {
			size_t k = utf8_seq(s + p, w->len - p);

			if (!k && !w->lenient)
				return -EINVAL;
			p += k + !k;
		}
	}
closed:
	*raw = w->pos;
	*rawlen = p + 1 - w->pos;
	w->pos = p + 1;
	return 0;
}

/* Emits bytes (valid UTF-8) as a JSON string. */
static int emit_quoted(struct jw *w, const char *p, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	int rc = emitc(w, '"');

	for (size_t i = 0, run = 0; !rc && i <= n; i++) {
		uint8_t c = i < n ? (uint8_t)p[i] : 0;
		char esc[7];
		size_t el = 0;

		if (i < n && c >= 0x20 && c != '"' && c != '\\')
			continue;
		if ((rc = emit(w, p + run, i - run)))
			break;
		run = i + 1;
		if (i == n)
			break;
		esc[el++] = '\\';
		switch (c) {
		case '"': esc[el++] = '"'; break;
		case '\\': esc[el++] = '\\'; break;
		case '\n': esc[el++] = 'n'; break;
		case '\r': esc[el++] = 'r'; break;
		case '\t': esc[el++] = 't'; break;
		case '\b': esc[el++] = 'b'; break;
		case '\f': esc[el++] = 'f'; break;
		default:
			memcpy(esc + el, "u00", 3);
			el += 3;
			esc[el++] = hex[c >> 4];
			esc[el++] = hex[c & 15];
		}
		rc = emit(w, esc, el);
	}
	return rc ? rc : emitc(w, '"');
}

/* Runs the detectors over d[0..dlen). Returns hits; the masked text is in
 * w->mbuf[0..*mlen). */
static int detect(struct jw *w, const uint8_t *d, size_t dlen, size_t *mlen, unsigned *hits)
{
	size_t cap = mask_value_bound(dlen), n;
	int rc;

	*hits = 0;
	if ((rc = grow((void **)&w->mbuf, &w->mcap, cap, (size_t)-1)))
		return rc;
	n = mask_value(w->m, (const char *)d, dlen, w->mbuf, w->mcap, hits);
	if (n == (size_t)-1)
		return -ENOMEM;          /* cannot happen: cap is the bound */
	*mlen = n;
	return 0;
}

/* The member name the current value belongs to, for the report. */
struct ctx {
	size_t name_off, name_len;     /* in w->arena; name_len == SIZE_MAX: "$" */
	bool touched;                  /* counted in rep->columns already */
};

/* Adds name to the report's field list unless it was added before: the
 * same name again changes nothing there (mask_report_add() lists a name
 * once, and once the list is full nothing more goes in), so the cache only
 * saves masking the name and searching the list on every hit. */
static void report_name(struct jw *w, const char *name, size_t len)
{
	for (unsigned i = 0; i < w->nrcache; i++)
		if (w->rcache[i].len == len && memcmp(w->rcache[i].name, name, len) == 0)
			return;
	mask_report_add(w->rep, w->m, name, len);
	if (w->nrcache < REPORT_CACHE && len <= REPORT_CACHE_NAME) {
		memcpy(w->rcache[w->nrcache].name, name, len);
		w->rcache[w->nrcache++].len = len;
	}
}

static void report(struct jw *w, struct ctx *cx, unsigned hits)
{
	if (!w->rep || !hits)
		return;
	w->rep->hits += hits;
	if (!cx->touched) {
		w->rep->columns++;
		cx->touched = true;
	}
	if (cx->name_len == SIZE_MAX)
		report_name(w, "$", 1);
	else
		report_name(w, (const char *)w->arena + cx->name_off, cx->name_len);
}

static int parse_value(struct jw *w, int depth, bool quiet, struct ctx *cx);

static inline unsigned key_hash(const uint8_t *key, size_t klen)
{
	return (unsigned)((klen ? key[0] : 0) ^ (klen * 37)) & 255;
}

/*
 * Path states of a child of the value at level depth (named by key or by
 * index), into level depth + 1. Returns true when a path ends there.
 * Per path, bit b of a state set means "steps 0..b-1 matched, step b is
 * next". A pending descendant step ("..") stays pending below; a step that
 * matches the child moves on to b + 1. Only name and index steps need a
 * look at the child, and only those that are pending.
 */
static inline __attribute__((always_inline)) bool step_states(struct jw *w, int depth, const uint8_t *key, size_t klen, bool is_index,
			uint32_t index)
{
	const uint64_t *par = w->st + (size_t)depth * w->npaths;
	uint64_t *kid = w->st + (size_t)(depth + 1) * w->npaths;
	bool final = false;

	unsigned h = is_index ? 0 : key_hash(key, klen);

	if (is_index ? !w->indexes : !(w->names[h >> 6] >> (h & 63) & 1)) {
		/* no name or index step can match this child: only the pending
		 * descendant steps stay and the wildcard steps advance */
		for (size_t i = 0; i < w->npaths; i++) {
			const struct pbits *pb = &w->pb[i];
			uint64_t in = par[i];

			kid[i] = (in & pb->desc) | ((in & pb->any) << 1);
			if (kid[i] & (1ull << pb->nsteps))
				final = true;
		}
		return final;
	}
	for (size_t i = 0; i < w->npaths; i++) {
		const struct pbits *pb = &w->pb[i];
		const struct mask_step *step = w->paths[i].step;
		uint64_t in = par[i], adv, look;

		if (!in) {
			kid[i] = 0;
			continue;
		}
		adv = in & pb->any;
		look = in & (is_index ? pb->index : pb->name);
		while (look) {
			unsigned b = (unsigned)__builtin_ctzll(look);
			const struct mask_step *st = &step[b];

			look &= look - 1;
			if (is_index ? st->index == index :
			    st->namelen == klen && (uint8_t)st->name[0] == key[0] && memcmp(st->name, key, klen) == 0)
				adv |= 1ull << b;
		}
		kid[i] = (in & pb->desc) | (adv << 1);
		if (kid[i] & (1ull << pb->nsteps))
			final = true;
	}
	return final;
}

/* grow() for a buffer that starts in jw itself (inl): moved to the heap
 * when it first outgrows it. */
static int grow_inl(void **p, size_t *cap, size_t need, size_t max, void *inl, size_t used)
{
	void *np;
	size_t c = *cap;
	int rc;

	if (need <= *cap)
		return 0;
	if (*p != inl)
		return grow(p, cap, need, max);
	np = NULL;
	if ((rc = grow(&np, &c, need, max)))
		return rc;
	memcpy(np, inl, used);
	*p = np;
	*cap = c;
	return 0;
}

static inline __attribute__((always_inline)) int push_key(struct jw *w, const uint8_t *d, size_t dlen, size_t *off)
{
	int rc;

	if (w->an + dlen + 1 > w->acap &&
	    (rc = grow_inl((void **)&w->arena, &w->acap, w->an + dlen + 1, MASK_JSON_MAX + 1, w->arena0, w->an)))
		return rc;
	if ((w->nk + 1) * sizeof(*w->keys) > w->kcap &&
	    (rc = grow_inl((void **)&w->keys, &w->kcap, (w->nk + 1) * sizeof(*w->keys), (size_t)-1, w->keys0,
			   w->nk * sizeof(*w->keys))))
		return rc;
	copy_short(w->arena + w->an, d, dlen);
	*off = w->an;
	w->keys[w->nk].off = w->an;
	w->keys[w->nk].len = dlen;
	w->nk++;
	w->an += dlen;
	return 0;
}

/* glibc qsort_r: the arena is the comparator's context. */
static int keycmp(const void *a, const void *b, void *arena)
{
	const struct keyref *x = a, *y = b;
	const uint8_t *ar = arena;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(ar + x->off, ar + y->off, n);

	return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Duplicate names among keys[k0..nk): pairwise for small objects, else sort
 * and compare neighbours (O(k log k), no hash table to size). */
static bool has_dup(struct jw *w, size_t k0)
{
	size_t n = w->nk - k0;

	if (n <= 8) {
		for (size_t i = k0; i < w->nk; i++)
			for (size_t j = i + 1; j < w->nk; j++)
				if (w->keys[i].len == w->keys[j].len &&
				    memcmp(w->arena + w->keys[i].off, w->arena + w->keys[j].off, w->keys[i].len) == 0)
					return true;
		return false;
	}
	qsort_r(w->keys + k0, n, sizeof(*w->keys), keycmp, w->arena);
	for (size_t i = k0 + 1; i < w->nk; i++)
		if (keycmp(&w->keys[i - 1], &w->keys[i], w->arena) == 0)
			return true;
	return false;
}

static const char MASKED[] = "\"" MASK_TOKEN "\"";

/* The token at [start, end) is replaced by text: the run before it is
 * copied, the run after it starts at end. */
static int replace(struct jw *w, size_t start, size_t end, const char *text, size_t n)
{
	int rc;

	if ((rc = flush(w, start)) || (rc = emit(w, text, n)))
		return rc;
	w->cp = end;
	return 0;
}

static int scan_string_slow(struct jw *w, size_t raw, size_t rawlen, const uint8_t *d, size_t dlen,
			    struct ctx *cx);

/* A string value or member name: left in the run when nothing matched,
 * else the masked text re-encoded in its place. A string shorter than any
 * detector's shortest match (mask_min_match()) cannot match: most names
 * and short values stop here, inline. */
static inline int scan_string(struct jw *w, size_t raw, size_t rawlen, const uint8_t *d, size_t dlen,
			      struct ctx *cx, bool quiet)
{
	if (quiet || !w->detect || dlen < w->minlen)
		return 0;
	return scan_string_slow(w, raw, rawlen, d, dlen, cx);
}

static int scan_string_slow(struct jw *w, size_t raw, size_t rawlen, const uint8_t *d, size_t dlen,
			    struct ctx *cx)
{
	unsigned hits = 0;
	size_t mlen;
	int rc;
	/* a string holding escapes of its own (JSON in a JSON string, a
	 * script, HTML): its reader undoes them again (found by review) */
	bool esc = memchr(d, '\\', dlen) || memchr(d, '&', dlen);

	/* mask_value_maybe() is false only when mask_value() would give the
	 * text back unchanged with no hit (mask.h): then the raw token stays,
	 * without a copy through w->mbuf. */
	if (!esc && !mask_value_maybe(w->m, (const char *)d, dlen))
		return 0;
	if ((rc = detect(w, d, dlen, &mlen, &hits)))
		return rc;
	if (esc && (rc = mask_escapes_hide(w->m, hits ? w->mbuf : (const char *)d, hits ? mlen : dlen))) {
		if (rc < 0)
			return rc;
		/* what they spell cannot be masked in place: the whole string */
		report(w, cx, 1);
		return replace(w, raw, raw + rawlen, MASKED, sizeof(MASKED) - 1);
	}
	if (!hits)
		return 0;
	report(w, cx, hits);
	if ((rc = flush(w, raw)) || (rc = emit_quoted(w, w->mbuf, mlen)))
		return rc;
	w->cp = raw + rawlen;
	return 0;
}

/*
 * The whole number a JSON number with a fraction or an exponent stands for:
 * "4.111111111111111e15", "41111111111111110e-1", "0.04111111111111111e17"
 * and "4111111111111111.000" are 4111111111111111 to a reader of numbers
 * (Python's json, JavaScript's), where the detectors reading the text saw
 * no card once a zero more or less changed the length of a digit group
 * (found by review). s is n bytes of valid JSON number grammar. Computed
 * exactly from the digits and the exponent, no floating point: d gets the
 * integer's digits without sign or leading zeros, at most 19 (the longest
 * card), and their count is returned; 0 when the value is zero, not whole,
 * or longer.
 */
static size_t number_integer(const uint8_t *s, size_t n, char d[19])
{
	size_t i = s[0] == '-', k = 0, first = SIZE_MAX, last = 0, nd;
	int64_t frac = 0, exp = 0, e;
	bool in_frac = false, neg = false;

	for (; i < n && s[i] != 'e' && s[i] != 'E'; i++) {
		if (s[i] == '.') {
			in_frac = true;
			continue;
		}
		frac += in_frac;
		if (s[i] != '0') {
			if (first == SIZE_MAX)
				first = k;
			else if (k - first >= 19)
				return 0;   /* more than 19 significant digits */
			last = k;
		}
		if (first != SIZE_MAX && k - first < 19)
			d[k - first] = (char)s[i];
		k++;
	}
	if (first == SIZE_MAX)
		return 0;   /* zero */
	if (i < n) {
		if (s[++i] == '-' || s[i] == '+')
			neg = s[i++] == '-';
		for (; i < n; i++)   /* saturated: far past what gives 19 digits */
			if (exp < 100000000)
				exp = exp * 10 + (s[i] - '0');
		if (neg)
			exp = -exp;
	}
	/* d[0..nd) times 10^e: the zeros after the last nonzero digit count
	 * in e, as do the fraction's digits (against it) */
	nd = last - first + 1;
	e = exp - frac + (int64_t)(k - 1 - last);
	if (e < 0 || (int64_t)nd + e > 19)
		return 0;
	memset(d + nd, '0', (size_t)e);
	return nd + (size_t)e;
}

/*
 * The rest of a number from its fraction or exponent on (s[p] is '.', 'e'
 * or 'E'): out of line, as most numbers have neither. Its text goes to the
 * detectors as a plain number's does, and so does the whole number it
 * spells (number_integer()).
 */
static __attribute__((noinline, cold)) int number_tail(struct jw *w, bool quiet, struct ctx *cx, size_t start, size_t p)
{
	const uint8_t *s = w->s;
	size_t n = w->len, nd;
	char d[19];

	if (s[p] == '.') {
		if (++p >= n || s[p] < '0' || s[p] > '9')
			return -EINVAL;
		while (p < n && s[p] >= '0' && s[p] <= '9')
			p++;
	}
	if (p < n && (s[p] == 'e' || s[p] == 'E')) {
		p++;
		if (p < n && (s[p] == '+' || s[p] == '-'))
			p++;
		if (p >= n || s[p] < '0' || s[p] > '9')
			return -EINVAL;
		while (p < n && s[p] >= '0' && s[p] <= '9')
			p++;
	}
	w->pos = p;
	if (quiet || !w->detect)
		return 0;
	if ((p - start >= w->minlen && mask_value_matches(w->m, (const char *)s + start, p - start)) ||
	    ((nd = number_integer(s + start, p - start, d)) && nd >= w->minlen && mask_value_matches(w->m, d, nd))) {
		report(w, cx, 1);
		return replace(w, start, p, MASKED, sizeof(MASKED) - 1);
	}
	return 0;
}

static inline __attribute__((always_inline)) int parse_number(struct jw *w, bool quiet, struct ctx *cx)
{
	const uint8_t *s = w->s;
	size_t p = w->pos, start = p, n = w->len;

	if (p < n && s[p] == '-')
		p++;
	if (w->lenient && n - p >= 8 && memcmp(s + p, "Infinity", 8) == 0) {
		w->pos = p + 8;
		return 0;
	}
	if (p < n && s[p] == '0')
		p++;
	else if (p < n && s[p] >= '1' && s[p] <= '9')
		while (p < n && s[p] >= '0' && s[p] <= '9')
			p++;
	else
		return -EINVAL;
	if (p < n && __builtin_expect(s[p] == '.' || s[p] == 'e' || s[p] == 'E', 0))
		return number_tail(w, quiet, cx, start, p);
	w->pos = p;
	if (quiet)
		return 0;
	/* A card or phone number stored as a JSON number is still one. */
	if (w->detect && p - start >= w->minlen && mask_value_matches(w->m, (const char *)s + start, p - start)) {
		report(w, cx, 1);
		return replace(w, start, p, MASKED, sizeof(MASKED) - 1);
	}
	return 0;
}

static int parse_literal(struct jw *w)
{
	static const struct { char t[9]; size_t n; } lit[] = {
		{ "true", 4 }, { "false", 5 }, { "null", 4 }, { "NaN", 3 }, { "Infinity", 8 } };

	for (int i = 0; i < (w->lenient ? 5 : 3); i++)
		if (w->len - w->pos >= lit[i].n && memcmp(w->s + w->pos, lit[i].t, lit[i].n) == 0) {
			w->pos += lit[i].n;
			return 0;
		}
	return -EINVAL;
}

/*
 * A string value that is itself JSON to a reader (an object or array): a
 * kubectl last-applied-configuration annotation holding the whole object, a
 * body encoded twice. The route's paths name data, and what they name in it
 * has no path of its own here (a Secret's "data" inside the annotation of
 * the Secret that $.data masks: review, stop 25). On a route with JSON
 * paths such a value is masked whole.
 */
static bool json_in_string_slow(const uint8_t *d, size_t n)
{
	size_t i = 0;

	while (i < n && (d[i] == ' ' || d[i] == '\t' || d[i] == '\r' || d[i] == '\n'))
		i++;
	if (i == n || (d[i] != '{' && d[i] != '['))
		return false;
	return mask_json_lenient((const char *)d, n) != -EINVAL;
}

/* json_in_string_slow() for a string starting with whitespace, '{' or
 * '['; any other string is no JSON, inline. */
static inline bool json_in_string(const uint8_t *d, size_t n)
{
	return n && (d[0] <= ' ' || d[0] == '{' || d[0] == '[') && json_in_string_slow(d, n);
}

static inline bool word_byte(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
	       c == '$' || c >= 0x80;
}

/*
 * A string value holding another format's key that a path names by its
 * last named step: a ConfigMap's YAML ("db:\n  password: hunter2"), a
 * properties or INI file ("db.password=..."), XML ("<email>..."), a query
 * ("?email=..."). Its reader finds the value, which the path does not
 * reach inside a string (found by review), as a body in such a format
 * would carry it (http_mask.c refuses those). On a route with paths such a
 * string is masked whole, as one holding JSON is. The name must be a word
 * of its own, in any case, followed by ':' or '=' (blanks and a closing
 * quote may come between) or following a '<': the word alone in prose
 * ("write an email") is left.
 */
static bool keyed_in_string_slow(const struct jw *w, const uint8_t *d, size_t n)
{
	for (size_t k = 0; k < w->npaths; k++) {
		const struct mask_path *p = &w->paths[k];
		const struct mask_step *st = NULL;

		for (unsigned i = 0; i < p->nsteps; i++)
			if (p->step[i].kind == MSTEP_NAME)
				st = &p->step[i];
		if (!st || !st->namelen || st->namelen >= n)
			continue;
		for (size_t at = 0; at + st->namelen < n; at++) {
			size_t e = at + st->namelen;

			if ((d[at] | 0x20) != ((uint8_t)st->name[0] | 0x20) ||
			    strncasecmp((const char *)d + at, st->name, st->namelen) != 0 ||
			    (at > 0 && word_byte(d[at - 1])) || word_byte(d[e]))
				continue;
			if (at > 0 && d[at - 1] == '<')
				return true;
			while (e < n && (d[e] == ' ' || d[e] == '\t' || d[e] == '"' || d[e] == '\''))
				e++;
			if (e < n && (d[e] == ':' || d[e] == '='))
				return true;
		}
	}
	return false;
}

/*
 * A string value holding a document that says how to read itself in a way
 * the detectors do not: a charset mask_charset_ok() refuses (an XML
 * declaration's encoding="UTF-7", an HTML meta charset, CSS @charset:
 * {"doc": "<?xml version=\"1.0\" encoding=\"UTF-7\"?><a>ada+AEA-example.com</a>"}),
 * or XML entity declarations (their expansion spells what their pieces do
 * not). The agent that reads the document from the string reads the
 * address, which the detectors did not see (found by review), as in a
 * text body, which is refused (http_mask.c). Such a string is masked
 * whole rather than the answer refused: as one holding JSON or another
 * format's key is (keyed_in_string_slow()), what cannot be read is never
 * shown, and the rest of the answer stays usable (an API listing mails or
 * pages, one of them UTF-7, still answers). Prose naming such a charset
 * ("charset=utf-7") is masked too: fail closed.
 */
static bool doc_in_string_slow(const uint8_t *d, size_t n)
{
	return mask_declares_entities((const char *)d, n) || !mask_declared_charsets_ok((const char *)d, n);
}

/*
 * Whether a string value must be masked whole for what it holds:
 * keyed_in_string_slow() (on a route with paths) for a string with a ':',
 * '=' or '<', doc_in_string_slow() for one with a '=' or a '<' (which an
 * XML declaration's encoding=, a meta's charset= and "<!ENTITY" need) or
 * that starts with "@c" (CSS reads "@charset" only as a stylesheet's first
 * bytes; in a page's <style> the '<' is there). Eight bytes at a time, one
 * pass for both: most strings are short and have none, where memchr()
 * calls, or a loop over the bytes, cost 5% of masking the bench's
 * document. The last word is the string's last 8 bytes, read again in
 * part; a string shorter than 8 holds no declaration and is looked at
 * byte by byte for a key.
 */
static inline __attribute__((always_inline)) bool whole_for_content(const struct jw *w, const uint8_t *d, size_t n)
{
	uint64_t doc = 0, colon = 0, x;
	size_t i = 0;

	if (n <= 2)
		return false;
	if (n < 8) {
		for (; i < n; i++)
			if (d[i] == ':' || d[i] == '=' || d[i] == '<')
				return w->npaths && keyed_in_string_slow(w, d, n);
		return false;
	}
	for (; i + 8 <= n; i += 8) {
		memcpy(&x, d + i, 8);
		doc |= mask_bytes_eq(x, '=') | mask_bytes_eq(x, '<');
		colon |= mask_bytes_eq(x, ':');
	}
	if (i < n) {
		memcpy(&x, d + n - 8, 8);
		doc |= mask_bytes_eq(x, '=') | mask_bytes_eq(x, '<');
		colon |= mask_bytes_eq(x, ':');
	}
	if ((doc | colon) && w->npaths && keyed_in_string_slow(w, d, n))
		return true;
	return (doc || (d[0] == '@' && (d[1] | 0x20) == 'c')) && doc_in_string_slow(d, n);
}

/* The value at w->pos is a string, number or literal (or invalid), not an
 * object or an array. */
static inline bool scalar_next(const struct jw *w)
{
	return w->pos < w->len && w->s[w->pos] != '{' && w->s[w->pos] != '[';
}

/*
 * A value other than an object or an array (w->pos < w->len): inline in
 * the loops of parse_object() and parse_array(), so the leaves, most of a
 * body's values, cost no call of the recursive parse_value().
 */
static inline __attribute__((always_inline)) int parse_scalar(struct jw *w, bool quiet, struct ctx *cx)
{
	size_t raw, rawlen, dlen;
	const uint8_t *d;
	int rc;

	switch (w->s[w->pos]) {
	case '"':
		if ((rc = parse_string(w, &raw, &rawlen, &d, &dlen)))
			return rc;
		if (!quiet && (w->npaths || w->detect) &&
		    ((w->npaths && json_in_string(d, dlen)) || whole_for_content(w, d, dlen))) {
			report(w, cx, 1);
			return replace(w, raw, raw + rawlen, MASKED, sizeof(MASKED) - 1);
		}
		return scan_string(w, raw, rawlen, d, dlen, cx, quiet);
	case 't': case 'f': case 'n': case 'N': case 'I':
		return parse_literal(w);
	default:
		return parse_number(w, quiet, cx);
	}
}

/*
 * A member's or element's value. final: a path ends here, the value is
 * replaced whole by "****" and only validated (quiet below it).
 */
static int child_value(struct jw *w, int depth, bool quiet, bool final, struct ctx *kid)
{
	size_t start = w->pos;
	int rc;

	if (!final)
		return parse_value(w, depth, quiet, kid);
	report(w, kid, 1);
	if (scalar_next(w))
		rc = parse_scalar(w, true, kid);
	else
		rc = parse_value(w, depth, true, kid);
	if (rc)
		return rc;
	return replace(w, start, w->pos, MASKED, sizeof(MASKED) - 1);
}

/* A member's or element's value: a scalar inline, else child_value(). */
static inline __attribute__((always_inline)) int member_value(struct jw *w, int depth, bool quiet, bool final,
							      struct ctx *kid)
{
	if (!final && scalar_next(w))
		return parse_scalar(w, quiet, kid);
	return child_value(w, depth, quiet, final, kid);
}

/* A name's bit in parse_object()'s filter of the names it has seen: equal
 * names have equal bits, so a name whose bit is clear is no duplicate.
 * Not key_hash() (first byte and length, the path steps' filter): the
 * last byte also counts here, so that names such as "item1" and "item2"
 * in one object, which key_hash() puts together, cost no compare. */
static inline uint64_t name_bit(const uint8_t *d, size_t n)
{
	return n ? 1ull << ((n * 7 + d[0] + d[n - 1] * 3u) & 63) : 1;
}

static int parse_object(struct jw *w, int depth, bool quiet, struct ctx *cx)
{
	size_t k0 = w->nk, a0 = w->an;
	uint64_t seen = 0;             /* name_bit() of the names so far */
	bool twice = false;            /* a bit came twice: has_dup() looks */
	int rc;

	w->pos++;                                  /* '{' */
	skip_ws(w);
	if (w->pos < w->len && w->s[w->pos] == '}') {
		w->pos++;
		return 0;
	}
	for (;;) {
		size_t raw, rawlen, dlen, off;
		const uint8_t *d;
		struct ctx kid = { 0 };
		bool final = false;

		if (w->pos >= w->len || w->s[w->pos] != '"')
			return -EINVAL;
		if ((rc = parse_string(w, &raw, &rawlen, &d, &dlen)) || (rc = push_key(w, d, dlen, &off)))
			return rc;
		kid.name_off = off;
		kid.name_len = dlen;
		{
			uint64_t bit = name_bit(d, dlen);

			twice |= (seen & bit) != 0;
			seen |= bit;
		}
		/* The name is data too: scanned like a string value, but a hit is
		 * reported under the name's own (masked) text. */
		if ((rc = scan_string(w, raw, rawlen, d, dlen, &kid, quiet)))
			return rc;
		skip_ws(w);
		kid.touched = false;
		if (w->pos >= w->len || w->s[w->pos] != ':')
			return -EINVAL;
		w->pos++;
		if (!quiet && w->npaths)
			final = step_states(w, depth, d, dlen, false, 0);
		skip_ws(w);
		if ((rc = member_value(w, depth + 1, quiet, final, &kid)))
			return rc;
		skip_ws(w);
		if (w->pos >= w->len)
			return -EINVAL;
		if (w->s[w->pos] == ',') {
			w->pos++;
			skip_ws(w);
			continue;
		}
		if (w->s[w->pos] != '}')
			return -EINVAL;
		w->pos++;
		break;
	}
	if (!w->lenient && twice && has_dup(w, k0))
		return -EINVAL;
	w->nk = k0;
	w->an = a0;
	return 0;
}

static int parse_array(struct jw *w, int depth, bool quiet, struct ctx *cx)
{
	uint32_t idx = 0;
	int rc;

	w->pos++;                                  /* '[' */
	skip_ws(w);
	if (w->pos < w->len && w->s[w->pos] == ']') {
		w->pos++;
		return 0;
	}
	for (;; idx += idx < UINT32_MAX) {
		struct ctx kid = { .name_off = cx->name_off, .name_len = cx->name_len };
		bool final = false;

		if (!quiet && w->npaths)
			final = step_states(w, depth, NULL, 0, true, idx);
		if ((rc = member_value(w, depth + 1, quiet, final, &kid)))
			return rc;
		skip_ws(w);
		if (w->pos >= w->len)
			return -EINVAL;
		if (w->s[w->pos] == ',') {
			w->pos++;
			skip_ws(w);
			continue;
		}
		if (w->s[w->pos] != ']')
			return -EINVAL;
		w->pos++;
		break;
	}
	return 0;
}

/* The value at w->pos (whitespace before it already skipped). */
static int parse_value(struct jw *w, int depth, bool quiet, struct ctx *cx)
{
	if (w->pos >= w->len)
		return -EINVAL;
	switch (w->s[w->pos]) {
	case '{':
		if (depth >= MASK_JSON_DEPTH)
			return -E2BIG;
		return parse_object(w, depth, quiet, cx);
	case '[':
		if (depth >= MASK_JSON_DEPTH)
			return -E2BIG;
		return parse_array(w, depth, quiet, cx);
	default:
		return parse_scalar(w, quiet, cx);
	}
}

static int mask_json_body(const struct mask_rules *m, const char *body, size_t len, char **out,
			  size_t *outlen, struct mask_report *rep);

/* One body: its custom patterns share one time budget (mask_budget_body). */
int mask_json(const struct mask_rules *m, const char *body, size_t len, char **out,
	      size_t *outlen, struct mask_report *rep)
{
	int rc;

	mask_budget_body(true);
	rc = mask_json_body(m, body, len, out, outlen, rep);
	mask_budget_body(false);
	return rc;
}

static int mask_json_body(const struct mask_rules *m, const char *body, size_t len, char **out,
			  size_t *outlen, struct mask_report *rep)
{
	struct jw w = { .m = m, .s = (const uint8_t *)body, .len = len, .rep = rep };
	struct ctx root = { .name_len = SIZE_MAX };
	uint64_t st_stack[(MASK_JSON_DEPTH + 2) * STACK_PATHS];
	struct pbits pb_stack[STACK_PATHS];
	int rc;

	*out = NULL;
	*outlen = 0;
	if (rep)
		memset(rep, 0, sizeof(*rep));
	if (len > MASK_JSON_MAX)
		return -E2BIG;
	if (!body)
		return -EINVAL;
	w.detect = mask_has_detectors(m);
	w.minlen = mask_min_match(m);
	w.paths = mask_rules_paths(m, &w.npaths);
	w.arena = w.arena0;
	w.acap = sizeof(w.arena0);
	w.keys = w.keys0;
	w.kcap = sizeof(w.keys0);
	if (w.npaths) {
		size_t nst = (size_t)(MASK_JSON_DEPTH + 2) * w.npaths;
		struct pbits *pb;

		if (w.npaths <= STACK_PATHS) {
			w.st = st_stack;
			w.pb = pb = pb_stack;
		} else {
			w.st = malloc(nst * sizeof(*w.st));
			w.pb = pb = malloc(w.npaths * sizeof(*pb));
		}
		if (!w.st || !pb) {
			if (w.st != st_stack) {
				free(w.st);
				free(pb);
			}
			return -ENOMEM;
		}
		memset(w.st, 0, nst * sizeof(*w.st));
		memset(pb, 0, w.npaths * sizeof(*pb));
		for (size_t i = 0; i < w.npaths; i++) {
			const struct mask_path *mp = &w.paths[i];

			w.st[i] = 1;               /* step 0 pending at the root */
			pb[i].nsteps = mp->nsteps;
			for (unsigned b = 0; b < mp->nsteps; b++) {
				uint64_t bit = 1ull << b;

				if (mp->step[b].descendant)
					pb[i].desc |= bit;
				if (mp->step[b].kind == MSTEP_ANY) {
					pb[i].any |= bit;
				} else if (mp->step[b].kind == MSTEP_NAME) {
					unsigned h = key_hash((const uint8_t *)mp->step[b].name, mp->step[b].namelen);

					pb[i].name |= bit;
					w.names[h >> 6] |= 1ull << (h & 63);
				} else {
					pb[i].index |= bit;
					w.indexes = true;
				}
			}
		}
	}
	if ((rc = grow((void **)&w.out, &w.ocap, len + 1, OUT_MAX + 1)))
		goto done;
	skip_ws(&w);
	if (!(rc = parse_value(&w, 0, false, &root))) {
		skip_ws(&w);
		if (w.pos != w.len)
			rc = -EINVAL;
		else
			rc = flush(&w, w.pos);
	}
done:
	if (w.st != st_stack) {
		free(w.st);
		free((void *)w.pb);
	}
	free(w.dec);
	free(w.mbuf);
	if (w.arena != w.arena0)
		free(w.arena);
	if (w.keys != w.keys0)
		free(w.keys);
	if (rc) {
		free(w.out);
		if (rep)
			memset(rep, 0, sizeof(*rep));
		return rc;
	}
	w.out[w.on] = '\0';
	*out = w.out;
	*outlen = w.on;
	return 0;
}

/*
 * A lenient reader's view of a body mask_json() refused: what Python's
 * json, JavaScript's JSON.parse and Go's encoding/json accept beyond RFC
 * 8259 (duplicate names, the last one winning; \u0000; lone surrogates and
 * invalid UTF-8 in strings, read as U+FFFD; NaN and Infinity), after what
 * clients strip first (a UTF-8 BOM, as requests' .json() does; Angular's
 * XSSI prefix ")]}'"), and values one after another (NDJSON). Only
 * validated: quiet, no output, no paths.
 */
int mask_json_lenient(const char *body, size_t len)
{
	struct jw w = { .s = (const uint8_t *)body, .len = len, .lenient = true };
	struct ctx root = { .name_len = SIZE_MAX };
	bool any = false;
	int rc = 0;

	if (!body)
		return -EINVAL;
	if (len > MASK_JSON_MAX)
		return 0;   /* too large to tell: never taken for text */
	if (len >= 3 && memcmp(body, "\xef\xbb\xbf", 3) == 0)
		w.pos = 3;
	if (len - w.pos >= 4 && memcmp(body + w.pos, ")]}'", 4) == 0) {
		w.pos += 4;
		if (w.pos < len && body[w.pos] == ',')
			w.pos++;
	}
	w.arena = w.arena0;
	w.acap = sizeof(w.arena0);
	w.keys = w.keys0;
	w.kcap = sizeof(w.keys0);
	for (;;) {
		skip_ws(&w);
		if (w.pos >= w.len)
			break;
		if ((rc = parse_value(&w, 0, true, &root)))
			break;
		any = true;
	}
	free(w.dec);
	free(w.mbuf);
	if (w.arena != w.arena0)
		free(w.arena);
	if (w.keys != w.keys0)
		free(w.keys);
	if (rc == -E2BIG)
		return 0;   /* too deep to tell: never taken for text */
	if (rc)
		return rc;
	return any ? 0 : -EINVAL;
}
