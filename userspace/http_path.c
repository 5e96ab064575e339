// SPDX-License-Identifier: Apache-2.0
/*
 * http_path: canonical request targets and rule patterns. The rules and why
 * they refuse rather than normalise are in http_path.h.
 */
#include "http_path.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { C_BAD = 0, C_UNRES, C_SUB, C_COLAT };

/* Raw bytes a path may carry: unreserved, sub-delims but ';', ':' and '@'. */
static uint8_t path_class(uint8_t b)
{
	if ((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') ||
	    b == '-' || b == '.' || b == '_' || b == '~')
		return C_UNRES;
	if (strchr("!$&'()*+,=", b) && b)
		return C_SUB;
	if (b == ':' || b == '@')
		return C_COLAT;
	return C_BAD;
}

static bool is_reserved(uint8_t b)
{
	return b && strchr(":/?#[]@!$&'()*+,;=", b) != NULL;
}

static int hexval(uint8_t b)
{
	if (b >= '0' && b <= '9')
		return b - '0';
	if (b >= 'a' && b <= 'f')
		return b - 'a' + 10;
	if (b >= 'A' && b <= 'F')
		return b - 'A' + 10;
	return -1;
}

static int pct(const uint8_t *s, size_t len, size_t i)
{
	int hi, lo;

	if (i + 2 >= len)
		return -1;
	hi = hexval(s[i + 1]);
	lo = hexval(s[i + 2]);
	return hi < 0 || lo < 0 ? -1 : hi << 4 | lo;
}

static int bad(struct http_target *r, const char *why)
{
	r->error = why;
	return -EINVAL;
}

/* Bytes needed by a UTF-8 lead byte and the allowed range of the first continuation. */
static int utf8_lead(uint8_t b, uint8_t *lo, uint8_t *hi)
{
	*lo = 0x80;
	*hi = 0xbf;
	if (b >= 0xc2 && b <= 0xdf)
		return 1;
	if (b >= 0xe0 && b <= 0xef) {
		if (b == 0xe0)
			*lo = 0xa0;          /* overlong */
		if (b == 0xed)
			*hi = 0x9f;          /* surrogates */
		return 2;
	}
	if (b >= 0xf0 && b <= 0xf4) {
		if (b == 0xf0)
			*lo = 0x90;          /* overlong */
		if (b == 0xf4)
			*hi = 0x8f;          /* > U+10FFFF */
		return 3;
	}
	return -1;                       /* continuation, C0/C1 overlong, F5+ */
}

/*
 * Code points that are read as path syntax by some server: their Unicode
 * compatibility form (NFKC, which some frameworks apply to paths) contains
 * '.', '/', '\\', '%', ';', '?' or '#' (U+FF0E FULLWIDTH FULL STOP, U+2025
 * TWO DOT LEADER "..", U+FF0F FULLWIDTH SOLIDUS...), or Windows' "best fit"
 * conversion to an ANSI code page makes them '/', '\\' or '%' (U+2215
 * DIVISION SLASH is '/' and U+066A ARABIC PERCENT SIGN '%' in code page
 * 1252's best-fit table; U+00A5 YEN and U+20A9 WON SIGN are '\\' in the
 * Japanese and Korean code pages; U+2216 SET MINUS, the '\\' of U+2215,
 * is refused too without a table at hand that says it is mapped: since
 * stop 59, as is U+066A). "/v1/invoices/<U+2025>" is one segment here and
 * "../" to such a server. The NFKC part is every such code point of
 * Unicode 14.
 */
static const struct { uint32_t lo, hi; } path_compat[] = {
	{ 0x00a5, 0x00a5 }, { 0x037e, 0x037e }, { 0x066a, 0x066a }, { 0x2024, 0x2026 },
	{ 0x2044, 0x2044 }, { 0x2047, 0x2049 }, { 0x20a9, 0x20a9 }, { 0x2100, 0x2101 },
	{ 0x2105, 0x2106 }, { 0x2215, 0x2216 }, { 0x2488, 0x249b }, { 0x29f5, 0x29f5 },
	{ 0x29f8, 0x29f9 }, { 0x33c2, 0x33c2 }, { 0x33c7, 0x33c7 }, { 0x33d8, 0x33d8 },
	{ 0xfe14, 0xfe14 }, { 0xfe16, 0xfe16 }, { 0xfe19, 0xfe19 }, { 0xfe30, 0xfe30 },
	{ 0xfe52, 0xfe52 }, { 0xfe54, 0xfe54 }, { 0xfe56, 0xfe56 }, { 0xfe5f, 0xfe5f },
	{ 0xfe68, 0xfe68 }, { 0xfe6a, 0xfe6a }, { 0xff03, 0xff03 }, { 0xff05, 0xff05 },
	{ 0xff0e, 0xff0f }, { 0xff1b, 0xff1b }, { 0xff1f, 0xff1f }, { 0xff3c, 0xff3c },
	{ 0x1f100, 0x1f100 },
};

static bool path_compat_special(uint32_t cp)
{
	for (size_t i = 0; i < sizeof(path_compat) / sizeof(path_compat[0]); i++)
		if (cp >= path_compat[i].lo && cp <= path_compat[i].hi)
			return true;
	return false;
}

static void put_pct(char *out, size_t *o, int v)
{
	static const char hex[] = "0123456789ABCDEF";

	out[(*o)++] = '%';
	out[(*o)++] = hex[v >> 4];
	out[(*o)++] = hex[v & 15];
}

/* Unicode white space that a server's trim may drop from a name: the
 * White_Space property (U+0085 NEL, U+00A0 NO-BREAK SPACE, U+1680, U+2000
 * to U+200A, U+2028, U+2029, U+202F, U+205F, U+3000), U+180E (white space
 * before Unicode 6.3: Java 8 still trims it), U+200B and U+FEFF (.NET's
 * Trim before 4.0, and JavaScript's trim() for U+FEFF). ASCII controls
 * never get this far (refused in the path). */
static bool trimmed_space(uint32_t cp)
{
	return cp == 0x85 || cp == 0xa0 || cp == 0x1680 || cp == 0x180e || (cp >= 0x2000 && cp <= 0x200b) ||
	       cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000 || cp == 0xfeff;
}

/* Length of the escaped space at s[i] in canonical text ("%20", or a
 * trimmed_space() code point as its escaped UTF-8, "%C2%A0"), else 0. */
static size_t space_escape(const char *s, size_t n, size_t i)
{
	uint8_t lo, hi;
	int v = pct((const uint8_t *)s, n, i), more;
	uint32_t cp;

	if (v == ' ')
		return 3;
	if (v < 0x80 || (more = utf8_lead((uint8_t)v, &lo, &hi)) < 0)
		return 0;
	cp = (uint32_t)v & (0x7fu >> (more + 1));
	for (int k = 1; k <= more; k++) {
		int c = i + 3 * k < n && s[i + 3 * k] == '%' ? pct((const uint8_t *)s, n, i + 3 * k) : -1;

		if (c < 0x80 || c > 0xbf)
			return 0;
		cp = cp << 6 | ((uint32_t)c & 0x3f);
	}
	return trimmed_space(cp) ? 3 * (size_t)(more + 1) : 0;
}

/*
 * A dot segment: "." or "..", and (review, stop 64) any other segment of
 * dots and spaces alone ("...", "..%20", ".%20."). Windows drops a name's
 * trailing dots and spaces, so an upstream there may read "..%20" as ".."
 * and "..." as ".." or "." (windows_alias() below reads them so for review
 * rules); no other server gives such a name a meaning worth the doubt.
 * Since stop 67 (found by review) the spaces are any Unicode white space a
 * trim drops ("..%C2%A0", "..%E3%80%80", "%E2%80%83.."): servers that trim
 * a segment (Java's strip(), .NET's Trim(), Python's strip(), Go's
 * TrimSpace) before comparing it with "." and ".." read them as dot
 * segments. The other trailing forms are refused before this: controls
 * ("..%09", "..%00"), ';' ("..;", Tomcat's path parameters, raw or %3B).
 */
static bool dot_segment(const char *s, size_t n)
{
	bool dot = false;

	for (size_t i = 0; i < n;) {
		size_t w;

		if (s[i] == '.') {
			dot = true;
			i++;
		} else if (s[i] == '%' && (w = space_escape(s, n, i))) {
			i += w;
		} else {
			return false;
		}
	}
	return dot;
}

/* The path part p[0..len) (starts with '/'), canonical into out. */
static int canon_path(const uint8_t *p, size_t len, char *out, size_t outcap, struct http_target *r)
{
	size_t o = 0, seg = 0;

	if (!len || p[0] != '/')
		return bad(r, "path does not start with '/'");
	if (outcap < len + 1)
		return bad(r, "path too long");
	for (size_t i = 0; i < len; i++) {
		uint8_t b = p[i];
		int v;

		if (b == '/') {
			if (i > 0) {
				size_t sl = o - seg;

				if (sl == 0)
					return bad(r, "empty path segment (\"//\")");
				if (dot_segment(out + seg, sl))
					return bad(r, "dot segment in the path");
			}
			out[o++] = '/';
			seg = o;
			continue;
		}
		if (b != '%') {
			if (b == '\\')
				return bad(r, "backslash in the path");
			if (b == '#')
				return bad(r, "raw '#' in the request target");
			if (b == ';')
				return bad(r, "';' (matrix parameters) in the path");
			if (path_class(b) == C_BAD)
				return bad(r, "byte not allowed in a path");
			out[o++] = (char)b;
			continue;
		}
		v = pct(p, len, i);
		if (v < 0)
			return bad(r, "malformed percent-escape in the path");
		if (v == '/' || v == '\\')
			return bad(r, "encoded slash or backslash in the path");
		if (v == '%')
			return bad(r, "double percent-encoding in the path");
		if (v == 0)
			return bad(r, "encoded NUL in the path");
		if (v == '.')
			return bad(r, "encoded dot in the path");
		if (v < 0x20 || v == 0x7f)
			return bad(r, "encoded control byte in the path");
		if (is_reserved((uint8_t)v))
			return bad(r, "percent-escape of a reserved character in the path");
		if (v < 0x80) {
			if (path_class((uint8_t)v) == C_UNRES)
				out[o++] = (char)v;
			else
				put_pct(out, &o, v);
			i += 2;
			continue;
		}
		/* UTF-8: the whole sequence escaped, shortest form, a scalar value. */
		{
			uint8_t lo, hi;
			int more = utf8_lead((uint8_t)v, &lo, &hi);
			uint32_t cp;

			if (more < 0)
				return bad(r, "invalid or overlong UTF-8 in the path");
			cp = (uint32_t)v & (0x7fu >> (more + 1));
			put_pct(out, &o, v);
			i += 2;
			for (int k = 0; k < more; k++) {
				int c = i + 1 < len && p[i + 1] == '%' ? pct(p, len, i + 1) : -1;

				if (c < lo || c > hi)
					return bad(r, "invalid or overlong UTF-8 in the path");
				lo = 0x80;
				hi = 0xbf;
				cp = cp << 6 | ((uint32_t)c & 0x3f);
				put_pct(out, &o, c);
				i += 3;
			}
			if (path_compat_special(cp))
				return bad(r, "a character some servers read as '.', '/', '\\', '%', ';', '?' or '#' "
					   "(a compatibility or best-fit form) in the path");
		}
	}
	{
		if (dot_segment(out + seg, o - seg))
			return bad(r, "dot segment in the path");
	}
	out[o] = '\0';
	r->path_len = o;
	return 0;
}

/*
 * Method-override parameter names. Symfony (Laravel on it) takes the method
 * of a POST from "_method", in the query or a form body; ASP.NET MVC from
 * "X-HTTP-Method-Override": twins of the override headers the http module
 * strips, so a rule's method would not be the one the server runs. A name
 * is compared as PHP reads it: leading spaces dropped, ' ', '.' and '['
 * taken for '_' (found by review: "?.method=DELETE", "?+_method="), and
 * '-' for '_' and any case, as the header twins are. The scanner is
 * incremental (a form body arrives in pieces); names longer than any of
 * these are not kept.
 */
void http_form_scan_init(struct http_form_scan *f)
{
	memset(f, 0, sizeof(*f));
}

static bool override_name(const char *name)
{
	static const char *const want[] = { "_method", "x_http_method_override", "x_http_method",
					    "x_method_override" };

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (strcmp(name, want[i]) == 0)
			return true;
	return false;
}

static void form_name_char(struct http_form_scan *f, int c)
{
	/* PHP takes the decoded name up to its first NUL ("_method%00" and
	 * anything after it is _method): nothing after one counts, not even
	 * toward the length bound (review, stop 34: a long tail past the NUL
	 * hid _method from this check) */
	if (c == 0)
		f->cut = true;
	if (f->cut)
		return;
	if (c == ' ' && f->n == 0)
		return;
	/* "_method[]=DELETE" is an array to PHP, but qs (Express's body
	 * parser) gives method-override its first element (review, stop 43):
	 * the name before a '[' counts too */
	if (c == '[' && !f->bracket && f->n < sizeof(f->name) - 1)
		f->bracket = (uint8_t)(f->n + 1);
	if (c == ' ' || c == '.' || c == '[' || c == '-')
		c = '_';
	if (f->n == sizeof(f->name) - 1) {
		f->overflow = true;   /* longer than any of them */
		return;
	}
	f->name[f->n++] = (char)(c >= 'A' && c <= 'Z' ? c | 0x20 : c);
}

bool http_form_scan(struct http_form_scan *f, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int c = p[i];

		if (f->in_value) {
			if (c == '&' || c == ';')
				http_form_scan_init(f);
			continue;
		}
		if (f->pct) {   /* inside %XY */
			int v = hexval((uint8_t)c);

			if (v < 0) {   /* not an escape: PHP keeps it as it is */
				form_name_char(f, '%');
				if (f->pct == 2)
					form_name_char(f, "0123456789abcdef"[f->pctv]);
				f->pct = 0;
			} else if (f->pct == 1) {
				f->pctv = (uint8_t)v;
				f->pct = 2;
				continue;
			} else {
				form_name_char(f, f->pctv << 4 | v);
				f->pct = 0;
				continue;
			}
		}
		if (c == '%') {
			f->pct = 1;
		} else if (c == '&' || c == ';') {
			http_form_scan_init(f);
		} else if (c == '=') {
			f->name[f->n] = '\0';
			if (!f->overflow && override_name(f->name))
				return true;
			if (f->bracket) {   /* the name before the first '[' (overflow or not) */
				f->name[f->bracket - 1] = '\0';
				if (override_name(f->name))
					return true;
			}
			f->in_value = true;
		} else {
			form_name_char(f, c == '+' ? ' ' : c);
		}
	}
	return false;
}

