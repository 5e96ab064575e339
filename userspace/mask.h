/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mask: the masking library shared by the PostgreSQL and HTTP modules
 * (DESIGN.md §3 mask: {columns, detectors, json}).
 *
 * A struct mask_rules is compiled once per policy snapshot from the union of
 * the policy masks that apply to a request (delegation: masks are the union),
 * is never modified afterwards and may be used from any thread at once.
 * Masked content is replaced by the fixed token MASK_TOKEN.
 *
 * Detectors (policy names, nothing else is accepted):
 *   credit_card  13-19 digits, a single ' ', '-', '.', U+00A0, U+2007,
 *                U+2009 or U+202F (UTF-8) between groups,
 *                Luhn-valid AND an issuer prefix with that brand's lengths
 *                (Visa 4, Mastercard 51-55/2221-2720, Amex 34/37,
 *                Discover 6011/65/644-649, JCB 3528-3589, Diners
 *                36/38/300-305, UnionPay 62). A number is judged on whole
 *                digit groups: the 16 digits inside a 25-digit run are not a
 *                card (and are not half-masked). Not caught: other
 *                separators ("4111_1111..."), non-ASCII digits. In JSON a
 *                number with a fraction or an exponent is also read as
 *                the whole number it stands for (mask_json()).
 *   email        practical RFC 5321 local@domain.tld: dot-atom local part,
 *                at least two domain labels, alphabetic TLD of 2+ letters
 *                (non-ASCII bytes are accepted in both parts, so IDN
 *                addresses are masked too). Not caught: quoted local parts
 *                ("a b"@x.com), address literals (a@[10.0.0.1]),
 *                single-label domains (root@localhost).
 *   us_ssn       ddd-dd-dddd with dashes, not next to another digit, SSA
 *                invalid ranges excluded (area 000, 666, 9xx; group 00;
 *                serial 0000). Bare 9-digit runs and spaced forms are not
 *                caught (every 9-digit id would be masked). There is no
 *                "ssn" alias: the loader names us_ssn when it sees it.
 *   iban         country code, 2 check digits, BBAN; mod-97 == 1; the
 *                registry length for ~80 known countries (15-34 for the
 *                rest); upper or lower case; optional single spaces every
 *                4 characters.
 *   phone        E.164: '+', 8-15 digits (first 1-9), single separators
 *                ' ', '-', '.', '(' ')' between digits; NANP
 *                (NXX) NXX-XXXX, NXX-NXX-XXXX, NXX.NXX.XXXX. Not caught:
 *                national forms without '+' (020 7946 0958), bare digit
 *                runs (4155552671), extensions, vanity letters.
 *   jwt          three base64url segments (the third may be empty) whose
 *                first decodes to a JSON object naming "alg"; further
 *                segments (JWE has five) are masked with it.
 *   api_key      fixed shapes only: AWS AKIA/ASIA/ABIA/ACCA + 16, GitHub
 *                ghp_/gho_/ghu_/ghs_/ghr_ + 30..255, github_pat_, Slack
 *                xox[abprs]-, Stripe sk_live_/rk_live_/sk_test_/rk_test_,
 *                OpenAI sk-... (20+ characters with a letter and a digit:
 *                "sk-learn-compatible-wrapper" is not a key), Google
 *                AIza + 35. Opaque tokens without a shape ("Bearer abc123"
 *                as a value, random hex secrets, PEM private keys) are NOT
 *                caught: name the column/field or add a regex: detector.
 *   regex:<re>   a custom PCRE2 pattern (UTF mode, JIT when available,
 *                match/depth/heap limits). A pattern that matches the empty
 *                string is refused at load time.
 *
 * URL encoding: a value with a "%XX" escape or a '+' between digits is
 * also scanned decoded ('+' as a space), up to three times while escapes
 * remain (a URL in another URL's query is encoded twice), and the encoded
 * bytes of a match there are masked with the rest ("?email=ada%40example.com"
 * -> "?email=****"). A value still encoded after the third round is decoded
 * on, up to eight rounds, only to look: a match there, or escapes left
 * after the eighth, masks the value whole. With custom patterns, bytes of a
 * decoded view that are not UTF-8 read as '?' there.
 *
 * Custom patterns get 50 ms of the thread's CPU time per value, and 1 s for
 * all the values of one JSON body; past that the value is masked whole.
 *
 * Fail closed: when a custom pattern hits a PCRE2 limit (catastrophic
 * backtracking) or the value is not valid UTF-8 while custom patterns are
 * set (they run only on validated UTF-8), the WHOLE value becomes one
 * MASK_TOKEN. The fixed detectors are byte scanners and work on any bytes.
 */
#ifndef AGENTGATE_MASK_H
#define AGENTGATE_MASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MASK_TOKEN      "****"
#define MASK_TOKEN_LEN  4
#define MASK_JSON_MAX   (8u << 20)  /* JSON bodies above 8 MiB are refused (-E2BIG) */
#define MASK_JSON_DEPTH 64          /* deeper nesting is refused (-E2BIG) */
#define MASK_MAX_REGEX  64          /* custom patterns in one compiled union */
#define MASK_REGEX_MAX_VALUE (1u << 20) /* larger values with custom patterns are masked whole */

struct policy_mask;
struct mask_rules;                 /* compiled, immutable, thread-safe to use */

/* What one mask_json() (or a caller's own loop over mask_value) masked.
 * fields: comma list of the masked field/column names, each at most 64 bytes,
 * never cut inside a UTF-8 sequence, truncated with "..." when full; a name
 * is itself content-masked first, so it never carries a detected secret. */
struct mask_report {
	unsigned hits;                 /* replacements made */
	unsigned columns;              /* distinct values (fields/columns) touched */
	char fields[512];
};

/* Compiles the union of n policy masks (n may be 0, masks[i] may be NULL or
 * !present: they add nothing). Returns NULL and a reason in err on a bad
 * detector name, a bad PCRE2 pattern or a bad JSON path, or ENOMEM.
 * The result is freed with mask_free() (NULL-safe). */
struct mask_rules *mask_compile(const struct policy_mask *const *masks, size_t n,
				char *err, size_t errlen);
void mask_free(struct mask_rules *m);

bool mask_is_empty(const struct mask_rules *m);         /* nothing to mask at all */
bool mask_has_detectors(const struct mask_rules *m);    /* content scanning needed */
bool mask_has_json(const struct mask_rules *m);         /* JSON paths named */

/* true when the policy names "schema.table.column" (exact, case-sensitive,
 * as PostgreSQL reports the names). NULL parts never match. Identifiers that
 * contain '.' cannot be named. */
bool mask_column_named(const struct mask_rules *m, const char *schema, const char *table,
		       const char *column);

/* The column masks as written in the policy ("schema.table.column"; *n of
 * them, duplicates kept), for checking that each names a column. */
const char *const *mask_column_list(const struct mask_rules *m, size_t *n);

/* Worst-case output size of mask_value() for an input of len bytes: every
 * match is at least one byte and becomes MASK_TOKEN_LEN bytes. */
static inline size_t mask_value_bound(size_t len)
{
	return len > (SIZE_MAX - MASK_TOKEN_LEN) / MASK_TOKEN_LEN ?
		SIZE_MAX : len * MASK_TOKEN_LEN + MASK_TOKEN_LEN;
}

/* Content masking of one value (bytes, any encoding): writes the value with
 * every detector match replaced by MASK_TOKEN into out (capacity outcap;
 * overlapping or touching matches become one token). Returns the output
 * length, or (size_t)-1 if outcap is too small (out is then garbage; use
 * mask_value_bound()). *hits (may be NULL) += replacements. The output never
 * contains an unmasked match. Allocates nothing except, per thread, one
 * PCRE2 match block on first use of a custom pattern, and the decoded views
 * of a URL-encoded value (no memory: masked whole). */
size_t mask_value(const struct mask_rules *m, const char *in, size_t len, char *out,
		  size_t outcap, unsigned *hits);

/* Like mask_value() but only tells whether anything would be replaced. */
bool mask_value_matches(const struct mask_rules *m, const char *in, size_t len);

/* The detectors' cheap prefilter: false only when mask_value() would give
 * in back unchanged with no hits (no custom pattern, and no fixed detector
 * can match: too short for any, or missing what each needs: 13 digits, an
 * '@'...). true says nothing: run mask_value(). */
bool mask_value_maybe(const struct mask_rules *m, const char *in, size_t len);

/* The shortest value any detector of m can change (1 with custom patterns,
 * SIZE_MAX without detectors): mask_value() gives a shorter one back as is. */
size_t mask_min_match(const struct mask_rules *m);

/* JSON body masking. The body is validated strictly (RFC 8259: one value,
 * UTF-8, no duplicate member names, no lone surrogates, no \u0000) in one
 * pass without a DOM; the output is the input's own bytes where nothing is
 * masked: whitespace, member order, number spelling (big or precise numbers
 * stay exact) and string escapes are kept.
 *   - a value at a policy JSON path becomes the string "****" whatever its
 *     type (objects and arrays are replaced whole);
 *   - every string value is decoded (so "\u0040" hides nothing) and masked
 *     by the detectors, then re-encoded; one that holds escapes of its own
 *     (JSON in a string, HTML) is masked whole when the detectors match it
 *     with those undone too (mask_escapes_hide()); one holding a document
 *     that names a charset mask_charset_ok() refuses, or declares XML
 *     entities (mask_declared_charsets_ok(), mask_declares_entities()), is
 *     masked whole on any masked route: its reader reads what the
 *     detectors did not;
 *   - every number is scanned as text, and one with a fraction or an
 *     exponent whose value is a whole number of at most 19 digits
 *     ("4.111111111111111e15", "41111111111111110e-1") as that number's
 *     digits too (computed exactly): a matching number (a card stored as a
 *     JSON number) becomes the string "****";
 *   - every member name is masked by the detectors too: {"alice@x.io": 1}
 *     becomes {"****": 1}. Paths match the original name. Two names masked
 *     to the same text in one object give a repeated name in the output.
 * Returns 0 with *out malloc'd (caller frees; NUL-terminated, *outlen bytes
 * without the NUL), -EINVAL (not JSON, duplicate names, invalid UTF-8,
 * \u0000), -E2BIG (len > MASK_JSON_MAX, nesting deeper than MASK_JSON_DEPTH,
 * output above 4 * MASK_JSON_MAX) or -ENOMEM. rep (may be NULL) is reset and
 * filled. */
int mask_json(const struct mask_rules *m, const char *body, size_t len, char **out,
	      size_t *outlen, struct mask_report *rep);

/* 0 when a lenient JSON reader would read body as JSON although mask_json()
 * refused it (duplicate names, \u0000, lone surrogates or invalid UTF-8 in
 * strings, NaN/Infinity, a leading BOM or ")]}'" XSSI prefix, NDJSON), or
 * when it is too large or deep to tell; -EINVAL when none would; -ENOMEM.
 * Such a body must not be masked as text (JSON paths would not apply). */
int mask_json_lenient(const char *body, size_t len);

/*
 * Text a JavaScript, JSON or HTML reader reads with its escapes undone
 * (JSONP, a literal, JSON held in a JSON string, a page) can spell what the
 * detectors look for where the text as it is does not: "ada\u0040x.io",
 * the "jos\u00e9@ex\u00e4mple.com" PHP and Python write for non-ASCII,
 * "\x40", "\@", "ada&#64;x.io", "&commat;". s (n bytes, already masked) has
 * them undone in a copy (\uXXXX with surrogate pairs, \u{1F600}, \xHH,
 * octal \0 to \377, \b \f \n \r \t \v, any other escaped character as
 * itself; numeric character references with or without ';', leading zeros
 * too, and the named ones of the characters detectors look for), up to
 * four rounds while escapes remain (a value under another layer: COPY's
 * text format, an array's text form, "&amp;#64;"). Returns 1 when the
 * detectors match after a round (what was hidden cannot be masked in place: the caller
 * refuses or masks whole), 0 when they do not or s has no escape, -ENOMEM.
 */
int mask_escapes_hide(const struct mask_rules *m, const char *s, size_t n);

/*
 * Whether text is read as the detectors read it, where it says how to read
 * itself (the HTTP module refuses such a body; mask_json() masks such a
 * string value whole):
 *   mask_charset_ok: a charset name v (n bytes) in which every byte below
 *     0x80 is that ASCII character (UTF-8, US-ASCII, ISO-8859-*,
 *     Windows-125*); false for any other (UTF-7, Shift_JIS...).
 *   mask_declared_charsets_ok: false when s (n bytes) names a charset
 *     mask_charset_ok() refuses anywhere in it: an XML declaration's
 *     encoding="...", an HTML meta charset=..., CSS @charset.
 *   mask_declares_entities: true when s holds "<!ENTITY" (any case): XML
 *     entities whose expansion spells what their pieces do not.
 */
bool mask_charset_ok(const char *v, size_t n);
bool mask_declared_charsets_ok(const char *s, size_t n);
bool mask_declares_entities(const char *s, size_t n);

/* Appends name to rep->fields (comma list; see struct mask_report). For
 * callers building a report from mask_value(). */
void mask_report_add(struct mask_report *rep, const struct mask_rules *m, const char *name,
		     size_t len);

/* For the policy loader: 0 if the detector spec ("email", "regex:...") is
 * valid, else -EINVAL with a reason in why. */
int mask_detector_check(const char *spec, char *why, size_t whylen);
/* 0 if path is a supported JSON path ($.a.b, $.a[*].b, $..name, $.a["k"],
 * $.items[0], $.*), else -EINVAL with a reason in why. */
int mask_json_path_check(const char *path, char *why, size_t whylen);

/* ---- private to mask.c and mask_json.c ---------------------------------- */

/* Starts (start) or ends the time budget the custom patterns of one JSON
 * body share on this thread (mask_json() does both). */
void mask_budget_body(bool start);

/* Of the 8 bytes of x, the high bit of each that is c: nonzero iff one is
 * (a false bit can only sit above a true match, by the borrow). */
static inline uint64_t mask_bytes_eq(uint64_t x, uint8_t c)
{
	uint64_t y = x ^ (0x0101010101010101ull * c);

	return (y - 0x0101010101010101ull) & ~y & 0x8080808080808080ull;
}

/* Writes code point cp (at most U+10FFFF) at o as UTF-8: 1 to 4 bytes,
 * their number returned. */
static inline size_t mask_put_utf8(uint8_t *o, uint32_t cp)
{
	if (cp < 0x80) {
		o[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (uint8_t)(0xc0 | cp >> 6);
		o[1] = (uint8_t)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (uint8_t)(0xe0 | cp >> 12);
		o[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (uint8_t)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (uint8_t)(0xf0 | cp >> 18);
	o[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
	o[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
	o[3] = (uint8_t)(0x80 | (cp & 0x3f));
	return 4;
}

#define MASK_PATH_MAX_STEPS 32
#define MASK_PATH_MAX_LEN   512

enum mask_step_kind { MSTEP_NAME, MSTEP_INDEX, MSTEP_ANY };

struct mask_step {
	enum mask_step_kind kind;
	bool descendant;               /* "..": matches at any depth below */
	char *name;                    /* MSTEP_NAME, decoded */
	size_t namelen;
	uint32_t index;                /* MSTEP_INDEX */
};

struct mask_path {
	struct mask_step step[MASK_PATH_MAX_STEPS];
	unsigned nsteps;
};

/* The compiled JSON paths of m (mask_json.c walks them). */
const struct mask_path *mask_rules_paths(const struct mask_rules *m, size_t *n);

/* Parses path into p (names malloc'd; mask_path_release frees them). */
int mask_path_parse(const char *path, struct mask_path *p, char *why, size_t whylen);
void mask_path_release(struct mask_path *p);

#endif
