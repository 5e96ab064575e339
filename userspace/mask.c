// SPDX-License-Identifier: Apache-2.0
/*
 * mask: compiling the union of policy masks and content masking of values.
 * JSON bodies and JSON paths are in mask_json.c.
 *
 * The fixed detectors are hand-written byte scanners, not one big regex:
 * they run on every result value of every masked query, so each is a single
 * forward pass that looks only at its own anchor bytes (a digit starting a
 * group, '@', '+', "ey", a key prefix...), never backtracks further than one
 * bounded token, and needs no allocation or UTF-8 decoding. The checksum
 * validators (Luhn, mod-97, SSA ranges, JWT header) are code anyway. PCRE2
 * is used only for the policy's own regex: patterns, with match limits.
 *
 * Every detector is an iterator "next match starting at or after from";
 * mask_run() merges the iterators in start order into a union of intervals
 * and writes one MASK_TOKEN per merged interval. Each detector's own matches
 * do not overlap, so every iterator only moves forward: linear passes.
 */
#include "mask.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "policy.h"

enum det {
	DET_CARD, DET_EMAIL, DET_SSN, DET_IBAN, DET_PHONE, DET_JWT, DET_APIKEY,
	DET__FIXED
};

static const char *const det_names[DET__FIXED] = {
	[DET_CARD] = "credit_card", [DET_EMAIL] = "email", [DET_SSN] = "us_ssn",
	[DET_IBAN] = "iban", [DET_PHONE] = "phone", [DET_JWT] = "jwt",
	[DET_APIKEY] = "api_key",
};

/* PCRE2 limits for custom patterns: far above what a sane pattern needs on
 * a result value, far below what turns (a+)+$ into minutes. A hit masks the
 * whole value (see mask.h). */
#define RE_MATCH_LIMIT  200000u
#define RE_DEPTH_LIMIT  10000u
#define RE_HEAP_KIB     8192u
/* PCRE2's limits bound one match; a value can hold many matches that each
 * cost nearly the limit ("x(a+)+y|x" over "xaaaaaaaaaaaaaaaa" repeated:
 * half a second for 34 KB). Custom patterns get this much of the thread's
 * CPU time per value (its raw and decoded views together), and a JSON body
 * (mask_json) RE_BODY_BUDGET_NS for all its values, counted from its first
 * custom-pattern call; then the value is masked whole (fail closed). The
 * clock is read every RE_CLOCK_EVERY matches (a system call), and never for
 * a body no custom pattern runs on (make bench's small JSON answers: the
 * reading was 7% of the workers' time when every body took one). */
#define RE_VALUE_BUDGET_NS (50ull * 1000 * 1000)
#define RE_BODY_BUDGET_NS  (1000ull * 1000 * 1000)
#define RE_CLOCK_EVERY     8
#define RE_CHUNK           64   /* start positions per pcre2_match() call (next_re) */
#define RE_MAX_PATTERN  4096u
#define JWT_MAX_HEADER  8192u     /* encoded header chars; a bigger one is not a JWT */

struct mask_rules {
	unsigned det;                  /* 1u << enum det */
	size_t minlen;                 /* shortest possible match (see det_minlen) */
	bool digits_only;              /* possible() needs no class but digits */
	pcre2_code *re[MASK_MAX_REGEX];
	size_t nre;
	pcre2_match_context *mctx;
	char **cols;
	size_t ncols;
	struct mask_path *paths;
	size_t npaths;
};

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

/* ---- byte classes -------------------------------------------------------- */

static inline bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
static inline bool is_alpha(uint8_t c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
static inline bool is_alnum(uint8_t c) { return is_digit(c) || is_alpha(c); }
static inline bool is_b64url(uint8_t c) { return is_alnum(c) || c == '-' || c == '_'; }
static inline bool is_upnum(uint8_t c) { return is_digit(c) || (c >= 'A' && c <= 'Z'); }

/* RFC 5322 atext plus '.', and any non-ASCII byte (RFC 6531 local parts),
 * but not '*': no real address has one, and leaving it out keeps the mask
 * token inert ("****@x.org" after masking is not a new address). */
static inline bool is_atext(uint8_t c)
{
	return is_alnum(c) || c >= 0x80 || (c && strchr("!#$%&'+/=?^_`{|}~.-", c));
}

static inline bool is_dchar(uint8_t c) { return is_alnum(c) || c == '-' || c >= 0x80; }

/* ---- credit_card --------------------------------------------------------- */

/* Issuer prefix and that brand's lengths (Luhn alone matches ~10% of all
 * numbers, millisecond timestamps included). */
static bool card_issuer_ok(const uint8_t *d, int n)
{
	int p2 = d[0] * 10 + d[1], p3 = p2 * 10 + d[2], p4 = p3 * 10 + d[3];

	if (d[0] == 4)                                          /* Visa */
		return n == 13 || n == 16 || n == 19;
	if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) /* Mastercard */
		return n == 16;
	if (p2 == 34 || p2 == 37)                               /* Amex */
		return n == 15;
	if (p4 == 6011 || p2 == 65 || (p3 >= 644 && p3 <= 649)) /* Discover */
		return n >= 16;
	if (p4 >= 3528 && p4 <= 3589)                           /* JCB */
		return n >= 16;
	if (p2 == 36 || p2 == 38 || (p3 >= 300 && p3 <= 305))   /* Diners */
		return n >= 14;
	if (p2 == 62)                                           /* UnionPay */
		return n >= 16;
	return false;
}

static bool luhn_ok(const uint8_t *d, int n)
{
	int sum = 0;

	for (int i = 0; i < n; i++) {
		int v = d[n - 1 - i];

		if (i & 1)
			v = v * 2 > 9 ? v * 2 - 9 : v * 2;
		sum += v;
	}
	return sum % 10 == 0;
}

/*
 * The separator between a card's digit groups at s[q]: its length, 0 for
 * none. ' ', '-' or '.', and the spaces that keep the groups on one line
 * where text is laid out: U+00A0 NO-BREAK SPACE (HTML's &nbsp;), U+2007
 * FIGURE SPACE, U+2009 THIN SPACE and U+202F NARROW NO-BREAK SPACE (what
 * locale formatting writes); a reader sees the same card, the detectors
 * saw none (found by review).
 */
static size_t card_sep(const uint8_t *s, size_t len, size_t q)
{
	if (q < len && (s[q] == ' ' || s[q] == '-' || s[q] == '.'))
		return 1;
	if (q + 1 < len && s[q] == 0xc2 && s[q + 1] == 0xa0)
		return 2;
	if (q + 2 < len && s[q] == 0xe2 && s[q + 1] == 0x80 &&
	    (s[q + 2] == 0x87 || s[q + 2] == 0x89 || s[q + 2] == 0xaf))
		return 3;
	return 0;
}

/* A card is a run of whole digit groups (a single separator between groups: card_sep()),
 * starting at a group start, 13-19 digits; the longest valid run from each
 * group start wins. A group is a maximal digit run, so digits inside a
 * longer run are never a card on their own. */
static bool next_card(const uint8_t *s, size_t len, size_t from, size_t *ms, size_t *me)
{
	for (size_t p = from; p + 13 <= len; p++) {
		uint8_t d[19];
		size_t q = p, best = 0;
		int nd = 0;

		if (!is_digit(s[p]) || (p > 0 && is_digit(s[p - 1])))
			continue;
		for (;;) {
			size_t sl;

			while (q < len && is_digit(s[q]) && nd <= 19) {
				if (nd < 19)
					d[nd] = s[q] - '0';
				nd++;
				q++;
			}
			if (nd > 19 || (q < len && is_digit(s[q])))
				break;
			if (nd >= 13 && card_issuer_ok(d, nd) && luhn_ok(d, nd))
				best = q;
			if ((sl = card_sep(s, len, q)) && q + sl < len && is_digit(s[q + sl]))
				q += sl;
			else
				break;
		}
		if (best) {
			*ms = p;
			*me = best;
			return true;
		}
	}
	return false;
}

/* ---- us_ssn -------------------------------------------------------------- */