/* ---- method overrides in JSON and multipart bodies (stop 59) ---- */

/* A name (a query key, still escaped, or a multipart part's name) as the
 * form scanner reads a field name; true when it is an override, or holds
 * one before a '&', ';' or '=' (more than a server reads: fails closed). */
static bool name_is_override(const uint8_t *k, size_t n)
{
	struct http_form_scan f;

	http_form_scan_init(&f);
	return http_form_scan(&f, k, n) || http_form_scan(&f, (const uint8_t *)"=", 1);
}

void http_json_scan_init(struct http_json_scan *j)
{
	memset(j, 0, sizeof(*j));
}

/* A decoded byte of the string being read: kept when the string is a
 * top-level key. Never true (the key is judged when it ends). */
static bool json_key_byte(struct http_json_scan *j, uint8_t b)
{
	if (!j->is_key)
		return false;
	if (j->kn == sizeof(j->key) - 1)
		j->kover = true;
	else
		j->key[j->kn++] = (char)(b == '-' ? '_' : b >= 'A' && b <= 'Z' ? b | 0x20 : b);
	return false;
}

static bool json_key_cp(struct http_json_scan *j, uint32_t cp)
{
	uint8_t u[3];
	size_t n;

	if (cp < 0x80) {
		u[0] = (uint8_t)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (uint8_t)(0xc0 | cp >> 6);
		u[1] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 2;
	} else {
		u[0] = (uint8_t)(0xe0 | cp >> 12);
		u[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
		u[2] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 3;
	}
	for (size_t i = 0; i < n; i++)
		if (json_key_byte(j, u[i]))
			return true;
	return false;
}

bool http_json_scan(struct http_json_scan *j, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int c = p[i];

		if (j->in_str) {
			if (j->u_n) {
				int v = hexval((uint8_t)c);

				if (v >= 0) {
					j->u_v = j->u_v << 4 | (uint32_t)v;
					if (--j->u_n == 0 && json_key_cp(j, j->u_v))
						return true;
					continue;
				}
				j->u_n = 0;   /* invalid: the server refuses the body */
			}
			if (j->esc) {
				static const char from[] = "bfnrt", to[] = "\b\f\n\r\t";
				const char *e = c ? strchr(from, c) : NULL;

				j->esc = false;
				if (c == 'u') {
					j->u_n = 4;
					j->u_v = 0;
				} else if (json_key_byte(j, e ? (uint8_t)to[e - from] : (uint8_t)c)) {
					return true;
				}
			} else if (c == '\\') {
				j->esc = true;
			} else if (c == '"') {
				j->in_str = false;
				j->key[j->kn] = '\0';
				if (j->is_key && !j->kover && strlen(j->key) == j->kn && override_name(j->key))
					return true;
				j->is_key = false;
			} else if (json_key_byte(j, (uint8_t)c)) {
				return true;
			}
			continue;
		}
		switch (c) {
		case ' ': case '\t': case '\r': case '\n':
			continue;
		case '"':
			j->in_str = true;
			j->is_key = j->depth == 1 && j->top_object && j->want_key;
			j->kn = 0;
			j->kover = false;
			break;
		case '{':
			if (!j->started)
				j->top_object = true;
			if (++j->depth == 1)
				j->want_key = true;
			break;
		case '[':
			j->depth++;
			break;
		case '}': case ']':
			if (j->depth)
				j->depth--;
			break;
		case ',':
			if (j->depth == 1)
				j->want_key = true;
			break;
		case ':':
			if (j->depth == 1)
				j->want_key = false;
			break;
		default:
			break;
		}
		j->started = true;
	}
	return false;
}

