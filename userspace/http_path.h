/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http_path: the canonical form of a request target, and rule patterns
 * matched against it.
 *
 * A proxy that decides on a normalised path and forwards the raw one is
 * bypassed by every server that normalises differently (nginx forwards
 * "..;/", "%252e%252e", "%5c..", overlong UTF-8 and a raw '#' untouched while
 * it decided on something else; notes/postgres-http.md §5.2). So the path is
 * not normalised here: anything whose meaning could depend on who reads it is
 * refused, and what is left has exactly one reading. The decision and the
 * request line forwarded upstream use the same canonical bytes.
 *
 * Path rules (RFC 3986 path-absolute, narrowed):
 *   - raw bytes: unreserved, sub-delims except ';', ':', '@', '/';
 *     refused: '\', '#', ';', '[', ']', '"', '<', '>', '^', '`', '{', '|',
 *     '}', space, controls, bytes >= 0x80;
 *   - a percent-escape is decoded once: an unreserved character is written
 *     raw ("%61" -> "a"), except '.' which is refused ("%2e" makes dot
 *     segments); an escape of '/', '\', '%' (double encoding), NUL, a
 *     control, or any other reserved character is refused; other printable
 *     ASCII stays escaped, upper-case hex; bytes >= 0x80 must form valid,
 *     shortest-form UTF-8 (no overlong forms, surrogates or > U+10FFFF) and
 *     stay escaped; code points some server reads as '.', '/', '\', '%',
 *     ';', '?' or '#' (their NFKC form has one, e.g. U+FF0E, U+2025, or a
 *     Windows best-fit code page maps them to '/' or '\') are refused;
 *   - segments: "." and ".." are refused, and so is any other segment of
 *     dots and white space alone ("...", "..%20", "..%C2%A0": what a server
 *     that trims a segment reads as ".."), and empty segments ("//"),
 *     except one trailing "/" (a different path, only matched by a pattern
 *     that ends in "/" or "**").
 * The query is opaque: forwarded as sent, after checking that it has no '#'
 * and only well-formed escapes, and no "_method" parameter (any case, any
 * escaping: a method override, as X-HTTP-Method-Override is). Paths are
 * case-sensitive.
 *
 * Library code: no logging, no allocation; reentrant.
 */
#ifndef AGENTGATE_HTTP_PATH_H
#define AGENTGATE_HTTP_PATH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A method-override name ("_method", "X-HTTP-Method-Override", as PHP and
 * ASP.NET read names) among the keys of application/x-www-form-urlencoded
 * text fed in pieces: http_form_scan() is true once one is complete (its
 * '=' seen). The query of a request target is checked the same way.
 */
struct http_form_scan {
	char name[32];
	uint8_t n, pct, pctv;
	bool in_value, overflow;
	bool cut;                  /* a decoded NUL: PHP's strlen() ends the name there */
	uint8_t bracket;           /* 1 + where the first '[' was; 0: none */
};
void http_form_scan_init(struct http_form_scan *f);
bool http_form_scan(struct http_form_scan *f, const uint8_t *p, size_t n);

/*
 * The same names among the top-level keys of a JSON body fed in pieces
 * (Laravel reads "_method" from a JSON body: its request input is the JSON
 * object when Content-Type holds "/json" or "+json", and Symfony's
 * getMethod() takes the override from it). Keys are compared decoded
 * (\u005f is '_'), in any case and with '-' for '_' as the header twins
 * are; a JSON key is not a form name (no '%', '=' or PHP's mangling).
 * Invalid JSON is not parsed by the server either and is not judged.
 */
struct http_json_scan {
	char key[40];              /* the top-level key being read, decoded */
	uint8_t kn;
	bool kover;                /* longer than any override name */
	uint32_t depth;            /* open objects and arrays */
	uint32_t u_v;
	uint8_t u_n;               /* hex digits of a \u escape yet to come (4 to 0) */
	bool started, top_object, in_str, esc, is_key, want_key;
};
void http_json_scan_init(struct http_json_scan *j);
bool http_json_scan(struct http_json_scan *j, const uint8_t *p, size_t n);