static bool next_ssn(const uint8_t *s, size_t len, size_t from, size_t *ms, size_t *me)
{
	for (size_t p = from; p + 11 <= len; p++) {
		const uint8_t *x = s + p;
		int area, group, serial;

		if (!is_digit(x[0]) || (p > 0 && is_digit(s[p - 1])))
			continue;
		if (!is_digit(x[1]) || !is_digit(x[2]) || x[3] != '-' || !is_digit(x[4]) ||
		    !is_digit(x[5]) || x[6] != '-' || !is_digit(x[7]) || !is_digit(x[8]) ||
		    !is_digit(x[9]) || !is_digit(x[10]) || (p + 11 < len && is_digit(x[11])))
			continue;
		area = (x[0] - '0') * 100 + (x[1] - '0') * 10 + (x[2] - '0');
		group = (x[4] - '0') * 10 + (x[5] - '0');
		serial = (x[7] - '0') * 1000 + (x[8] - '0') * 100 + (x[9] - '0') * 10 + (x[10] - '0');
		if (area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0)
			continue;
		*ms = p;
		*me = p + 11;
		return true;
	}
	return false;
}

/* ---- email --------------------------------------------------------------- */

static bool tld_ok(const uint8_t *t, size_t n)
{
	bool alpha = true;

	if (n < 2)
		return false;
	if (n > 4 && (t[0] | 0x20) == 'x' && (t[1] | 0x20) == 'n' && t[2] == '-' && t[3] == '-')
		return true;                 /* punycode TLD */
	for (size_t i = 0; i < n; i++) {
		if (t[i] >= 0x80)
			return true;         /* IDN TLD in UTF-8 */
		alpha = alpha && is_alpha(t[i]);
	}
	return alpha;
}

/* Anchored on '@': the local part is scanned backwards (never before from,
 * never across another '@'), the domain forwards; both scans stop at '@',
 * so every byte is looked at a bounded number of times. */
static bool next_email(const uint8_t *s, size_t len, size_t from, size_t *ms, size_t *me)
{
	size_t p = from;
	const uint8_t *at;

	while (p < len && (at = memchr(s + p, '@', len - p))) {
		size_t a = (size_t)(at - s), ls = a, q = a + 1, good = 0;
		int labels = 0;

		while (ls > from && is_atext(s[ls - 1]) && s[ls - 1] != '@')
			ls--;
		while (ls < a && s[ls] == '.')
			ls++;
		p = a + 1;
		if (ls == a)
			continue;
		for (;;) {
			size_t l = q;

			while (q < len && is_dchar(s[q]))
				q++;
			if (q == l)
				break;
			if (++labels >= 2 && tld_ok(s + l, q - l))
				good = q;
			if (q + 1 < len && s[q] == '.' && is_dchar(s[q + 1]))
				q++;
			else
				break;
		}
		if (good) {
			*ms = ls;
			*me = good;
			return true;
		}
	}
	return false;
}

/* ---- iban ---------------------------------------------------------------- */

/* SWIFT IBAN registry lengths; a country not listed is accepted at 15-34. */
static const struct { char cc[3]; uint8_t len; } iban_len[] = {
	{"AD",24},{"AE",23},{"AL",28},{"AT",20},{"AZ",28},{"BA",20},{"BE",16},{"BG",22},
	{"BH",22},{"BR",29},{"BY",28},{"CH",21},{"CR",22},{"CY",28},{"CZ",24},{"DE",22},
	{"DK",18},{"DO",28},{"EE",20},{"EG",29},{"ES",24},{"FI",18},{"FO",18},{"FR",27},
	{"GB",22},{"GE",22},{"GI",23},{"GL",18},{"GR",27},{"GT",28},{"HR",21},{"HU",28},
	{"IE",22},{"IL",23},{"IQ",23},{"IS",26},{"IT",27},{"JO",30},{"KW",30},{"KZ",20},
	{"LB",28},{"LC",32},{"LI",21},{"LT",20},{"LU",20},{"LV",21},{"MC",27},{"MD",24},
	{"ME",22},{"MK",19},{"MR",27},{"MT",31},{"MU",30},{"NL",18},{"NO",15},{"PK",24},
	{"PL",28},{"PS",29},{"PT",25},{"QA",29},{"RO",24},{"RS",22},{"SA",24},{"SC",31},
	{"SE",24},{"SI",19},{"SK",24},{"SM",27},{"ST",25},{"SV",28},{"TL",23},{"TN",24},
	{"TR",26},{"UA",29},{"VA",22},{"VG",24},{"XK",20},
};

static unsigned iban_expected(uint8_t a, uint8_t b)
{
	a &= ~0x20;
	b &= ~0x20;
	for (size_t i = 0; i < sizeof(iban_len) / sizeof(iban_len[0]); i++)
		if (iban_len[i].cc[0] == a && iban_len[i].cc[1] == b)
			return iban_len[i].len;
	return 0;
}

static unsigned mod97_add(unsigned r, uint8_t c)
{
	if (is_digit(c))
		return (r * 10 + (c - '0')) % 97;
	return (r * 100 + 10 + ((c | 0x20) - 'a')) % 97;
}

/* ISO 13616: BBAN, then country and check digits, read as one number. The
 * remainder over the BBAN is kept as characters arrive, so every possible
 * end is checked in O(1). */
static bool next_iban(const uint8_t *s, size_t len, size_t from, size_t *ms, size_t *me)
{
	for (size_t p = from; p + 15 <= len; p++) {
		unsigned want, r = 0, n = 4;
		size_t q = p + 4, best = 0;

		if (!is_digit(s[p + 2]) || !is_digit(s[p + 3]) || !is_alpha(s[p]) ||
		    !is_alpha(s[p + 1]) || (p > 0 && is_alnum(s[p - 1])))
			continue;
		want = iban_expected(s[p], s[p + 1]);
		while (n < 34) {
			if (q < len && is_alnum(s[q])) {
				r = mod97_add(r, s[q++]);
				n++;
			} else if (n % 4 == 0 && q + 1 < len && s[q] == ' ' && is_alnum(s[q + 1])) {
				q++;
				continue;
			} else {
				break;
			}
			if (n >= 15 && (!want || n == want) && (q == len || !is_alnum(s[q]))) {
				unsigned t = r;

				for (int i = 0; i < 4; i++)
					t = mod97_add(t, s[p + i]);
				if (t == 1)
					best = q;
			}
		}
		if (best) {
			*ms = p;
			*me = best;
			return true;
		}
	}
	return false;
}

/* ---- phone --------------------------------------------------------------- */

static bool is_psep(uint8_t c) { return c == ' ' || c == '-' || c == '.' || c == '(' || c == ')'; }

/* '+' then digit groups with at most two separator bytes between them
 * ("+1 (415) 555-2671"); the longest run of whole groups with 8-15 digits. */
static bool e164_at(const uint8_t *s, size_t len, size_t p, size_t *me)
{
	size_t q = p + 1, best = 0;
	unsigned nd = 0;

	if (q >= len || !is_digit(s[q]) || s[q] == '0' || (p > 0 && (is_alnum(s[p - 1]) || s[p - 1] == '+')))
		return false;
	for (;;) {
		size_t g = q;

		while (q < len && is_digit(s[q]))
			q++;
		if (nd + (q - g) > 15)
			break;
		nd += (unsigned)(q - g);
		if (nd >= 8)
			best = q;
		if (q + 1 < len && is_psep(s[q]) && is_digit(s[q + 1]))
			q++;
		else if (q + 2 < len && is_psep(s[q]) && is_psep(s[q + 1]) && is_digit(s[q + 2]))
			q += 2;
		else
			break;
	}
	if (best && (best == len || !is_digit(s[best]))) {
		*me = best;
		return true;
	}
	return false;
}

static bool nxx(const uint8_t *x) { return x[0] >= '2' && x[0] <= '9' && is_digit(x[1]) && is_digit(x[2]); }
static bool d4(const uint8_t *x) { return is_digit(x[0]) && is_digit(x[1]) && is_digit(x[2]) && is_digit(x[3]); }