/* The value of parameter name (case-insensitive) in a header value such as
 * `multipart/form-data; boundary="x"`: quoted or a token. -1: none. */
static int header_param(const char *v, size_t len, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);

	for (size_t i = 0; i < len; i++) {
		size_t k = i, o = 0;

		if (v[i] != ';')
			continue;
		for (k++; k < len && (v[k] == ' ' || v[k] == '\t'); k++)
			;
		if (len - k <= nl || strncasecmp(v + k, name, nl) != 0)
			continue;
		for (k += nl; k < len && (v[k] == ' ' || v[k] == '\t'); k++)
			;
		if (k >= len || v[k] != '=')
			continue;
		for (k++; k < len && (v[k] == ' ' || v[k] == '\t'); k++)
			;
		if (k < len && v[k] == '"') {
			for (k++; k < len && v[k] != '"'; k++) {
				if (v[k] == '\\' && k + 1 < len)
					k++;
				if (o + 1 >= cap)
					return -1;
				out[o++] = v[k];
			}
			if (k >= len)
				return -1;   /* no closing quote */
		} else {
			for (; k < len && v[k] != ';' && v[k] != ' ' && v[k] != '\t'; k++) {
				if (o + 1 >= cap)
					return -1;
				out[o++] = v[k];
			}
		}
		out[o] = '\0';
		return o ? (int)o : -1;
	}
	return -1;
}