/*
 * The same names among the part names of a multipart body fed in pieces
 * (Rack, PHP, ASP.NET Core read a multipart/form-data part named "_method"
 * as they read the form field). Each part's head (the header lines after a
 * "--boundary" line, up to the blank line) is kept whole, up to
 * HTTP_MP_HEAD_MAX bytes, and every name= or name*= parameter in it is
 * checked, quoted or not, on one line or folded. A head longer than that is
 * reported as found (fail closed).
 */
#define HTTP_MP_HEAD_MAX 1024
#define HTTP_MP_BOUNDARY_MAX 100
struct http_multipart_scan {
	char delim[HTTP_MP_BOUNDARY_MAX + 4];   /* "\n--" and the boundary */
	uint8_t dlen, matched;
	uint8_t st;                /* 0 a part's body, 1 a delimiter's line, 2 a part's head */
	uint16_t hn;
	char head[HTTP_MP_HEAD_MAX];
};
/* From the Content-Type value: 0 (ready), -ENOENT when it is not multipart,
 * -EINVAL when it is but has no boundary this scan can use. */
int http_multipart_scan_init(struct http_multipart_scan *m, const char *ctype, size_t len);
bool http_multipart_scan(struct http_multipart_scan *m, const uint8_t *p, size_t n);

enum http_form {
	HTTP_FORM_ORIGIN = 0,      /* "/path?query" */
	HTTP_FORM_ABSOLUTE,        /* "http://authority/path?query" */
	HTTP_FORM_AUTHORITY,       /* "host:port", CONNECT only */
	HTTP_FORM_ASTERISK,        /* "*", OPTIONS only */
};

struct http_target {
	enum http_form form;
	size_t path_len;           /* canonical path in the caller's out buffer, NUL-terminated */
	const uint8_t *query;      /* after '?', into the input; NULL when there is no '?' */
	size_t query_len;
	const uint8_t *authority;  /* absolute- and authority-form, into the input */
	size_t authority_len;
	bool https;                /* absolute-form with the https scheme */
	const char *error;         /* on -EINVAL: why, a static string */
};

/*
 * Canonicalise the request target t[0..len). connect: the method is
 * CONNECT (only authority-form is accepted then, and only then).
 * out (outcap >= len + 2) receives the canonical path, NUL-terminated; it
 * is never longer than the input's path ("/" for an absolute-form target
 * without a path). Returns 0, or -EINVAL with r->error.
 */
int http_target_canon(const uint8_t *t, size_t len, bool connect, char *out, size_t outcap,
		      struct http_target *r);

/*
 * Parse an authority "host[:port]" (a Host field or a URI authority): host
 * is a DNS name (letters, digits, '-', '_', '.'), an IPv4 literal, or an
 * IPv6 literal in brackets; no userinfo. host is written lower-case (IPv6
 * without brackets) into host (hostcap >= 256); *port is 0 when absent.
 * Returns 0 or -EINVAL.
 */
int http_authority_parse(const uint8_t *s, size_t n, char *host, size_t hostcap, uint16_t *port);

/*
 * Rules are "METHOD /pattern". METHOD is upper-case letters, "*" for any
 * method but CONNECT and TRACE, or "UPGRADE" (a GET with Upgrade, e.g. a
 * WebSocket: a plain "GET" rule never allows an upgrade). The pattern is a
 * canonical path (as above) whose segments may be "*" (exactly one
 * non-empty segment) or "**" (zero or more segments, at any depth).
 * http_rule_check: 0, or -EINVAL with a reason in *why.
 */
int http_rule_check(const char *rule, const char **why);

/*
 * Does rule allow method (as sent; upgrade: the request asks for an
 * Upgrade) on the canonical path? Malformed rules match nothing.
 */
bool http_rule_match(const char *rule, const char *method, size_t method_len, bool upgrade,
		     const char *path, size_t path_len);

/* Does the pattern (the part after "METHOD ") match path? */
bool http_pattern_match(const char *pat, size_t pat_len, const char *path, size_t path_len);
/* http_rule_match() for a review rule: also what upstreams route alike
 * (the path's case, one trailing slash, HEAD as GET). */
bool http_review_match(const char *rule, const char *method, size_t mlen, bool upgrade, const char *path,
		       size_t plen);

#endif
