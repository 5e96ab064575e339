// SPDX-License-Identifier: Apache-2.0
/*
 * http_msg: strict HTTP/1.x heads and chunked coding. Why hand-written and
 * what is refused: see http_msg.h. Decisions are made on complete lines
 * only, so a prefix of an acceptable head is never MALFORMED, and a caller
 * that holds the bound gets a final answer.
 */
#include "http_msg.h"

#include <errno.h>
#include <string.h>

/* RFC 9110 §5.6.2 tchar */
static const uint8_t tchar[256] = {
	['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1,
	['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
	['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
	['8'] = 1, ['9'] = 1,
	['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
	['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
	['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
	['Y'] = 1, ['Z'] = 1,
	['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
	['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
	['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
	['y'] = 1, ['z'] = 1,
};

static bool value_byte_ok(uint8_t b)
{
	return b == '\t' || (b >= 0x20 && b != 0x7f);   /* VCHAR, SP, HTAB, obs-text */
}

bool http_token_ok(const uint8_t *s, size_t n)
{
	if (!n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!tchar[s[i]])
			return false;
	return true;
}

bool http_value_ok(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!value_byte_ok(s[i]))
			return false;
	return true;
}

static uint8_t lower(uint8_t b)
{
	return b >= 'A' && b <= 'Z' ? b + ('a' - 'A') : b;
}

static bool ieq(const uint8_t *s, size_t n, const char *lit)
{
	size_t i;

	for (i = 0; i < n && lit[i]; i++)
		if (lower(s[i]) != lower((uint8_t)lit[i]))
			return false;
	return i == n && !lit[i];
}

bool http_name_eq(const uint8_t *s, const char *name, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (lower(s[i]) != lower((uint8_t)name[i]))
			return false;
	return true;
}

/*
 * The next line of buf starting at *pos: [*pos, *end) without its CRLF.
 * Returns HTTP_OK and moves *pos past the CRLF, NEED_MORE when no LF yet,
 * MALFORMED on a bare LF or a CR not followed by LF.
 */
static int next_line(const uint8_t *buf, size_t len, size_t *pos, size_t *end, const char **why)
{
	const uint8_t *lf = memchr(buf + *pos, '\n', len - *pos);
	const uint8_t *cr = memchr(buf + *pos, '\r', len - *pos);

	if (cr && (!lf || cr < lf - 1)) {
		if (cr + 1 < buf + len) {
			*why = "bare CR in the head";
			return HTTP_MALFORMED;
		}
	}
	if (!lf)
		return HTTP_NEED_MORE;
	if (lf == buf + *pos || lf[-1] != '\r') {
		*why = "bare LF in the head (lines must end in CRLF)";
		return HTTP_MALFORMED;
	}
	*end = (size_t)(lf - 1 - buf);
	*pos = (size_t)(lf + 1 - buf);
	return HTTP_OK;
}

static bool all_digits(const uint8_t *s, size_t n)
{
	if (!n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

/* Connection: a comma-separated list of tokens (empty elements tolerated). */
static int parse_connection(const uint8_t *v, size_t n, unsigned *flags)
{
	size_t i = 0;

	while (i < n) {
		size_t s, e;

		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		s = i;
		while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
			i++;
		e = i;
		while (i < n && (v[i] == ' ' || v[i] == '\t'))
			i++;
		if (i < n && v[i] != ',')
			return -EINVAL;
		if (s == e)
			continue;
		if (!http_token_ok(v + s, e - s))
			return -EINVAL;
		if (ieq(v + s, e - s, "close"))
			*flags |= HTTP_CONN_CLOSE;
		else if (ieq(v + s, e - s, "keep-alive"))
			*flags |= HTTP_CONN_KEEPALIVE;
		else if (ieq(v + s, e - s, "upgrade"))
			*flags |= HTTP_CONN_UPGRADE;
		else
			*flags |= HTTP_CONN_OTHER;
	}
	return 0;
}

/* n bytes at s read as lit (prefix: as a prefix of lit's length), with
 * '_' taken for '-' and ASCII case folded. */
static bool twin_eq(const uint8_t *s, size_t n, const char *lit, bool prefix)
{
	size_t l = strlen(lit);

	if (prefix ? n < l : n != l)
		return false;
	for (size_t i = 0; i < l; i++)
		if ((s[i] == '_' ? '-' : lower(s[i])) != (uint8_t)lit[i])
			return false;
	return true;
}

/*
 * CGI, PHP-FPM and WSGI servers name a header HTTP_<NAME>, '-' and '_'
 * alike: to them "X_Forwarded_For" is X-Forwarded-For. A request field
 * whose name has a '_' and reads, with '-' for it, as a field a proxy gives
 * meaning to (framing, hop-by-hop, identity, method override) would pass
 * every check made on the '-' spelling, so it is refused. Other names with
 * '_' ("api_key") are ordinary fields.
 */
static bool underscore_twin(const uint8_t *s, size_t n)
{
	static const char *const exact[] = {
		"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
		"expect", "te", "trailer", "authorization", "cookie", "forwarded", "x-real-ip",
		"x-http-method-override", "x-http-method", "x-method-override", "http2-settings",
		/* what masked routes strip: a twin would make a validator or a
		 * range of the unmasked body an oracle */
		"if-none-match", "if-match", "if-modified-since", "if-unmodified-since", "if-range",
		"range", "request-range", "destination",
		/* path overrides the http module strips (review, stop 43) */
		"x-original-url", "x-rewrite-url", "x-override-url", "x-original-uri",
	};
	static const char *const prefix[] = { "proxy-", "x-forwarded-", "impersonate-", "x-remote-" };

	if (!memchr(s, '_', n))
		return false;
	for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++)
		if (twin_eq(s, n, exact[i], false))
			return true;
	for (size_t i = 0; i < sizeof(prefix) / sizeof(prefix[0]); i++)
		if (twin_eq(s, n, prefix[i], true))
			return true;
	return false;
}

static int fail(struct http_head *h, const char *why)
{
	h->error = why;
	return HTTP_MALFORMED;
}

/* Header fields from pos to the blank line; shared by requests and responses. */
static int parse_fields(const uint8_t *buf, size_t len, size_t pos, size_t max,
			struct http_head *h, bool request)
{
	int cl = -1, te = -1;

	for (;;) {
		size_t s = pos, e, i;
		const char *why = NULL;
		int st = next_line(buf, len, &pos, &e, &why);
		struct http_field *f;

		if (st == HTTP_NEED_MORE)
			return len >= max ? fail(h, "head too large") : HTTP_NEED_MORE;
		if (st != HTTP_OK)
			return fail(h, why);
		if (pos > max)
			return fail(h, "head too large");
		if (e == s)
			break;
		if (buf[s] == ' ' || buf[s] == '\t')
			return fail(h, "obs-fold (a header line starting with whitespace)");
		if (h->nf == HTTP_MAX_HEADERS)
			return fail(h, "too many header fields");
		for (i = s; i < e && buf[i] != ':'; i++) {
			if (buf[i] == ' ' || buf[i] == '\t')
				return fail(h, "whitespace before the colon of a header field");
			if (!tchar[buf[i]])
				return fail(h, "invalid byte in a header field name");
		}
		if (i == e)
			return fail(h, "header line without a colon");
		if (i == s)
			return fail(h, "empty header field name");
		if (request && underscore_twin(buf + s, i - s))
			return fail(h, "a header name with '_' that CGI and WSGI servers read as a "
				    "framing, identity or method-override field");
		f = &h->f[h->nf];
		f->name = (uint32_t)s;
		f->name_len = (uint32_t)(i - s);
		for (i++; i < e && (buf[i] == ' ' || buf[i] == '\t'); i++)
			;
		while (e > i && (buf[e - 1] == ' ' || buf[e - 1] == '\t'))
			e--;
		if (!http_value_ok(buf + i, e - i))
			return fail(h, "NUL or control byte in a header field value");
		f->value = (uint32_t)i;
		f->value_len = (uint32_t)(e - i);

		if (http_field_is(buf, f, "host")) {
			if (h->host >= 0)
				return fail(h, "duplicate Host");
			h->host = (int)h->nf;
		} else if (http_field_is(buf, f, "content-length")) {
			if (cl >= 0)
				return fail(h, "duplicate Content-Length");
			if (!all_digits(buf + i, e - i) || e - i > 18)
				return fail(h, "Content-Length is not a plain decimal number");
			cl = (int)h->nf;
			h->content_length = 0;
			for (size_t k = i; k < e; k++)
				h->content_length = h->content_length * 10 + (buf[k] - '0');
		} else if (http_field_is(buf, f, "transfer-encoding")) {
			if (te >= 0)
				return fail(h, "duplicate Transfer-Encoding");
			if (!ieq(buf + i, e - i, "chunked"))
				return fail(h, "unsupported transfer coding (only a single \"chunked\" is accepted)");
			te = (int)h->nf;
		} else if (http_field_is(buf, f, "connection")) {
			if (parse_connection(buf + i, e - i, &h->conn) < 0)
				return fail(h, "malformed Connection field");
		} else if (request && http_field_is(buf, f, "expect")) {
			if (h->expect >= 0)
				return fail(h, "duplicate Expect");
			if (!ieq(buf + i, e - i, "100-continue"))
				return fail(h, "unsupported expectation");
			h->expect = (int)h->nf;
			h->expect_continue = true;
		} else if (http_field_is(buf, f, "upgrade")) {
			if (h->upgrade >= 0)
				return fail(h, "duplicate Upgrade");
			h->upgrade = (int)h->nf;
		}
		h->nf++;
	}
	if (cl >= 0 && te >= 0)
		return fail(h, "both Content-Length and Transfer-Encoding");
	if (te >= 0 && h->version == 10)
		return fail(h, "Transfer-Encoding in an HTTP/1.0 message");
	h->head_len = (uint32_t)pos;
	if (te >= 0)
		h->body = HTTP_BODY_CHUNKED;
	else if (cl >= 0)
		h->body = HTTP_BODY_LENGTH;
	return HTTP_OK;
}

static void head_init(struct http_head *h)
{
	memset(h, 0, sizeof(*h));
	h->host = h->expect = h->upgrade = -1;
}

static int parse_version(const uint8_t *s, size_t n, int *version)
{
	if (n != 8 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1'))
		return -EINVAL;
	*version = s[7] == '1' ? 11 : 10;
	return 0;
}

int http_req_parse(const uint8_t *buf, size_t len, struct http_head *h)
{
	size_t pos = 0, e, i, t;
	const char *why = NULL;
	int st;

	head_init(h);
	st = next_line(buf, len, &pos, &e, &why);
	if (st == HTTP_NEED_MORE) {
		/* Fail fast on what cannot become a request line. */
		for (i = 0; i < len && i <= HTTP_METHOD_MAX && buf[i] != ' '; i++)
			if (buf[i] < 'A' || buf[i] > 'Z')
				return fail(h, "method is not upper-case letters");
		if (i > HTTP_METHOD_MAX)
			return fail(h, "method too long");
		return len >= HTTP_HEAD_MAX ? fail(h, "request line too long") : HTTP_NEED_MORE;
	}
	if (st != HTTP_OK)
		return fail(h, why);
	if (pos > HTTP_HEAD_MAX)
		return fail(h, "request line too long");
	for (i = 0; i < e && buf[i] != ' '; i++)
		if (buf[i] < 'A' || buf[i] > 'Z')
			return fail(h, "method is not upper-case letters");
	if (i == 0 || i == e)
		return fail(h, "malformed request line");
	if (i > HTTP_METHOD_MAX)
		return fail(h, "method too long");
	h->method = 0;
	h->method_len = (uint32_t)i;
	t = i + 1;
	for (i = t; i < e && buf[i] != ' '; i++)
		if (buf[i] <= 0x20 || buf[i] >= 0x7f)
			return fail(h, "control, space or non-ASCII byte in the request target");
	if (i == t || i == e)
		return fail(h, "malformed request line");
	h->target = (uint32_t)t;
	h->target_len = (uint32_t)(i - t);
	if (parse_version(buf + i + 1, e - i - 1, &h->version) < 0)
		return fail(h, "unsupported HTTP version (only HTTP/1.0 and HTTP/1.1)");
	st = parse_fields(buf, len, pos, HTTP_HEAD_MAX, h, true);
	if (st != HTTP_OK)
		return st;
	if (h->version == 11 && h->host < 0)
		return fail(h, "HTTP/1.1 request without Host");
	return HTTP_OK;
}

int http_resp_parse(const uint8_t *buf, size_t len, bool req_method_head, struct http_head *h)
{
	size_t pos = 0, e;
	const char *why = NULL;
	int st;

	head_init(h);
	st = next_line(buf, len, &pos, &e, &why);
	if (st == HTTP_NEED_MORE)
		return len >= HTTP_RESP_HEAD_MAX ? fail(h, "status line too long") : HTTP_NEED_MORE;
	if (st != HTTP_OK)
		return fail(h, why);
	if (e < 12 || parse_version(buf, 8, &h->version) < 0 || buf[8] != ' ' ||
	    !all_digits(buf + 9, 3) || (e > 12 && buf[12] != ' '))
		return fail(h, "malformed status line");
	h->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
	if (h->status < 100)
		return fail(h, "malformed status line");
	if (e > 12 && !http_value_ok(buf + 13, e - 13))
		return fail(h, "control byte in the reason phrase");
	st = parse_fields(buf, len, pos, HTTP_RESP_HEAD_MAX, h, false);
	if (st != HTTP_OK)
		return st;
	if (req_method_head || h->status < 200 || h->status == 204 || h->status == 304)
		h->body = HTTP_BODY_NONE;
	else if (h->body == HTTP_BODY_NONE) {
		bool has_cl = false;

		for (unsigned i = 0; i < h->nf; i++)
			has_cl |= http_field_is(buf, &h->f[i], "content-length");
		h->body = has_cl ? HTTP_BODY_LENGTH : HTTP_BODY_EOF;
	}
	return HTTP_OK;
}

bool http_conn_names(const uint8_t *buf, const struct http_head *h, const struct http_field *f)
{
	if (!(h->conn & HTTP_CONN_OTHER))
		return false;
	for (unsigned k = 0; k < h->nf; k++) {
		const struct http_field *c = &h->f[k];
		const uint8_t *v = buf + c->value;
		size_t i = 0, n = c->value_len;

		if (!http_field_is(buf, c, "connection"))
			continue;
		while (i < n) {
			size_t s, j;

			while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
				i++;
			s = i;
			while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
				i++;
			if (i - s != f->name_len)
				continue;
			for (j = 0; j < f->name_len; j++)
				if (lower(v[s + j]) != lower(buf[f->name + j]))
					break;
			if (j == f->name_len)
				return true;
		}
	}
	return false;
}

/* ---- chunked ------------------------------------------------------------ */

enum {
	CH_SIZE = 0,       /* hex digits of a chunk size */
	CH_EXT,            /* after ';' */
	CH_SIZE_LF,        /* CR seen after the size line */
	CH_DATA,
	CH_DATA_CR,
	CH_DATA_LF,
	CH_TRAILER,        /* start of a trailer line (or the final CRLF) */
	CH_TRAILER_NAME,
	CH_TRAILER_VALUE,
	CH_TRAILER_LF,
	CH_END_LF,
	CH_DONE,
	CH_ERROR,
};

void http_chunked_init(struct http_chunked *ch)
{
	memset(ch, 0, sizeof(*ch));
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

static int ch_fail(struct http_chunked *ch, const char *why)
{
	ch->state = CH_ERROR;
	ch->error = why;
	return -EINVAL;
}

int http_chunked_feed(struct http_chunked *ch, const uint8_t *in, size_t len,
		      size_t *used, size_t *doff, size_t *dlen)
{
	size_t i = 0;

	*used = *doff = *dlen = 0;
	if (ch->state == CH_ERROR)
		return -EINVAL;
	while (i < len && ch->state != CH_DONE) {
		uint8_t b = in[i];
		int v;

		switch (ch->state) {
		case CH_SIZE:
			v = hexval(b);
			if (v >= 0) {
				if (ch->n >= 16)
					return ch_fail(ch, "chunk size too long");
				ch->remaining = ch->remaining << 4 | (uint64_t)v;
				ch->n++;
			} else if (!ch->n) {
				return ch_fail(ch, "chunk size is not hexadecimal");
			} else if (b == ';') {
				ch->state = CH_EXT;
				ch->n = 0;
			} else if (b == '\r') {
				ch->state = CH_SIZE_LF;
			} else {
				return ch_fail(ch, "malformed chunk size line");
			}
			break;
		case CH_EXT:
			/* ";name" or ";name=value", tokens only, bounded; dropped. */
			if (b == '\r') {
				ch->state = CH_SIZE_LF;
			} else if (!tchar[b] && b != '=' && b != ';') {
				return ch_fail(ch, "malformed chunk extension");
			} else if (++ch->n > HTTP_CHUNK_EXT_MAX) {
				return ch_fail(ch, "chunk extension too long");
			}
			break;
		case CH_SIZE_LF:
			if (b != '\n')
				return ch_fail(ch, "bare CR in a chunk size line");
			ch->n = 0;
			ch->state = ch->remaining ? CH_DATA : CH_TRAILER;
			break;
		case CH_DATA: {
			size_t take = len - i;

			if (take > ch->remaining)
				take = (size_t)ch->remaining;
			ch->remaining -= take;
			if (!ch->remaining)
				ch->state = CH_DATA_CR;
			*doff = i;
			*dlen = take;
			*used = i + take;
			return 0;
		}
		case CH_DATA_CR:
			if (b != '\r')
				return ch_fail(ch, "chunk data longer than its size");
			ch->state = CH_DATA_LF;
			break;
		case CH_DATA_LF:
			if (b != '\n')
				return ch_fail(ch, "bare CR after chunk data");
			ch->state = CH_SIZE;
			ch->n = 0;
			ch->remaining = 0;
			break;
		case CH_TRAILER:
			if (b == '\r') {
				ch->state = CH_END_LF;
				break;
			}
			ch->state = CH_TRAILER_NAME;
			/* fall through: b is the first byte of a name */
			__attribute__((fallthrough));
		case CH_TRAILER_NAME:
			if (++ch->n > HTTP_TRAILER_MAX)
				return ch_fail(ch, "trailer section too large");
			if (b == ':' && ch->name_len) {
				ch->state = CH_TRAILER_VALUE;
			} else if (!tchar[b]) {
				return ch_fail(ch, "malformed trailer field");
			} else {
				ch->name_len++;
			}
			break;
		case CH_TRAILER_VALUE:
			if (++ch->n > HTTP_TRAILER_MAX)
				return ch_fail(ch, "trailer section too large");
			if (b == '\r')
				ch->state = CH_TRAILER_LF;
			else if (!value_byte_ok(b))
				return ch_fail(ch, "control byte in a trailer field");
			break;
		case CH_TRAILER_LF:
			if (b != '\n')
				return ch_fail(ch, "bare CR in a trailer field");
			ch->state = CH_TRAILER;
			ch->name_len = 0;
			break;
		case CH_END_LF:
			if (b != '\n')
				return ch_fail(ch, "bare CR at the end of a chunked body");
			ch->state = CH_DONE;
			ch->done = true;
			break;
		}
		i++;
	}
	*used = i;
	return 0;
}

bool http_req_resendable(const uint8_t *buf, const struct http_head *h)
{
	static const char *const safe[] = { "GET", "HEAD", "OPTIONS" };
	bool ok = false;

	for (size_t i = 0; i < sizeof(safe) / sizeof(safe[0]); i++)
		if (h->method_len == strlen(safe[i]) && memcmp(buf + h->method, safe[i], h->method_len) == 0)
			ok = true;
	if (h->body == HTTP_BODY_CHUNKED || (h->body == HTTP_BODY_LENGTH && h->content_length))
		return false;
	return ok && h->upgrade < 0 && !(h->conn & HTTP_CONN_UPGRADE) && h->expect < 0;
}

size_t http_chunk_header(uint64_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	char tmp[16];
	size_t k = 0, len = 0;

	do {
		tmp[k++] = hex[n & 15];
		n >>= 4;
	} while (n);
	while (k)
		out[len++] = tmp[--k];
	out[len++] = '\r';
	out[len++] = '\n';
	return len;
}