int http_multipart_scan_init(struct http_multipart_scan *m, const char *ctype, size_t len)
{
	char b[HTTP_MP_BOUNDARY_MAX + 1];
	int n;

	while (len && (*ctype == ' ' || *ctype == '\t'))
		ctype++, len--;
	if (len < 10 || strncasecmp(ctype, "multipart/", 10) != 0)
		return -ENOENT;
	memset(m, 0, sizeof(*m));
	if ((n = header_param(ctype, len, "boundary", b, sizeof(b))) < 0)
		return -EINVAL;
	memcpy(m->delim, "\n--", 3);
	memcpy(m->delim + 3, b, (size_t)n);
	m->dlen = (uint8_t)(3 + n);
	m->matched = 1;   /* the body may open with "--boundary", no newline before it */
	return 0;
}

/* Every name= / name*= parameter of a part's head: one an override? */
static bool head_names_override(const char *h, size_t n)
{
	for (size_t i = 0; i + 4 < n; i++) {
		size_t k, s;
		bool ext = false;

		if ((i && !strchr(";\t \r\n", h[i - 1])) || strncasecmp(h + i, "name", 4) != 0)
			continue;
		k = i + 4;
		while (k < n && (h[k] == ' ' || h[k] == '\t'))
			k++;
		if (k < n && h[k] == '*') {
			ext = true;
			k++;
		}
		while (k < n && (h[k] == ' ' || h[k] == '\t'))
			k++;
		if (k >= n || h[k] != '=')
			continue;
		for (k++; k < n && (h[k] == ' ' || h[k] == '\t'); k++)
			;
		if (k < n && h[k] == '"') {
			uint8_t v[HTTP_MP_HEAD_MAX];
			size_t o = 0;

			for (k++; k < n && h[k] != '"'; k++) {
				if (h[k] == '\\' && k + 1 < n)
					k++;
				v[o++] = (uint8_t)h[k];
			}
			if (name_is_override(v, o))
				return true;
			continue;
		}
		s = k;
		while (k < n && !strchr(";\t \r\n", h[k]))
			k++;
		if (ext) {   /* RFC 5987: charset'language'value, percent-encoded */
			const char *q = memchr(h + s, '\'', k - s);
			const char *q2 = q ? memchr(q + 1, '\'', (size_t)(h + k - q - 1)) : NULL;

			if (q2)
				s = (size_t)(q2 + 1 - h);
		}
		if (name_is_override((const uint8_t *)h + s, k - s))
			return true;
	}
	return false;
}

bool http_multipart_scan(struct http_multipart_scan *m, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = (char)p[i];

		switch (m->st) {
		case 0:   /* a part's body (or the preamble): look for the delimiter */
			if (c == m->delim[m->matched]) {
				if (++m->matched == m->dlen) {
					m->st = 1;
					m->matched = 0;
				}
			} else {
				/* the delimiter holds no newline after its first byte */
				m->matched = c == '\n';
			}
			break;
		case 1:   /* the rest of the delimiter's line ("--", padding) */
			if (c == '\n') {
				m->st = 2;
				m->hn = 0;
			}
			break;
		default:  /* a part's head, up to a blank line */
			if (m->hn == sizeof(m->head))
				return true;   /* longer than any real one: not judged, not passed */
			m->head[m->hn++] = c;
			if (c == '\n' && (m->hn == 1 || (m->hn >= 2 && m->head[m->hn - 2] == '\n') ||
					  (m->hn == 2 && m->head[0] == '\r') ||
					  (m->hn >= 3 && m->head[m->hn - 2] == '\r' && m->head[m->hn - 3] == '\n'))) {
				if (head_names_override(m->head, m->hn))
					return true;
				m->st = 0;
				m->matched = 0;
			}
			break;
		}
	}
	return false;
}