/* NANP: (NXX) NXX-XXXX, (NXX)NXX-XXXX, NXX-NXX-XXXX, NXX.NXX.XXXX. */
static bool nanp_at(const uint8_t *s, size_t len, size_t p, size_t *me)
{
	const uint8_t *x = s + p;
	size_t end;

	if (p > 0 && is_digit(s[p - 1]))
		return false;
	if (x[0] == '(') {
		size_t k = p + 5;

		if (len - p < 13 || !nxx(x + 1) || x[4] != ')')
			return false;
		if (s[k] == ' ')
			k++;
		if (k + 8 > len || !nxx(s + k) || s[k + 3] != '-' || !d4(s + k + 4))
			return false;
		end = k + 8;
	} else {
		if (len - p < 12 || !nxx(x) || (x[3] != '-' && x[3] != '.') || !nxx(x + 4) ||
		    x[7] != x[3] || !d4(x + 8))
			return false;
		end = p + 12;
	}
	if (end < len && is_digit(s[end]))
		return false;
	*me = end;
	return true;
}

static bool next_phone(const uint8_t *s, size_t len, size_t from, size_t *ms, size_t *me)
{
	for (size_t p = from; p < len; p++) {
		uint8_t c = s[p];

		if ((c == '+' && e164_at(s, len, p, me)) ||
		    ((c == '(' || (c >= '2' && c <= '9')) && nanp_at(s, len, p, me))) {
			*ms = p;
			return true;
		}
	}
	return false;
}

/* ---- jwt ----------------------------------------------------------------- */

static int b64url_val(uint8_t c)
{
	if (c >= 'A' && c <= 'Z') return c - 'A';
	if (c >= 'a' && c <= 'z') return c - 'a' + 26;
	if (is_digit(c)) return c - '0' + 52;
	if (c == '-') return 62;
	if (c == '_') return 63;
	return -1;
}

/* Does the segment decode to a JSON object that names "alg"? A cheap check
 * (no JSON parser on the hot path): first byte '{' after blanks, and the
 * text "alg" in quotes somewhere in it. */
static bool jwt_header_ok(const uint8_t *seg, size_t n)
{
	uint8_t dec[JWT_MAX_HEADER * 3 / 4 + 3];
	size_t o = 0, i = 0;
	uint32_t acc = 0;
	int bits = 0;

	if (n < 8 || n > JWT_MAX_HEADER || n % 4 == 1)
		return false;
	for (; i < n; i++) {
		acc = (acc << 6) | (uint32_t)b64url_val(seg[i]);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			dec[o++] = (uint8_t)(acc >> bits);
		}
	}
	for (i = 0; i < o && (dec[i] == ' ' || dec[i] == '\t' || dec[i] == '\r' || dec[i] == '\n'); i++)
		;
	return i < o && dec[i] == '{' && memmem(dec, o, "\"alg\"", 5);
}

static size_t b64run(const uint8_t *s, size_t len, size_t q)
{
	while (q < len && is_b64url(s[q]))
		q++;
	return q;
}

static bool next_jwt(const uint8_t *s, size_t len, size_t from, size_t *ms, size_t *me)
{
	size_t p = from;

	while (p < len) {
		size_t e1, e2, e3;

		if (s[p] != 'e' || (p > 0 && is_b64url(s[p - 1]))) {
			p++;
			continue;
		}
		e1 = b64run(s, len, p);
		if (e1 < len && s[e1] == '.' && (e2 = b64run(s, len, e1 + 1)) > e1 + 1 &&
		    e2 < len && s[e2] == '.' && jwt_header_ok(s + p, e1 - p)) {
			e3 = b64run(s, len, e2 + 1);
			/* JWE compact form has five segments: take them all. */
			while (e3 + 1 < len && s[e3] == '.' && is_b64url(s[e3 + 1]))
				e3 = b64run(s, len, e3 + 1);
			*ms = p;
			*me = e3;
			return true;
		}
		p = e1;
	}
	return false;
}

/* ---- api_key ------------------------------------------------------------- */

static bool is_keychar(uint8_t c) { return is_b64url(c); }

static size_t run_of(const uint8_t *s, size_t len, size_t q, bool (*ok)(uint8_t))
{
	while (q < len && ok(s[q]))
		q++;
	return q;
}

static bool alnum_fn(uint8_t c) { return is_alnum(c); }
static bool upnum_fn(uint8_t c) { return is_upnum(c); }
static bool alnum_us_fn(uint8_t c) { return is_alnum(c) || c == '_'; }
static bool alnum_dash_fn(uint8_t c) { return is_alnum(c) || c == '-'; }

static inline bool starts(const uint8_t *s, size_t len, size_t p, const char *pre)
{
	size_t i = 0;

	for (; pre[i]; i++)             /* short literals: no strlen/memcmp calls */
		if (p + i >= len || s[p + i] != (uint8_t)pre[i])
			return false;
	return true;
}

/* Length of a key shape starting at p, or 0. The shape's tail must end at
 * a byte that cannot continue a key. */
static size_t apikey_at(const uint8_t *s, size_t len, size_t p)
{
	static const char *const aws[] = { "AKIA", "ASIA", "ABIA", "ACCA" };
	static const char *const gh[] = { "ghp_", "gho_", "ghu_", "ghs_", "ghr_" };
	static const char *const stripe[] = { "sk_live_", "rk_live_", "sk_test_", "rk_test_" };
	size_t e, t;

	switch (s[p]) {
	case 'A':
		for (size_t i = 0; i < 4; i++)
			if (starts(s, len, p, aws[i]) && run_of(s, len, p + 4, upnum_fn) == p + 20 &&
			    (p + 20 == len || !is_keychar(s[p + 20])))
				return 20;
		if (starts(s, len, p, "AIza") && (e = run_of(s, len, p + 4, is_keychar)) == p + 39)
			return 39;
		return 0;
	case 'g':
		for (size_t i = 0; i < 5; i++)
			if (starts(s, len, p, gh[i])) {
				e = run_of(s, len, p + 4, alnum_fn);
				return e - p >= 34 && e - p <= 259 && (e == len || !is_keychar(s[e])) ? e - p : 0;
			}
		if (starts(s, len, p, "github_pat_")) {
			e = run_of(s, len, p + 11, alnum_us_fn);
			return e - p >= 11 + 22 && (e == len || !is_keychar(s[e])) ? e - p : 0;
		}
		return 0;
	case 'x':
		if (len - p > 5 && s[p + 1] == 'o' && s[p + 2] == 'x' && strchr("abprs", s[p + 3]) &&
		    s[p + 3] && s[p + 4] == '-') {
			e = run_of(s, len, p + 5, alnum_dash_fn);
			return e - p >= 15 && (e == len || !is_keychar(s[e])) ? e - p : 0;
		}
		return 0;
	case 's':
	case 'r':
		for (size_t i = 0; i < 4; i++)
			if (starts(s, len, p, stripe[i])) {
				e = run_of(s, len, p + 8, alnum_fn);
				return e - p >= 8 + 16 && (e == len || !is_keychar(s[e])) ? e - p : 0;
			}
		if (s[p] == 's' && starts(s, len, p, "sk-")) {
			bool letter = false, digit = false;

			e = run_of(s, len, p + 3, is_keychar);
			for (t = p + 3; t < e; t++) {
				letter = letter || is_alpha(s[t]);
				digit = digit || is_digit(s[t]);
			}
			return e - p >= 3 + 20 && letter && digit ? e - p : 0;
		}
		return 0;
	}
	return 0;
}

static bool next_apikey(const uint8_t *s, size_t len, size_t from, size_t *ms, size_t *me)
{
	for (size_t p = from; p + 15 <= len; p++) {
		uint8_t c = s[p];
		size_t n;

		if (c != 'A' && c != 'g' && c != 'x' && c != 's' && c != 'r')
			continue;
		if (p > 0 && is_keychar(s[p - 1]))
			continue;
		if ((n = apikey_at(s, len, p))) {
			*ms = p;
			*me = p + n;
			return true;
		}
	}
	return false;
}

typedef bool (*next_fn)(const uint8_t *s, size_t len, size_t from, size_t *ms, size_t *me);