static int check_query(const uint8_t *q, size_t len, struct http_target *r)
{
	/* Keys end at '=', pairs at '&' or ';' (some parsers split on both). */
	for (size_t s = 0, i = 0; i <= len; i++) {
		if (i < len && q[i] != '&' && q[i] != ';')
			continue;
		{
			const uint8_t *eq = memchr(q + s, '=', i - s);

			/* a key holds no '=', '&' or ';' */
			if (name_is_override(q + s, eq ? (size_t)(eq - (q + s)) : i - s))
				return bad(r, "a method-override query parameter (\"_method\", "
					   "\"X-HTTP-Method-Override\") in the request target");
		}
		s = i + 1;
	}
	for (size_t i = 0; i < len; i++) {
		if (q[i] == '#')
			return bad(r, "raw '#' in the request target");
		if (q[i] <= 0x20 || q[i] >= 0x7f)
			return bad(r, "byte not allowed in the query");
		if (q[i] == '%') {
			if (pct(q, len, i) < 0)
				return bad(r, "malformed percent-escape in the query");
			i += 2;
		}
	}
	return 0;
}

static bool scheme_is(const uint8_t *t, size_t len, const char *s)
{
	size_t n = strlen(s);

	if (len < n)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((t[i] | (t[i] >= 'A' && t[i] <= 'Z' ? 0x20 : 0)) != (uint8_t)s[i])
			return false;
	return true;
}

int http_target_canon(const uint8_t *t, size_t len, bool connect, char *out, size_t outcap,
		      struct http_target *r)
{
	size_t i = 0, pe;
	char host[256];
	uint16_t port;

	memset(r, 0, sizeof(*r));
	if (outcap < 2)
		return bad(r, "path too long");
	if (!len)
		return bad(r, "empty request target");
	for (size_t k = 0; k < len; k++)
		if (t[k] <= 0x20 || t[k] >= 0x7f)
			return bad(r, "control, space or non-ASCII byte in the request target");
	if (connect) {
		r->form = HTTP_FORM_AUTHORITY;
		r->authority = t;
		r->authority_len = len;
		if (http_authority_parse(t, len, host, sizeof(host), &port) < 0 || !port)
			return bad(r, "CONNECT target is not host:port");
		memcpy(out, "/", 2);
		r->path_len = 1;
		return 0;
	}
	if (len == 1 && t[0] == '*') {
		r->form = HTTP_FORM_ASTERISK;
		memcpy(out, "*", 2);
		r->path_len = 1;
		return 0;
	}
	if (t[0] != '/') {
		size_t a;

		if (scheme_is(t, len, "http://"))
			i = 7;
		else if (scheme_is(t, len, "https://"))
			i = 8, r->https = true;
		else
			return bad(r, "request target is neither origin-form nor an http(s) URI");
		for (a = i; a < len && t[a] != '/' && t[a] != '?' && t[a] != '#'; a++)
			;
		r->form = HTTP_FORM_ABSOLUTE;
		r->authority = t + i;
		r->authority_len = a - i;
		if (http_authority_parse(r->authority, r->authority_len, host, sizeof(host), &port) < 0)
			return bad(r, "malformed authority in an absolute-form target");
		i = a;
		if (i == len || t[i] == '?') {
			/* "http://h" or "http://h?q": the path is "/" (RFC 9112 §3.2.2) */
			out[0] = '/';
			out[1] = '\0';
			r->path_len = 1;
			if (i < len) {
				r->query = t + i + 1;
				r->query_len = len - i - 1;
				return check_query(r->query, r->query_len, r);
			}
			return 0;
		}
	}
	for (pe = i; pe < len && t[pe] != '?'; pe++)
		;
	if (canon_path(t + i, pe - i, out, outcap, r) < 0)
		return -EINVAL;
	if (pe < len) {
		r->query = t + pe + 1;
		r->query_len = len - pe - 1;
		return check_query(r->query, r->query_len, r);
	}
	return 0;
}