/*
 * The shortest text each fixed detector can match, read off its scanner:
 * a value shorter than the smallest of the enabled ones is given back
 * unchanged without a look (most JSON member names and short values).
 *   card     next_card looks only at p + 13 <= len (13 digits at least)
 *   email    a local byte, '@', two labels of which the last (the TLD) has
 *            2+ bytes, a '.' between them: "a@b.cc", 6
 *   ssn      next_ssn looks only at p + 11 <= len ("ddd-dd-dddd")
 *   iban     next_iban looks only at p + 15 <= len
 *   phone    E.164: '+' and 8+ digits, 9; NANP needs 12 (len - p >= 12)
 *   jwt      possible() asks for 20 (the scanner alone: an 8-byte header,
 *            '.', a payload byte, '.': 11)
 *   api_key  next_apikey looks only at p + 15 <= len
 * tests/unit/test_mask.c masks a value of exactly each length, so none of
 * these can be too high without a test failing.
 */
static const uint8_t det_minlen[DET__FIXED] = {
	[DET_CARD] = 13, [DET_EMAIL] = 6, [DET_SSN] = 11, [DET_IBAN] = 15,
	[DET_PHONE] = 9, [DET_JWT] = 20, [DET_APIKEY] = 15,
};

static const next_fn det_next[DET__FIXED] = {
	[DET_CARD] = next_card, [DET_EMAIL] = next_email, [DET_SSN] = next_ssn,
	[DET_IBAN] = next_iban, [DET_PHONE] = next_phone, [DET_JWT] = next_jwt,
	[DET_APIKEY] = next_apikey,
};

/* ---- custom patterns ----------------------------------------------------- */

static pthread_key_t md_key;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static bool md_key_ok;

struct thread_re {
	pcre2_match_data *md;
	pcre2_match_context *ctx;   /* the limits, and an offset limit set per call */
};

static void md_free(void *p)
{
	struct thread_re *t = p;

	pcre2_match_data_free(t->md);
	pcre2_match_context_free(t->ctx);
	free(t);
}

static void md_init(void)
{
	md_key_ok = pthread_key_create(&md_key, md_free) == 0;
}

/* One match block per thread: compiled rules are shared, match data is not.
 * One ovector pair is enough, only the whole match is used. */
static struct thread_re *thread_re(void)
{
	struct thread_re *t;

	pthread_once(&md_once, md_init);
	if (!md_key_ok)
		return NULL;
	if ((t = pthread_getspecific(md_key)))
		return t;
	if (!(t = calloc(1, sizeof(*t))) || !(t->md = pcre2_match_data_create(1, NULL)) ||
	    !(t->ctx = pcre2_match_context_create(NULL)) || pthread_setspecific(md_key, t)) {
		if (t) {
			pcre2_match_data_free(t->md);
			pcre2_match_context_free(t->ctx);
		}
		free(t);
		return NULL;
	}
	pcre2_set_match_limit(t->ctx, RE_MATCH_LIMIT);
	pcre2_set_depth_limit(t->ctx, RE_DEPTH_LIMIT);
	pcre2_set_heap_limit(t->ctx, RE_HEAP_KIB);
	return t;
}

/* The budget of the value being scanned (match_spans), for next_re. */
struct budget;
static __thread struct budget *cur_budget;
static bool budget_out(struct budget *b);

/* 1 match, 0 none, -1 error (a limit, or anything else: fail closed). */
static int next_re(const struct mask_rules *m, const pcre2_code *re, const uint8_t *s,
		   size_t len, size_t from, size_t *ms, size_t *me)
{
	struct thread_re *t = thread_re();
	pcre2_match_data *md = t ? t->md : NULL;

	(void)m;
	if (!md)
		return -1;
	while (from <= len) {
		/* PCRE2's match limit counts anew at each start position: a
		 * search that finds nothing over a long value can take that
		 * many steps at every one. Matches may start RE_CHUNK positions
		 * on per call, and the value's time is checked between calls. */
		size_t lim = len - from > RE_CHUNK ? from + RE_CHUNK : len;
		int rc;
		PCRE2_SIZE *ov;

		pcre2_set_offset_limit(t->ctx, lim);
		rc = pcre2_match(re, s, len, from, PCRE2_NO_UTF_CHECK, md, t->ctx);
		if (rc == PCRE2_ERROR_NOMATCH) {
			if (lim >= len)
				return 0;
			if (cur_budget && budget_out(cur_budget))
				return -1;
			from = lim + 1;
			while (from < len && (s[from] & 0xc0) == 0x80)
				from++;
			continue;
		}
		if (rc < 0)
			return -1;
		ov = pcre2_get_ovector_pointer(md);
		if (ov[1] < ov[0] || ov[0] < from || ov[1] > len)
			return -1;                /* \K tricks: refuse */
		if (ov[1] > ov[0]) {
			*ms = ov[0];
			*me = ov[1];
			return 1;
		}
		/* Empty match (lookaround-only paths): step one character on. */
		from = ov[0] + 1;
		while (from < len && (s[from] & 0xc0) == 0x80)
			from++;
	}
	return 0;
}

static int re_compile(const char *pat, pcre2_code **out, char *why, size_t whylen)
{
	size_t n = strlen(pat);
	int errcode, rc;
	PCRE2_SIZE erroff;
	pcre2_code *re;
	pcre2_match_data *md;

	*out = NULL;
	if (n == 0) {
		setwhy(why, whylen, "regex: pattern is empty");
		return -EINVAL;
	}
	if (n > RE_MAX_PATTERN) {
		setwhy(why, whylen, "regex: pattern longer than %u bytes", RE_MAX_PATTERN);
		return -EINVAL;
	}
	/* PCRE2 validates the pattern's own UTF-8 here; subjects are checked by
	 * mask_value() before every use, hence NO_UTF_CHECK at match time. \C
	 * could split a character, so it is refused. */
	re = pcre2_compile((PCRE2_SPTR)pat, n, PCRE2_UTF | PCRE2_NEVER_BACKSLASH_C | PCRE2_USE_OFFSET_LIMIT,
			   &errcode, &erroff, NULL);
	if (!re) {
		PCRE2_UCHAR msg[128];

		pcre2_get_error_message(errcode, msg, sizeof(msg));
		setwhy(why, whylen, "regex: %s at offset %zu", (const char *)msg, (size_t)erroff);
		return -EINVAL;
	}
	md = pcre2_match_data_create(1, NULL);
	if (!md) {
		pcre2_code_free(re);
		return -ENOMEM;
	}
	rc = pcre2_match(re, (PCRE2_SPTR)"", 0, 0, 0, md, NULL);
	pcre2_match_data_free(md);
	if (rc >= 0) {
		pcre2_code_free(re);
		setwhy(why, whylen, "regex: pattern matches the empty string");
		return -EINVAL;
	}
	(void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);   /* interpreter if no JIT */
	*out = re;
	return 0;
}

/* ---- detector specs ------------------------------------------------------ */

static int det_lookup(const char *spec)
{
	for (int i = 0; i < DET__FIXED; i++)
		if (strcmp(spec, det_names[i]) == 0)
			return i;
	return -1;
}

int mask_detector_check(const char *spec, char *why, size_t whylen)
{
	pcre2_code *re;
	int rc;

	if (!spec) {
		setwhy(why, whylen, "missing detector");
		return -EINVAL;
	}
	if (strncmp(spec, "regex:", 6) == 0) {
		rc = re_compile(spec + 6, &re, why, whylen);
		pcre2_code_free(re);
		return rc;
	}
	if (det_lookup(spec) >= 0)
		return 0;
	if (strcasecmp(spec, "ssn") == 0)
		setwhy(why, whylen, "unknown detector (did you mean 'us_ssn'?)");
	else
		setwhy(why, whylen, "unknown detector (known: credit_card, email, us_ssn, iban, "
		       "phone, jwt, api_key, regex:<PCRE2 pattern>)");
	return -EINVAL;
}

/* ---- compile ------------------------------------------------------------- */

void mask_free(struct mask_rules *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nre; i++)
		pcre2_code_free(m->re[i]);
	pcre2_match_context_free(m->mctx);
	for (size_t i = 0; i < m->ncols; i++)
		free(m->cols[i]);
	free(m->cols);
	for (size_t i = 0; i < m->npaths; i++)
		mask_path_release(&m->paths[i]);
	free(m->paths);
	free(m);
}

static int add_detector(struct mask_rules *m, const char *spec, char *err, size_t errlen)
{
	char why[192];
	int d, rc;

	if (strncmp(spec, "regex:", 6) != 0) {
		if ((d = det_lookup(spec)) < 0) {
			mask_detector_check(spec, why, sizeof(why));
			setwhy(err, errlen, "detector '%.64s': %s", spec, why);
			return -EINVAL;
		}
		m->det |= 1u << d;
		return 0;
	}
	if (m->nre == MASK_MAX_REGEX) {
		setwhy(err, errlen, "more than %d regex: detectors", MASK_MAX_REGEX);
		return -EINVAL;
	}
	rc = re_compile(spec + 6, &m->re[m->nre], why, sizeof(why));
	if (rc) {
		setwhy(err, errlen, "detector '%.64s': %s", spec, why);
		return rc;
	}
	m->nre++;
	return 0;
}

static int add_strv(char ***v, size_t *n, const struct policy_strv *sv)
{
	char **nv;

	if (!sv->n)
		return 0;
	nv = realloc(*v, (*n + sv->n) * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	*v = nv;
	for (size_t i = 0; i < sv->n; i++) {
		if (!(nv[*n] = strdup(sv->v[i] ? sv->v[i] : "")))
			return -ENOMEM;
		(*n)++;
	}
	return 0;
}

static int add_mask(struct mask_rules *m, const struct policy_mask *pm, char *err, size_t errlen)
{
	struct mask_path *np;
	char why[192];
	int rc;

	for (size_t i = 0; i < pm->detectors.n; i++)
		if ((rc = add_detector(m, pm->detectors.v[i] ? pm->detectors.v[i] : "", err, errlen)))
			return rc;
	if ((rc = add_strv(&m->cols, &m->ncols, &pm->columns))) {
		setwhy(err, errlen, "out of memory");
		return rc;
	}
	if (!pm->json.n)
		return 0;
	np = realloc(m->paths, (m->npaths + pm->json.n) * sizeof(*np));
	if (!np) {
		setwhy(err, errlen, "out of memory");
		return -ENOMEM;
	}
	m->paths = np;
	for (size_t i = 0; i < pm->json.n; i++) {
		const char *path = pm->json.v[i] ? pm->json.v[i] : "";

		if ((rc = mask_path_parse(path, &np[m->npaths], why, sizeof(why)))) {
			setwhy(err, errlen, "json path '%.64s': %s", path, why);
			return rc;
		}
		m->npaths++;
	}
	return 0;
}

struct mask_rules *mask_compile(const struct policy_mask *const *masks, size_t n,
				char *err, size_t errlen)
{
	struct mask_rules *m = calloc(1, sizeof(*m));

	setwhy(err, errlen, "%s", "");
	if (!m || !(m->mctx = pcre2_match_context_create(NULL))) {
		setwhy(err, errlen, "out of memory");
		mask_free(m);
		return NULL;
	}
	pcre2_set_match_limit(m->mctx, RE_MATCH_LIMIT);
	pcre2_set_depth_limit(m->mctx, RE_DEPTH_LIMIT);
	pcre2_set_heap_limit(m->mctx, RE_HEAP_KIB);
	for (size_t i = 0; i < n; i++) {
		if (!masks || !masks[i] || !masks[i]->present)
			continue;
		if (add_mask(m, masks[i], err, errlen)) {
			mask_free(m);
			return NULL;
		}
	}
	/* possible() asks the digit count (card, iban), the length (iban,
	 * api_key) and nothing else of these; the others need a class. */
	m->digits_only = !(m->det & ~((1u << DET_CARD) | (1u << DET_IBAN) | (1u << DET_APIKEY)));
	/* A custom pattern can match one byte (empty matches are refused). */
	m->minlen = m->nre ? 1 : SIZE_MAX;
	for (int d = 0; d < DET__FIXED; d++)
		if ((m->det & (1u << d)) && det_minlen[d] < m->minlen)
			m->minlen = det_minlen[d];
	return m;
}

size_t mask_min_match(const struct mask_rules *m)
{
	return mask_has_detectors(m) ? m->minlen : SIZE_MAX;
}

bool mask_is_empty(const struct mask_rules *m)
{
	return !m || (!m->det && !m->nre && !m->ncols && !m->npaths);
}

bool mask_has_detectors(const struct mask_rules *m)
{
	return m && (m->det || m->nre);
}

bool mask_has_json(const struct mask_rules *m)
{
	return m && m->npaths;
}

const struct mask_path *mask_rules_paths(const struct mask_rules *m, size_t *n)
{
	*n = m ? m->npaths : 0;
	return m ? m->paths : NULL;
}

/* Compared part by part: no buffer to build, no length limit to get wrong. */
static bool part_eq(const char **sp, const char *part, char sep)
{
	size_t n = strlen(part);

	if (strncmp(*sp, part, n) != 0 || (*sp)[n] != sep)
		return false;
	*sp += n + (sep ? 1 : 0);
	return true;
}

bool mask_column_named(const struct mask_rules *m, const char *schema, const char *table,
		       const char *column)
{
	if (!m || !schema || !table || !column)
		return false;
	for (size_t i = 0; i < m->ncols; i++) {
		const char *s = m->cols[i];

		if (part_eq(&s, schema, '.') && part_eq(&s, table, '.') && part_eq(&s, column, '\0'))
			return true;
	}
	return false;
}

const char *const *mask_column_list(const struct mask_rules *m, size_t *n)
{
	*n = m ? m->ncols : 0;
	return m ? (const char *const *)m->cols : NULL;
}

/* ---- masking a value ----------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[i] (1..4), or 0. */
static size_t utf8_seq(const uint8_t *s, size_t n, size_t i)
{
	uint8_t c = s[i];
	size_t k;
	uint32_t cp, min;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) { k = 1; cp = c & 0x1f; min = 0x80; }
	else if (c >= 0xe0 && c <= 0xef) { k = 2; cp = c & 0x0f; min = 0x800; }
	else if (c >= 0xf0 && c <= 0xf4) { k = 3; cp = c & 0x07; min = 0x10000; }
	else return 0;
	if (n - i <= k)
		return 0;
	for (size_t j = 1; j <= k; j++) {
		if ((s[i + j] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i + j] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return k + 1;
}

static bool utf8_valid(const uint8_t *s, size_t n)
{
	for (size_t i = 0, k; i < n; i += k)
		if (!(k = utf8_seq(s, n, i)))
			return false;
	return true;
}

/* Bytes that are not part of valid UTF-8 become '?' (one for one). */
static void utf8_fix(uint8_t *s, size_t n)
{
	for (size_t i = 0, k; i < n; i += k)
		if (!(k = utf8_seq(s, n, i))) {
			s[i] = '?';
			k = 1;
		}
}

struct cand {
	size_t s, e;
	bool live;
};

/* One cheap pass decides which fixed detectors can match at all: most
 * result values have no '@', fewer than 13 digits, no two dots. */
enum { C_DIGIT = 1, C_DOT = 2, C_AT = 4, C_PLUS = 8, C_NANPSEP = 16, C_DASH = 32 };

static const uint8_t cls[256] = {
	['0'] = C_DIGIT, ['1'] = C_DIGIT, ['2'] = C_DIGIT, ['3'] = C_DIGIT, ['4'] = C_DIGIT,
	['5'] = C_DIGIT, ['6'] = C_DIGIT, ['7'] = C_DIGIT, ['8'] = C_DIGIT, ['9'] = C_DIGIT,
	['.'] = C_DOT | C_NANPSEP, ['@'] = C_AT, ['+'] = C_PLUS, ['('] = C_NANPSEP,
	['-'] = C_DASH | C_NANPSEP,
};

/*
 * The classes of cls[] over s, 8 bytes at a time: the digit count is exact
 * (per byte b < 0x80, b + 0x50 has its top bit set iff b >= '0', b + 0x46
 * iff b > '9'; no carry leaves a byte; bytes >= 0x80 are dropped), and a
 * class is seen iff mask_bytes_eq() of the word and that byte is nonzero.
 */
static unsigned classes(const uint8_t *s, size_t len, bool digits_only, size_t *digits)
{
	const uint64_t ones = 0x0101010101010101ull, highs = ones * 0x80;
	uint64_t dot = 0, at = 0, plus = 0, paren = 0, dash = 0;
	size_t i = 0, nd = 0;
	unsigned seen = 0;

	/* The enabled detectors look at the digit count only (and the
	 * length): the other classes are not needed, not computed. */
	for (; digits_only && len - i >= 8; i += 8) {
		uint64_t x, y, dg;

		memcpy(&x, s + i, 8);
		y = x & ~highs;
		dg = (y + ones * 0x50) & ~(y + ones * 0x46) & ~x & highs;
		nd += (size_t)(((dg >> 7) * ones) >> 56);
	}
	for (; len - i >= 8; i += 8) {
		uint64_t x, y, dg;

		memcpy(&x, s + i, 8);
		y = x & ~highs;
		dg = (y + ones * 0x50) & ~(y + ones * 0x46) & ~x & highs;
		nd += (size_t)(((dg >> 7) * ones) >> 56);
		dot |= mask_bytes_eq(x, '.');
		at |= mask_bytes_eq(x, '@');
		plus |= mask_bytes_eq(x, '+');
		paren |= mask_bytes_eq(x, '(');
		dash |= mask_bytes_eq(x, '-');
	}
	seen = (nd ? C_DIGIT : 0) | (dot ? C_DOT | C_NANPSEP : 0) | (at ? C_AT : 0) |
	       (plus ? C_PLUS : 0) | (paren ? C_NANPSEP : 0) | (dash ? C_DASH | C_NANPSEP : 0);
	for (; i < len; i++) {
		uint8_t c = cls[s[i]];

		seen |= c;
		nd += c & C_DIGIT;
	}
	*digits = nd;
	return seen;
}

static unsigned possible(const struct mask_rules *m, const uint8_t *s, size_t len)
{
	size_t digits;
	unsigned seen = classes(s, len, m->digits_only, &digits), d = 0;
	if (digits >= 13)
		d |= 1u << DET_CARD;
	if (seen & C_AT)
		d |= 1u << DET_EMAIL;
	if (digits >= 9 && (seen & C_DASH))
		d |= 1u << DET_SSN;
	if (digits >= 2 && len >= 15)
		d |= 1u << DET_IBAN;
	if ((digits >= 8 && (seen & C_PLUS)) || (digits >= 10 && (seen & C_NANPSEP)))
		d |= 1u << DET_PHONE;
	if ((seen & C_DOT) && len >= 20)
		d |= 1u << DET_JWT;
	if (len >= 15)
		d |= 1u << DET_APIKEY;
	return d & m->det;
}

/* 1 found, 0 none, -1 fail closed. Detectors 0..DET__FIXED-1 are the fixed
 * ones (skipped when not enabled), the rest index m->re. */
static int cand_next(const struct mask_rules *m, unsigned det, size_t k, const uint8_t *s,
		     size_t len, size_t from, struct cand *c)
{
	int rc;

	if (k < DET__FIXED)
		rc = (det & (1u << k)) && det_next[k](s, len, from, &c->s, &c->e);
	else
		rc = next_re(m, m->re[k - DET__FIXED], s, len, from, &c->s, &c->e);
	c->live = rc == 1;
	return rc;
}

static bool put(char *out, size_t outcap, size_t *o, const void *p, size_t n)
{
	if (!out)
		return true;
	if (outcap - *o < n)
		return false;
	memcpy(out + *o, p, n);
	*o += n;
	return true;
}

static uint64_t cpu_ns(void)
{
	struct timespec t;

	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t))
		return 0;
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* mask_json()'s deadline for the custom patterns of one body, on this
 * thread (0: none yet), set at the body's first clock reading while
 * body_timed; and the custom-pattern calls made on this thread (the clock
 * is read every RE_CLOCK_EVERY of them, across values, so many small
 * values are timed as well as one big one). */
static __thread bool body_timed;
static __thread uint64_t body_deadline_ns;
static __thread bool body_over;   /* that deadline passed: every value after is masked whole */
static __thread unsigned re_calls;

struct budget {
	uint64_t start_ns;   /* thread CPU time at the value's first clock reading */
};

/* true: the custom patterns' time for this value (or body) is up. */
static bool budget_out(struct budget *b)
{
	uint64_t now;

	if (body_over)
		return true;
	if (b->start_ns && ++re_calls % RE_CLOCK_EVERY)
		return false;
	now = cpu_ns();
	if (!b->start_ns)
		b->start_ns = now ? now : 1;   /* the value's first call: its clock starts */
	if (body_timed && !body_deadline_ns)   /* the body's first call: its clock starts */
		body_deadline_ns = now + RE_BODY_BUDGET_NS;
	if (body_deadline_ns && now > body_deadline_ns)
		body_over = true;
	return body_over || now - b->start_ns > RE_VALUE_BUDGET_NS;
}

/*
 * The detectors' matches in s[0..len), merged (overlapping or touching ones
 * are one) and in order: fn(arg, start, end) for each. 0; 1: the whole
 * value must be masked (a custom pattern hit a PCRE2 limit or its time, or
 * the value is too long or not UTF-8 while custom patterns are set); -1:
 * fn failed.
 */
typedef bool (*span_fn)(void *arg, size_t start, size_t end);

enum { SCAN_FIXED = 1, SCAN_RE = 2, SCAN_ALL = 3 };

static int match_spans_in(const struct mask_rules *m, const uint8_t *s, size_t len, span_fn fn, void *arg,
			  struct budget *b, unsigned which);

static int match_spans(const struct mask_rules *m, const uint8_t *s, size_t len, span_fn fn, void *arg,
		       struct budget *b, unsigned which)
{
	int r;

	cur_budget = b;
	r = match_spans_in(m, s, len, fn, arg, b, which);
	cur_budget = NULL;
	return r;
}

static int match_spans_in(const struct mask_rules *m, const uint8_t *s, size_t len, span_fn fn, void *arg,
			  struct budget *b, unsigned which)
{
	struct cand c[DET__FIXED + MASK_MAX_REGEX];
	size_t nd = DET__FIXED + m->nre, cs = 0, ce = 0;
	size_t k0 = which & SCAN_FIXED ? 0 : DET__FIXED;
	bool re = m->nre && (which & SCAN_RE), have = false;
	unsigned det;

	if (!(which & SCAN_RE))
		nd = DET__FIXED;
	if (re && (len > MASK_REGEX_MAX_VALUE || !utf8_valid(s, len)))
		return 1;
	det = !(which & SCAN_FIXED) || len < m->minlen ? 0 : possible(m, s, len);
	if (!det && !re)
		return 0;   /* no detector can match: most values */
	if (re && budget_out(b))
		return 1;   /* (a body's time may be up before this value) */
	for (size_t k = k0; k < nd; k++)
		if (cand_next(m, det, k, s, len, 0, &c[k]) < 0)
			return 1;
	for (;;) {
		size_t best = nd;

		for (size_t k = k0; k < nd; k++)
			if (c[k].live && (best == nd || c[k].s < c[best].s))
				best = k;
		if (best == nd)
			break;
		if (have && c[best].s <= ce) {
			if (c[best].e > ce)
				ce = c[best].e;
		} else {
			if (have && !fn(arg, cs, ce))
				return -1;
			cs = c[best].s;
			ce = c[best].e;
			have = true;
		}
		if (cand_next(m, det, best, s, len, c[best].e, &c[best]) < 0)
			return 1;
		if (best >= DET__FIXED && budget_out(b))
			return 1;
	}
	if (have && !fn(arg, cs, ce))
		return -1;
	return 0;
}

/* Writes s with the spans it is given replaced by MASK_TOKEN (out == NULL:
 * counts them). */
struct emit {
	char *out;
	size_t outcap, o, w;
	const uint8_t *s;
	unsigned nh;
};

static bool emit_span(void *arg, size_t start, size_t end)
{
	struct emit *x = arg;

	if (!put(x->out, x->outcap, &x->o, x->s + x->w, start - x->w) ||
	    !put(x->out, x->outcap, &x->o, MASK_TOKEN, MASK_TOKEN_LEN))
		return false;
	x->nh++;
	x->w = end;
	return true;
}

static size_t emit_end(struct emit *x, size_t len, unsigned *hits)
{
	if (!put(x->out, x->outcap, &x->o, x->s + x->w, len - x->w))
		return (size_t)-1;
	if (hits)
		*hits += x->nh;
	return x->out ? x->o : x->nh;
}

static size_t emit_whole(char *out, size_t outcap, unsigned *hits)
{
	size_t o = 0;

	if (!put(out, outcap, &o, MASK_TOKEN, MASK_TOKEN_LEN))
		return (size_t)-1;
	if (hits)
		*hits += 1;
	return out ? o : 1;
}

/*
 * URL encoding. A value may carry what a detector looks for
 * percent-encoded (a URL in a Location field or in a JSON string:
 * "?email=ada%40example.com", "card=4111%201111%201111%201111"), encoded
 * twice (a URL in another URL's query: "next=%2F%3Femail%3Dada%2540x.io"),
 * or form-encoded ("4111+1111+1111+1111"), or with JavaScript's and IIS's
 * "%uXXXX" ("ada%u0040example.com"), which the detectors do not read as
 * such. A value with a "%XX" or "%uXXXX" escape or a '+' between two digits
 * is therefore also scanned decoded ("%XX" -> the byte, "%uXXXX" -> the
 * character in UTF-8, '+' -> ' '), and again
 * while the decoded text has escapes, up to PCT_ROUNDS times; a match in
 * any view masks the encoded bytes it came from, together with what the
 * value matched as it is. With custom patterns, bytes of a decoded view that
 * are not UTF-8 read as '?' there ("caf%E9" is not masked whole).
 * Written here: URL decoding with the offsets of what each decoded byte came
 * from is a few lines no library offers.
 */
#define PCT_ROUNDS 3

static int hexval(uint8_t c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
	       c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The four hex digits of a "%uXXXX" escape at s[i], or -1. */
static long pct_u(const uint8_t *s, size_t len, size_t i)
{
	long v = 0;

	if (i + 5 >= len || s[i] != '%' || (s[i + 1] | 0x20) != 'u')
		return -1;
	for (size_t k = 2; k < 6; k++) {
		int h = hexval(s[i + k]);

		if (h < 0)
			return -1;
		v = v << 4 | h;
	}
	return v;
}

/*
 * The unit of encoded text at s[i]: "%XX" (3 bytes), or since stop 67
 * "%uXXXX" (6, or 12 for a surrogate pair), the non-standard escape that
 * JavaScript's unescape() and IIS decode ("ada%u0040example.com" is an
 * address to them; found by review: it passed every detector), else one
 * byte ('+' a space). Returns its encoded width; the decoded bytes (1 to
 * 4, never more than the width: views do not grow) go to d, their number
 * to *dn. A lone surrogate decodes to U+FFFD.
 */
static size_t pct_unit(const uint8_t *s, size_t len, size_t i, uint8_t d[4], size_t *dn)
{
	long u = pct_u(s, len, i), lo;
	size_t w = 6;

	if (u >= 0) {
		uint32_t cp = (uint32_t)u;

		if (u >= 0xd800 && u <= 0xdbff && (lo = pct_u(s, len, i + 6)) >= 0xdc00 && lo <= 0xdfff) {
			cp = 0x10000 + (((uint32_t)u - 0xd800) << 10) + ((uint32_t)lo - 0xdc00);
			w = 12;
		} else if (u >= 0xd800 && u <= 0xdfff) {
			cp = 0xfffd;
		}
		*dn = mask_put_utf8(d, cp);
		return w;
	}
	*dn = 1;
	if (s[i] == '%' && i + 2 < len && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
		d[0] = (uint8_t)(hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
		return 3;
	}
	d[0] = s[i] == '+' ? ' ' : s[i];
	return 1;
}

/* Worth decoding: an escape, or a '+' between digits. */
static bool url_encoded(const uint8_t *s, size_t len)
{
	const uint8_t *p = s, *end = s + len;
	uint8_t d[4];
	size_t dn;

	while ((p = memchr(p, '%', (size_t)(end - p)))) {
		if (pct_unit(s, len, (size_t)(p - s), d, &dn) > 1)
			return true;
		p++;
	}
	for (p = s; (p = memchr(p, '+', (size_t)(end - p))); p++)
		if (p > s && p + 1 < end && is_digit(p[-1]) && is_digit(p[1]))
			return true;
	return false;
}

static size_t url_decode(const uint8_t *s, size_t len, uint8_t *d)
{
	size_t dl = 0, dn;

	for (size_t i = 0; i < len; ) {
		i += pct_unit(s, len, i, d + dl, &dn);
		dl += dn;
	}
	return dl;
}

struct spanv {
	size_t (*v)[2];
	size_t n, cap;
};

/*
 * The spans of every view are kept until their union is written: a value
 * of 16 MiB of short matches held 350 MiB of them, and sorting them took
 * seconds (review). Past this many the value is masked whole (a value with
 * that many things to mask has nothing left worth showing).
 */
#define URL_SPANS_MAX (1u << 16)

static bool push_span(void *arg, size_t start, size_t end)
{
	struct spanv *sv = arg;

	if (sv->n >= URL_SPANS_MAX)
		return false;
	if (sv->n == sv->cap) {
		size_t nc = sv->cap ? 2 * sv->cap : 16;
		void *nv = realloc(sv->v, nc * sizeof(*sv->v));

		if (!nv)
			return false;
		sv->v = nv;
		sv->cap = nc;
	}
	sv->v[sv->n][0] = start;
	sv->v[sv->n][1] = end;
	sv->n++;
	return true;
}

/* Spans v[from..n) (in order, offsets in the view decoded from e) to
 * offsets in e. A span that starts or ends inside a unit's decoded bytes
 * (a "%u00E9" is two) takes the whole unit. */
static void map_down(struct spanv *sv, size_t from, const uint8_t *e, size_t elen)
{
	size_t di = 0, ei = 0, dn, w;
	uint8_t d[4];

	for (size_t j = from; j < sv->n; j++)
		for (int k = 0; k < 2; k++) {
			while (di < sv->v[j][k] && ei < elen) {
				w = pct_unit(e, elen, ei, d, &dn);
				if (k == 0 && di + dn > sv->v[j][k])
					break;   /* a start inside this unit: at its start */
				di += dn;
				ei += w;
			}
			sv->v[j][k] = ei;
		}
}

static int span_cmp(const void *a, const void *b)
{
	const size_t *x = a, *y = b;

	return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Spans v[from..n): sorted, overlapping and touching ones merged (in place). */
static void merge_from(struct spanv *sv, size_t from)
{
	size_t w = from;

	if (sv->n - from < 2)
		return;
	qsort(sv->v + from, sv->n - from, sizeof(*sv->v), span_cmp);
	for (size_t j = from + 1; j < sv->n; j++) {
		if (sv->v[j][0] <= sv->v[w][1]) {
			if (sv->v[j][1] > sv->v[w][1])
				sv->v[w][1] = sv->v[j][1];
		} else {
			w++;
			sv->v[w][0] = sv->v[j][0];
			sv->v[w][1] = sv->v[j][1];
		}
	}
	sv->n = w + 1;
}

/*
 * A value still encoded after PCT_ROUNDS (a URL in a URL in a URL in a URL:
 * "ada%25252540example.com") went out as it came, whatever the last rounds
 * spelled (found by review). It is decoded on, up to PCT_DEEP rounds in
 * all, only to look: true when a detector matches in one of those views
 * (the value is then masked whole: spans are not mapped back that far), or
 * when it is still encoded after the last one, or there is no memory to
 * look (fail closed). s is the PCT_ROUNDS-th view; bu the value's budget.
 */
#define PCT_DEEP 8

static bool stop_span(void *arg, size_t start, size_t end)
{
	(void)arg, (void)start, (void)end;
	return false;   /* one is enough: match_spans() returns -1 */
}

static bool deep_hidden(const struct mask_rules *m, const uint8_t *s, size_t len, struct budget *bu)
{
	uint8_t *a = malloc(len ? len : 1), *b = malloc(len ? len : 1);
	const uint8_t *cur = s;
	bool hidden = true;

	for (int r = PCT_ROUNDS + 1; a && b && r <= PCT_DEEP; r++) {
		uint8_t *next = cur == a ? b : a;

		len = url_decode(cur, len, next);
		cur = next;
		if (match_spans(m, cur, len, stop_span, NULL, bu, SCAN_ALL))
			break;
		if (!url_encoded(cur, len)) {
			hidden = false;
			break;
		}
	}
	free(a);
	free(b);
	return hidden;
}

static size_t mask_run_url(const struct mask_rules *m, const uint8_t *s, size_t len, char *out,
			   size_t outcap, unsigned *hits)
{
	const uint8_t *view[PCT_ROUNDS + 1] = { s };
	uint8_t *mem[PCT_ROUNDS + 1] = { NULL }, *fixed;
	size_t vlen[PCT_ROUNDS + 1] = { len }, cs = 0, ce = 0, res;
	struct spanv sv = { 0 };
	struct emit x = { out, outcap, 0, 0, s, 0 };
	struct budget b = { 0 };
	int nv = 1, r = 0;
	bool have = false;

	/* the views: as is, then decoded while there is something to decode;
	 * each no longer than the one it comes from, allocated only when there
	 * is a round to decode (a value needing three rounds costs three
	 * copies; most need one) */
	while (nv <= PCT_ROUNDS && url_encoded(view[nv - 1], vlen[nv - 1])) {
		if (!(mem[nv] = malloc(vlen[nv - 1]))) {
			res = emit_whole(out, outcap, hits);   /* no memory to look: fail closed */
			goto out;
		}
		vlen[nv] = url_decode(view[nv - 1], vlen[nv - 1], mem[nv]);
		view[nv] = mem[nv];
		nv++;
	}
	if (nv == PCT_ROUNDS + 1 && url_encoded(view[PCT_ROUNDS], vlen[PCT_ROUNDS]) &&
	    deep_hidden(m, view[PCT_ROUNDS], vlen[PCT_ROUNDS], &b)) {
		res = emit_whole(out, outcap, hits);
		goto out;
	}
	/* each view's spans, mapped down to the value's own offsets; custom
	 * patterns read a decoded view that is not UTF-8 with '?' for the
	 * bytes that are not (the fixed detectors read it as it is) */
	for (int v = 0; v < nv && !r; v++) {
		size_t first = sv.n;

		if (v && m->nre && !utf8_valid(view[v], vlen[v])) {
			if (!(fixed = malloc(vlen[v]))) {
				r = 1;   /* masked whole */
				break;
			}
			memcpy(fixed, view[v], vlen[v]);
			utf8_fix(fixed, vlen[v]);
			r = match_spans(m, view[v], vlen[v], push_span, &sv, &b, SCAN_FIXED);
			if (!r)
				r = match_spans(m, fixed, vlen[v], push_span, &sv, &b, SCAN_RE);
			free(fixed);
			if (!r)   /* two passes: each in order, together not */
				merge_from(&sv, first);
		} else {
			r = match_spans(m, view[v], vlen[v], push_span, &sv, &b, SCAN_ALL);
		}
		for (int u = v; !r && u > 0; u--)
			map_down(&sv, first, view[u - 1], vlen[u - 1]);
	}
	if (r) {
		res = emit_whole(out, outcap, hits);
		goto out;
	}
	/* their union, in order */
	if (sv.n)
		qsort(sv.v, sv.n, sizeof(*sv.v), span_cmp);
	for (size_t j = 0; j < sv.n; j++) {
		if (have && sv.v[j][0] <= ce) {
			if (sv.v[j][1] > ce)
				ce = sv.v[j][1];
			continue;
		}
		if (have && !emit_span(&x, cs, ce)) {
			res = (size_t)-1;
			goto out;
		}
		cs = sv.v[j][0];
		ce = sv.v[j][1];
		have = true;
	}
	if (have && !emit_span(&x, cs, ce))
		res = (size_t)-1;
	else
		res = emit_end(&x, len, hits);
out:
	for (int v = 1; v <= PCT_ROUNDS; v++)
		free(mem[v]);
	free(sv.v);
	return res;
}

/* out == NULL: count only. */
static size_t mask_run(const struct mask_rules *m, const uint8_t *s, size_t len, char *out,
		       size_t outcap, unsigned *hits)
{
	struct emit x = { out, outcap, 0, 0, s, 0 };
	struct budget b = { 0 };
	int r;

	if (url_encoded(s, len))
		return mask_run_url(m, s, len, out, outcap, hits);
	r = match_spans(m, s, len, emit_span, &x, &b, SCAN_ALL);
	if (r == 1)
		return emit_whole(out, outcap, hits);
	if (r < 0)
		return (size_t)-1;
	return emit_end(&x, len, hits);
}

void mask_budget_body(bool start)
{
	body_timed = start;
	body_deadline_ns = 0;   /* read at the first custom-pattern call (budget_out) */
	body_over = false;
}

size_t mask_value(const struct mask_rules *m, const char *in, size_t len, char *out,
		  size_t outcap, unsigned *hits)
{
	if (!out)
		return (size_t)-1;
	if (len == 0)                   /* nothing can match (empty patterns are refused) */
		return 0;
	if (!mask_has_detectors(m)) {
		if (outcap < len)
			return (size_t)-1;
		if (len)
			memcpy(out, in, len);
		return len;
	}
	return mask_run(m, (const uint8_t *)in, len, out, outcap, hits);
}

bool mask_value_maybe(const struct mask_rules *m, const char *in, size_t len)
{
	/* mask_run()'s own early exit, and nothing else: no custom pattern,
	 * and no fixed detector can match (too short, or possible() says no) */
	return len && mask_has_detectors(m) &&
	       (m->nre || (len >= m->minlen && (possible(m, (const uint8_t *)in, len) ||
						memchr(in, '%', len) || memchr(in, '+', len))));
}

bool mask_value_matches(const struct mask_rules *m, const char *in, size_t len)
{
	return len && mask_has_detectors(m) && mask_run(m, (const uint8_t *)in, len, NULL, 0, NULL) > 0;
}

/* ---- reports ------------------------------------------------------------- */

/* Longest prefix of at most max bytes that does not end inside a UTF-8
 * sequence. */
static size_t utf8_cut(const char *s, size_t n, size_t max)
{
	if (n <= max)
		return n;
	while (max > 0 && ((uint8_t)s[max] & 0xc0) == 0x80)
		max--;
	return max;
}

void mask_report_add(struct mask_report *rep, const struct mask_rules *m, const char *name,
		     size_t len)
{
	char buf[256 * MASK_TOKEN_LEN + MASK_TOKEN_LEN];
	size_t n, have, need;
	const char *p;

	if (!rep)
		return;
	rep->fields[sizeof(rep->fields) - 1] = '\0';
	have = strlen(rep->fields);
	if (have >= 3 && strcmp(rep->fields + have - 3, "...") == 0)
		return;
	/* A field name is data too ({"alice@x.io": ...}): mask it whole first,
	 * then cut (cutting first could leave half a card unmasked). */
	if (len > 256) {
		memcpy(buf, "(long name)", n = 11);
	} else {
		n = mask_value(m, name, len, buf, sizeof(buf), NULL);
		if (n == (size_t)-1)
			memcpy(buf, MASK_TOKEN, n = MASK_TOKEN_LEN);
		n = utf8_cut(buf, n, 64);
	}
	for (size_t i = 0; i < n; i++)      /* no control bytes in a log field */
		if ((uint8_t)buf[i] < 0x20 || buf[i] == ',')
			buf[i] = '_';
	for (p = rep->fields; *p; ) {       /* already listed? */
		const char *comma = strchr(p, ',');
		size_t l = comma ? (size_t)(comma - p) : strlen(p);

		if (l == n && memcmp(p, buf, n) == 0)
			return;
		p += l + (comma ? 1 : 0);
	}
	need = (have ? 1 : 0) + n;
	if (have + need + 1 > sizeof(rep->fields) - 4) {
		if (have + 4 <= sizeof(rep->fields) - 1)
			memcpy(rep->fields + have, have ? ",..." : "...", have ? 5 : 4);
		return;
	}
	if (have)
		rep->fields[have++] = ',';
	memcpy(rep->fields + have, buf, n);
	rep->fields[have + n] = '\0';
}