int http_authority_parse(const uint8_t *s, size_t n, char *host, size_t hostcap, uint16_t *port)
{
	size_t i = 0, h = 0;
	uint32_t p = 0;

	*port = 0;
	if (!n || hostcap < 256)
		return -EINVAL;
	if (s[0] == '[') {
		for (i = 1; i < n && s[i] != ']'; i++) {
			uint8_t b = s[i];

			if (!(hexval(b) >= 0 || b == ':' || b == '.') || h >= 45)
				return -EINVAL;
			host[h++] = (char)(b >= 'A' && b <= 'F' ? b + 0x20 : b);
		}
		if (i == n || h < 2)
			return -EINVAL;
		i++;
	} else {
		for (; i < n && s[i] != ':'; i++) {
			uint8_t b = s[i];

			if (!((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') ||
			      b == '-' || b == '.' || b == '_') || h >= 253)
				return -EINVAL;
			host[h++] = (char)(b >= 'A' && b <= 'Z' ? b + 0x20 : b);
		}
		if (!h || host[0] == '.' || host[h - 1] == '.')
			return -EINVAL;
		for (size_t k = 1; k < h; k++)
			if (host[k] == '.' && host[k - 1] == '.')
				return -EINVAL;
	}
	host[h] = '\0';
	if (i < n) {
		if (s[i] != ':' || i + 1 == n || n - i - 1 > 5)
			return -EINVAL;
		for (i++; i < n; i++) {
			if (s[i] < '0' || s[i] > '9')
				return -EINVAL;
			p = p * 10 + (s[i] - '0');
		}
		if (!p || p > 65535)
			return -EINVAL;
		*port = (uint16_t)p;
	}
	return 0;
}

/* ---- rules ---------------------------------------------------------------- */

/* Next segment of a path or pattern starting after a '/' at *s: [*s, end). */
static size_t seg_end(const char *s, const char *end)
{
	const char *e = memchr(s, '/', (size_t)(end - s));

	return (size_t)((e ? e : end) - s);
}

/* Length of the run of percent-encoded non-ASCII bytes ("%E2%84%AA") at
 * g, 0 when g does not start one. */
static size_t wild_len(const char *g, size_t n)
{
	size_t i = 0;

	while (i + 3 <= n && g[i] == '%' && hexval((uint8_t)g[i + 1]) >= 8 && hexval((uint8_t)g[i + 2]) >= 0)
		i += 3;
	return i;
}

/*
 * A pattern's literal segment t against a path segment g in which each run
 * of encoded non-ASCII characters may stand for any text, none included.
 * For review rules only (review, stop 46): servers that route without
 * regard to case fold more than ASCII (U+212A KELVIN SIGN is 'k' to Java's
 * and Python's case-insensitive matching, U+017F LONG S is 's', U+0130 and
 * U+0131 are 'i'), and NFKC makes fullwidth letters, ligatures ("ﬁ") and
 * many other compatibility characters ASCII text of one or more letters:
 * DELETE /v2/%E2%84%AAeys/1 went past a review of DELETE on /v2/keys/{id}. No
 * table of such characters is complete, so any of them may be any text.
 * A run that starts with a combining mark stands for the character before
 * it too (review, stop 64): the mark composes with it, so NFC makes "e%CC%81" one character,
 * U+00E9, and DELETE /v1/cafe%CC%81/1 went past a review of
 * /v1/caf%C3%A9/{id}. The same wildcard walk as below, inside one segment:
 * O(|t| * |g|).
 */
static bool combining_first(const char *g, size_t w)
{
	uint32_t cp = 0;
	int b[3];

	for (int k = 0; k < 3; k++)
		b[k] = (size_t)k * 3 + 3 <= w ? hexval((uint8_t)g[k * 3 + 1]) << 4 | hexval((uint8_t)g[k * 3 + 2]) : 0;
	if (b[0] >= 0xc0 && b[0] < 0xe0)
		cp = (uint32_t)(b[0] & 0x1f) << 6 | (b[1] & 0x3f);
	else if (b[0] >= 0xe0 && b[0] < 0xf0)
		cp = (uint32_t)(b[0] & 0x0f) << 12 | (uint32_t)(b[1] & 0x3f) << 6 | (b[2] & 0x3f);
	/* the combining diacritical marks blocks */
	return (cp >= 0x300 && cp <= 0x36f) || (cp >= 0x1ab0 && cp <= 0x1aff) ||
	       (cp >= 0x1dc0 && cp <= 0x1dff) || (cp >= 0x20d0 && cp <= 0x20ff) ||
	       (cp >= 0xfe20 && cp <= 0xfe2f);
}

static size_t run_here(const char *g, size_t n)
{
	size_t w = wild_len(g, n);

	if (!w && n > 1 && g[0] != '%' && (w = wild_len(g + 1, n - 1)))
		w = combining_first(g + 1, w) ? w + 1 : 0;
	return w;
}

static bool short_name(const char *g, size_t gl);

static bool seg_eq_fuzzy(const char *t, size_t tl, const char *g, size_t gl)
{
	size_t ti = 0, gi = 0, star_g = 0, star_t = 0;
	bool star = false;

	if (short_name(g, gl))
		return true;   /* any name at all (see short_name()) */
	while (ti < tl) {
		size_t w = run_here(g + gi, gl - gi);

		if (w) {
			gi += w;
			star = true;
			star_g = gi;
			star_t = ti;
		} else if (gi < gl && g[gi] == t[ti]) {
			gi++;
			ti++;
		} else if (star) {
			gi = star_g;
			ti = ++star_t;
		} else {
			return false;
		}
	}
	while (gi < gl) {
		size_t w = run_here(g + gi, gl - gi);

		if (!w)
			return false;
		gi += w;
	}
	return true;
}

/*
 * Segment glob: "*" one non-empty segment, "**" any number of segments.
 * The classic wildcard walk with one backtrack point: at each mismatch it
 * resumes after the last "**", which is enough because "**" matches any
 * sequence (O(n*m) worst case, n and m bounded by the head size). fuzzy:
 * literal segments compare with seg_eq_fuzzy() (review rules).
 */
static bool pattern_match(const char *pat, size_t pat_len, const char *path, size_t path_len, bool fuzzy)
{
	const char *p = pat + 1, *pend = pat + pat_len, *s = path + 1, *send = path + path_len;
	const char *star_p = NULL, *star_s = NULL;
	bool p_done = false, s_done = false;

	if (!pat_len || !path_len || pat[0] != '/' || path[0] != '/')
		return false;
	for (;;) {
		size_t pl = p_done ? 0 : seg_end(p, pend), sl;

		if (s_done)
			break;
		sl = seg_end(s, send);
		if (!p_done && pl == 2 && p[0] == '*' && p[1] == '*') {
			star_p = p;
			star_s = s;
			if (p + pl >= pend)
				return true;   /* trailing "**" takes the rest */
			p += pl + 1;
			continue;
		}
		if (!p_done && ((pl == 1 && p[0] == '*' && sl > 0) ||
				(pl == sl && memcmp(p, s, sl) == 0) ||
				(fuzzy && seg_eq_fuzzy(p, pl, s, sl)))) {
			if (p + pl >= pend)
				p_done = true;
			else
				p += pl + 1;
			if (s + sl >= send)
				s_done = true;
			else
				s += sl + 1;
			continue;
		}
		if (!star_p)
			return false;
		/* "**" swallows one more segment of the path */
		sl = seg_end(star_s, send);
		if (star_s + sl >= send)
			return false;
		star_s += sl + 1;
		s = star_s;
		p = star_p + 3;
		p_done = false;
	}
	/* path used up: the rest of the pattern must be "**" segments */
	while (!p_done) {
		size_t pl = seg_end(p, pend);

		if (!(pl == 2 && p[0] == '*' && p[1] == '*'))
			return false;
		if (p + pl >= pend)
			break;
		p += pl + 1;
	}
	return true;
}

bool http_pattern_match(const char *pat, size_t pat_len, const char *path, size_t path_len)
{
	return pattern_match(pat, pat_len, path, path_len, false);
}

static bool rule_match(const char *rule, const char *method, size_t method_len, bool upgrade,
		       const char *path, size_t path_len, bool fuzzy);

/*
 * Review rules are a deny-list inside what is allowed, so they take what
 * an upstream routes alike (review, stop 34: allowing every method on /v1
 * and reviewing DELETE of one invoice let DELETE /v1/invoices/42/ and
 * /v1/INVOICES/42 through, which Express, ASP.NET Core and Spring 5 route
 * to the same handler): the path's case, one trailing slash, HEAD as GET;
 * and (review, stop 43) a format suffix on the last segment
 * (/v1/payouts.json: Rails adds (.:format) to every route, older Spring
 * MVC matched suffixes) and PUT and PATCH for each other (Rails routes
 * both to update). Allow rules stay exact (case-sensitive: failing closed).
 * And (review, stop 64) an upgraded GET is a GET too: an upstream with no
 * WebSocket on the route (Go's net/http, Node's http without an 'upgrade'
 * listener, Flask, Spring MVC) answers it as the plain GET, which is
 * relayed, so a "GET" or "*" review holds it beside an "UPGRADE" one.
 */
static bool review_methods(const char *rule, const char *method, size_t mlen, bool upgrade, const char *path,
			   size_t plen, bool fuzzy)
{
	bool head = mlen == 4 && memcmp(method, "HEAD", 4) == 0;
	bool put = mlen == 3 && memcmp(method, "PUT", 3) == 0;
	bool patch = mlen == 5 && memcmp(method, "PATCH", 5) == 0;
	/* "*" leaves TRACE out of an allow; a review of "*" holds one that a
	 * rule naming TRACE allows (review, stop 64) */
	bool trace = mlen == 5 && memcmp(method, "TRACE", 5) == 0 && rule[0] == '*' && rule[1] == ' ';

	return rule_match(rule, method, mlen, upgrade, path, plen, fuzzy) ||
	       (trace && rule_match(rule, "GET", 3, upgrade, path, plen, fuzzy)) ||
	       (upgrade && rule_match(rule, method, mlen, false, path, plen, fuzzy)) ||
	       (head && rule_match(rule, "GET", 3, upgrade, path, plen, fuzzy)) ||
	       (put && rule_match(rule, "PATCH", 5, upgrade, path, plen, fuzzy)) ||
	       (patch && rule_match(rule, "PUT", 3, upgrade, path, plen, fuzzy));
}

/* The path cut at the first (first true) or the last '.' of its last
 * segment, after a name: Rails' (.:format) takes anything but '/', '.' and
 * '?' after the last dot, older Spring anything after the first (review:
 * a class of characters or a bound on the length let "payouts.x-y"
 * through). plen when there is none. */
static size_t without_format(const char *path, size_t plen, bool first)
{
	size_t seg = plen, cut = plen;

	while (seg > 0 && path[seg - 1] != '/')
		seg--;
	for (size_t i = seg + 1; i < plen; i++)
		if (path[i] == '.') {
			cut = i;
			if (first)
				break;
		}
	return cut;
}

static bool review_paths(const char *rule, const char *method, size_t mlen, bool upgrade, const char *path,
			 size_t plen, bool fuzzy)
{
	size_t f1 = without_format(path, plen, true), f2 = without_format(path, plen, false);

	return review_methods(rule, method, mlen, upgrade, path, plen, fuzzy) ||
	       (f1 < plen && review_methods(rule, method, mlen, upgrade, path, f1, fuzzy)) ||
	       (f2 < plen && f2 != f1 && review_methods(rule, method, mlen, upgrade, path, f2, fuzzy));
}

/*
 * A segment that may be a short (8.3) name: "~" and a digit, as in
 * "SECRE~1.TXT" or "PROGRA~2". Windows makes one for a long name from the
 * first letters left after dropping what 8.3 cannot hold (dots, spaces,
 * '+'...) and a number that depends on what else the directory holds, so
 * no rule can tell which long name it is: in review rules it stands for
 * any (review, stop 59). Such names are rare in URLs but for this.
 */
static bool short_name(const char *g, size_t gl)
{
	for (size_t i = 0; i + 1 < gl; i++)
		if (g[i] == '~' && g[i + 1] >= '0' && g[i + 1] <= '9')
			return true;
	return false;
}

/*
 * The path (lower case, no trailing slash) as an upstream on Windows that
 * hands it to the file system reads it (review, stop 59): in each segment,
 * ':' starts an alternate data stream ("secret.txt::$DATA" is the file's
 * own data, "admin::$INDEX_ALLOCATION" the directory), and trailing dots
 * and spaces are dropped ("secret.txt%20." is secret.txt); a segment they
 * leave empty goes with its '/'. IIS static files, and express.static,
 * Python's send_from_directory and the like running on Windows, serve
 * GET /files/secret.txt::$DATA as /files/secret.txt. Written to out (at
 * least len + 1 bytes); returns its length.
 */
static size_t windows_alias(const char *path, size_t len, char *out)
{
	size_t o = 0, i = 0;

	while (i < len) {
		size_t s = i + 1, e = s, n;   /* the segment after the '/' at i: [s, e) */

		while (e < len && path[e] != '/')
			e++;
		n = e - s;
		const char *colon = memchr(path + s, ':', n);
		if (colon)
			n = (size_t)(colon - (path + s));
		for (;;) {
			if (n >= 1 && path[s + n - 1] == '.')
				n--;
			else if (n >= 3 && memcmp(path + s + n - 3, "%20", 3) == 0)
				n -= 3;
			else
				break;
		}
		if (n || e == s) {   /* one that was empty stays (not a name) */
			out[o++] = '/';
			memcpy(out + o, path + s, n);
			o += n;
		}
		i = e;
	}
	if (!o)
		out[o++] = '/';
	out[o] = '\0';
	return o;
}

/* A pass with seg_eq_fuzzy() is needed: an encoded non-ASCII run or a
 * short name somewhere in the path. */
static bool wants_fuzzy(const char *path, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (wild_len(path + i, len - i))
			return true;
	return short_name(path, len);
}

bool http_review_match(const char *rule, const char *method, size_t mlen, bool upgrade, const char *path,
		       size_t plen)
{
	char lrule[4200], lpath_s[2 * 2048], *lpath = lpath_s, *wpath;
	size_t rl = strlen(rule), sp, lplen = plen, wlen;
	bool hit;

	if (review_paths(rule, method, mlen, upgrade, path, plen, false))
		return true;
	if (rl >= sizeof(lrule))
		return false;   /* no rule is this long (policy strings: 4096 bytes) */
	if (plen >= sizeof(lpath_s) / 2 && !(lpath = malloc(2 * (plen + 1))))
		return true;    /* cannot tell: held, not let through */
	wpath = lpath + plen + 1;
	memcpy(lrule, rule, rl + 1);
	sp = strcspn(lrule, " ");
	for (size_t i = sp; i < rl; i++)
		lrule[i] = (char)tolower((unsigned char)lrule[i]);
	for (size_t i = 0; i < plen; i++)
		lpath[i] = (char)tolower((unsigned char)path[i]);
	if (lplen > 1 && lpath[lplen - 1] == '/')
		lplen--;
	lpath[lplen] = '\0';
	/* non-ASCII characters and short names: any text (seg_eq_fuzzy),
	 * one more pass */
	hit = review_paths(lrule, method, mlen, upgrade, lpath, lplen, false) ||
	      (wants_fuzzy(lpath, lplen) && review_paths(lrule, method, mlen, upgrade, lpath, lplen, true));
	if (!hit && lplen && lpath[0] == '/') {
		wlen = windows_alias(lpath, lplen, wpath);
		if (wlen != lplen || memcmp(wpath, lpath, lplen) != 0)
			hit = review_paths(lrule, method, mlen, upgrade, wpath, wlen, false) ||
			      (wants_fuzzy(wpath, wlen) &&
			       review_paths(lrule, method, mlen, upgrade, wpath, wlen, true));
	}
	if (lpath != lpath_s)
		free(lpath);
	return hit;
}

int http_rule_check(const char *rule, const char **why)
{
	const char *sp = strchr(rule, ' ');
	size_t plen;
	char canon[1024];
	struct http_target r;

	*why = NULL;
	if (!sp || sp == rule) {
		*why = "must look like \"METHOD /path\"";
		return -EINVAL;
	}
	if (!(sp == rule + 1 && rule[0] == '*')) {
		if (sp - rule > 20) {
			*why = "method too long";
			return -EINVAL;
		}
		for (const char *c = rule; c < sp; c++)
			if (*c < 'A' || *c > 'Z') {
				*why = "method must be upper-case letters or \"*\"";
				return -EINVAL;
			}
	}
	if (sp - rule == 7 && memcmp(rule, "CONNECT", 7) == 0) {
		*why = "CONNECT is not supported in rules";
		return -EINVAL;
	}
	plen = strlen(sp + 1);
	if (!plen || sp[1] != '/') {
		*why = "path must start with '/'";
		return -EINVAL;
	}
	if (plen >= sizeof(canon) - 2) {
		*why = "path too long";
		return -EINVAL;
	}
	/* The pattern must already be canonical: a pattern that no canonical
	 * path can equal would silently never match. '*' is a sub-delim, so the
	 * canonicaliser accepts it; partial wildcards ("inv*") are refused. */
	if (http_target_canon((const uint8_t *)sp + 1, plen, false, canon, sizeof(canon), &r) < 0) {
		*why = r.error;
		return -EINVAL;
	}
	if (r.query) {
		*why = "a query in a rule is not supported";
		return -EINVAL;
	}
	if (r.path_len != plen || memcmp(canon, sp + 1, plen) != 0) {
		*why = "path is not canonical (write unreserved characters unescaped, escapes in upper case)";
		return -EINVAL;
	}
	for (const char *s = canon + 1, *end = canon + r.path_len; s <= end;) {
		size_t sl = seg_end(s, end);

		if (memchr(s, '*', sl) && !(sl == 1 || (sl == 2 && s[1] == '*'))) {
			*why = "'*' must be a whole segment (\"*\" or \"**\")";
			return -EINVAL;
		}
		s += sl + 1;
	}
	return 0;
}

bool http_rule_match(const char *rule, const char *method, size_t method_len, bool upgrade,
		     const char *path, size_t path_len)
{
	return rule_match(rule, method, method_len, upgrade, path, path_len, false);
}

static bool rule_match(const char *rule, const char *method, size_t method_len, bool upgrade,
		       const char *path, size_t path_len, bool fuzzy)
{
	const char *sp = strchr(rule, ' ');
	size_t rl;

	if (!sp)
		return false;
	rl = (size_t)(sp - rule);
	if (upgrade) {
		/* only an explicit UPGRADE rule, and only for GET */
		if (rl != 7 || memcmp(rule, "UPGRADE", 7) != 0 || method_len != 3 ||
		    memcmp(method, "GET", 3) != 0)
			return false;
	} else if (rl == 7 && memcmp(rule, "UPGRADE", 7) == 0) {
		return false;   /* an UPGRADE rule is not a method named UPGRADE */
	} else if (rl == 1 && rule[0] == '*') {
		if ((method_len == 7 && memcmp(method, "CONNECT", 7) == 0) ||
		    (method_len == 5 && memcmp(method, "TRACE", 5) == 0))
			return false;
	} else if (rl != method_len || memcmp(rule, method, rl) != 0) {
		return false;
	}
	return pattern_match(sp + 1, strlen(sp + 1), path, path_len, fuzzy);
}
