// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for userspace/http_msg.c: request and response heads, chunked
 * decoding. The framing cases of /work/shared/cases/http.txt (H21..H37) are
 * here by id; the path cases are in test_http_path.c. Every input is parsed
 * from a heap copy of exactly its length so ASan sees a read past the end.
 *
 *   test_http_msg                      run the tests
 *   test_http_msg --write-corpus DIR   also write each named request to DIR
 */
#include "http_msg.h"
#include "unit.h"

#define OK        HTTP_OK
#define NEED_MORE HTTP_NEED_MORE
#define MALFORMED HTTP_MALFORMED

static int req(const char *s, size_t len, struct http_head *h)
{
	uint8_t *copy = malloc(len ? len : 1);
	int st;

	if (!copy)
		abort();
	memcpy(copy, s, len);
	st = http_req_parse(copy, len, h);
	/* Library promises, whatever the input. */
	CHECK(st == OK || st == NEED_MORE || st == MALFORMED);
	if (st == NEED_MORE)
		CHECK(len < HTTP_HEAD_MAX);
	if (st == MALFORMED)
		CHECK(h->error != NULL);
	if (st == OK) {
		CHECK(h->head_len <= len && h->nf <= HTTP_MAX_HEADERS);
		CHECK(h->method_len > 0 && h->target_len > 0);
	}
	free(copy);
	return st;
}

static int reqs(const char *s, struct http_head *h)
{
	return req(s, strlen(s), h);
}

static int resp(const char *s, bool head, struct http_head *h)
{
	size_t len = strlen(s);
	uint8_t *copy = malloc(len ? len : 1);
	int st;

	if (!copy)
		abort();
	memcpy(copy, s, len);
	st = http_resp_parse(copy, len, head, h);
	free(copy);
	return st;
}

struct req_case {
	const char *id;
	const char *raw;
	int want;
};

/* The framing cases of cases/http.txt, plus the ways around each rule. */
static const struct req_case req_cases[] = {
	{ "H01", "GET /v1/invoices/42 HTTP/1.1\r\nHost: api.internal\r\n\r\n", OK },
	{ "H21", "POST /v1/invoices HTTP/1.1\r\nHost: api.internal\r\nContent-Length: 4\r\n"
		 "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", MALFORMED },
	{ "H21-te-first", "POST /v1/invoices HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
		 "Content-Length: 4\r\n\r\n", MALFORMED },
	{ "H23", "POST /v1/invoices HTTP/1.1\r\nHost: api.internal\r\nTransfer-Encoding : chunked\r\n\r\n",
	  MALFORMED },
	{ "H23-tab", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", MALFORMED },
	{ "H25", "POST /v1/invoices HTTP/1.1\r\nHost: api.internal\r\nContent-Length: +4\r\n\r\nabcd",
	  MALFORMED },
	{ "H25-neg", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", MALFORMED },
	{ "H25-hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x4\r\n\r\n", MALFORMED },
	{ "H25-list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 4\r\n\r\n", MALFORMED },
	{ "H25-empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", MALFORMED },
	{ "H25-huge", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
	  MALFORMED },
	{ "H27", "GET /v1/invoices/42 HTTP/1.1\r\nHost: api.internal\r\nX-A: b\r\n folded\r\n\r\n",
	  MALFORMED },
	{ "H27-tab", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tfolded\r\n\r\n", MALFORMED },
	{ "H31", "POST /v1/admin/users HTTP/1.1\r\nHost: api.internal\r\nExpect: 100-continue\r\n"
		 "Content-Length: 5\r\n\r\nhello", OK },
	{ "H33", "CONNECT api.internal:443 HTTP/1.1\r\nHost: api.internal:443\r\n\r\n", OK },
	{ "H35", "GET /v1/invoices/42 HTTP/1.1\r\nHost: api.internal\r\nX-HTTP-Method-Override: DELETE\r\n\r\n",
	  OK },
	{ "H37", "GET /v1/invoices HTTP/1.1\r\nHost: api.internal\r\nRange: bytes=0-10\r\n\r\n", OK },
	{ "bare-lf", "GET / HTTP/1.1\nHost: a\n\n", MALFORMED },
	{ "bare-lf-header", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", MALFORMED },
	{ "bare-lf-end", "GET / HTTP/1.1\r\nHost: a\r\n\n", MALFORMED },
	{ "bare-cr", "GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", MALFORMED },
	{ "nul-value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", MALFORMED },
	{ "ctl-value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01" "b\r\n\r\n", MALFORMED },
	{ "del-value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", MALFORMED },
	{ "utf8-value", "GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n", OK },
	{ "utf8-name", "GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa9: b\r\n\r\n", MALFORMED },
	{ "empty-name", "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", MALFORMED },
	{ "no-colon", "GET / HTTP/1.1\r\nHost: a\r\nfoo\r\n\r\n", MALFORMED },
	{ "dup-host", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", MALFORMED },
	{ "dup-host-case", "GET / HTTP/1.1\r\nHost: a\r\nhOST: b\r\n\r\n", MALFORMED },
	{ "dup-cl-same", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
	  MALFORMED },
	{ "dup-te", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
		    "Transfer-Encoding: chunked\r\n\r\n", MALFORMED },
	{ "te-gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", MALFORMED },
	{ "te-chunked-twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
	  MALFORMED },
	{ "te-identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", MALFORMED },
	{ "te-space-inside", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chun ked\r\n\r\n",
	  MALFORMED },
	{ "te-upper", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n", OK },
	{ "te-http10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", MALFORMED },
	{ "no-host-11", "GET / HTTP/1.1\r\n\r\n", MALFORMED },
	{ "no-host-10", "GET / HTTP/1.0\r\n\r\n", OK },
	{ "http2", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", MALFORMED },
	{ "http09", "GET /\r\n\r\n", MALFORMED },
	{ "version-case", "GET / http/1.1\r\nHost: a\r\n\r\n", MALFORMED },
	{ "method-lower", "get / HTTP/1.1\r\nHost: a\r\n\r\n", MALFORMED },
	{ "method-long", "ABCDEFGHIJKLMNOPQRSTU / HTTP/1.1\r\nHost: a\r\n\r\n", MALFORMED },
	{ "two-spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", MALFORMED },
	{ "space-in-target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", MALFORMED },
	{ "tab-sep", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", MALFORMED },
	{ "trailing-space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", MALFORMED },
	{ "leading-crlf", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", MALFORMED },
	{ "high-byte-target", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", MALFORMED },
	{ "expect-other", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", MALFORMED },
	{ "dup-expect", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nExpect: 100-continue\r\n\r\n",
	  MALFORMED },
	{ "connection-bad", "GET / HTTP/1.1\r\nHost: a\r\nConnection: a b\r\n\r\n", MALFORMED },
	{ "tls-hello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", MALFORMED },
};

static void test_cases(void)
{
	for (size_t i = 0; i < sizeof(req_cases) / sizeof(req_cases[0]); i++) {
		const struct req_case *c = &req_cases[i];
		/* strlen() stops at the NUL case's NUL: find the real end "\r\n\r\n" */
		size_t len = strlen(c->raw);
		struct http_head h;
		int st;

		if (strcmp(c->id, "nul-value") == 0)
			len = sizeof("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n") - 1;
		st = req(c->raw, len, &h);
		if (st != c->want)
			fprintf(stderr, "  case %s: got %d (%s), want %d\n", c->id, st,
				st == MALFORMED ? h.error : "", c->want);
		CHECK(st == c->want);
		unit_seed(c->id, c->raw, len);
	}
}

static void test_fields(void)
{
	struct http_head h;
	const char *s = "POST /v1/x?y=1 HTTP/1.1\r\nHost:  api.internal \r\nX-Empty:\r\n"
			"Expect: 100-Continue\r\nContent-Length: 5\r\n\r\nhello";

	CHECK(reqs(s, &h) == OK);
	CHECK(h.head_len == strlen(s) - 5);
	CHECK(h.method_len == 4 && memcmp(s + h.method, "POST", 4) == 0);
	CHECK(h.target_len == 9 && memcmp(s + h.target, "/v1/x?y=1", 9) == 0);
	CHECK(h.version == 11);
	CHECK(h.nf == 4);
	CHECK(h.host == 0);
	CHECK(h.f[0].value_len == 12 && memcmp(s + h.f[0].value, "api.internal", 12) == 0);
	CHECK(h.f[1].value_len == 0);
	CHECK(h.expect_continue && h.expect == 2);
	CHECK(h.body == HTTP_BODY_LENGTH && h.content_length == 5);
	CHECK(http_field_is((const uint8_t *)s, &h.f[3], "CONTENT-length"));
	CHECK(!http_field_is((const uint8_t *)s, &h.f[3], "content-lengt"));

	CHECK(reqs("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &h) == OK);
	CHECK(h.body == HTTP_BODY_NONE && h.content_length == 0 && !h.expect_continue);
	CHECK(reqs("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", &h) == OK);
	CHECK(h.body == HTTP_BODY_CHUNKED);
	CHECK(reqs("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 000\r\n\r\n", &h) == OK);
	CHECK(h.body == HTTP_BODY_LENGTH && h.content_length == 0);
	CHECK(reqs("GET / HTTP/1.0\r\n\r\n", &h) == OK);
	CHECK(h.version == 10 && h.host == -1);
}

static void test_connection(void)
{
	struct http_head h;
	const char *s = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\n"
			"Connection: ,keep-alive ,Upgrade\r\nX-Secret: 1\r\nX-Secre: 2\r\nUpgrade: websocket\r\n\r\n";

	CHECK(reqs(s, &h) == OK);
	CHECK(h.conn == (HTTP_CONN_CLOSE | HTTP_CONN_KEEPALIVE | HTTP_CONN_UPGRADE | HTTP_CONN_OTHER));
	CHECK(h.upgrade == 5);
	CHECK(http_conn_names((const uint8_t *)s, &h, &h.f[3]));    /* X-Secret */
	CHECK(!http_conn_names((const uint8_t *)s, &h, &h.f[4]));   /* X-Secre */
	CHECK(!http_conn_names((const uint8_t *)s, &h, &h.f[0]));   /* Host */
	CHECK(reqs("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX: 1\r\n\r\n", &h) == OK);
	CHECK(h.conn == HTTP_CONN_CLOSE);
}

/* H29: two pipelined requests; the second starts exactly at head_len. */
static void test_pipelined(void)
{
	const char *s = "GET /v1/invoices/1 HTTP/1.1\r\nHost: api.internal\r\n\r\n"
			"DELETE /v1/invoices/1 HTTP/1.1\r\nHost: api.internal\r\n\r\n";
	struct http_head h, h2;

	CHECK(reqs(s, &h) == OK);
	CHECK(memcmp(s + h.method, "GET", 3) == 0);
	CHECK(req(s + h.head_len, strlen(s) - h.head_len, &h2) == OK);
	CHECK(h2.method_len == 6 && memcmp(s + h.head_len + h2.method, "DELETE", 6) == 0);
	CHECK(h.head_len + h2.head_len == strlen(s));
	unit_seed("H29", s, strlen(s));
}

/* Every proper prefix of an acceptable head is NEED_MORE, never MALFORMED. */
static void test_prefixes(void)
{
	const char *s = "POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX: y\r\n\r\n";
	struct http_head h;

	for (size_t n = 0; n < strlen(s); n++) {
		int st = req(s, n, &h);

		if (st != NEED_MORE)
			fprintf(stderr, "  prefix %zu: %d\n", n, st);
		CHECK(st == NEED_MORE);
	}
	CHECK(reqs(s, &h) == OK);
}

static void test_bounds(void)
{
	struct http_head h;
	char *big = malloc(HTTP_HEAD_MAX + 64);
	size_t n;

	/* 100 fields are accepted, 101 are not */
	n = (size_t)snprintf(big, 64, "GET / HTTP/1.1\r\nHost: a\r\n");
	for (int i = 1; i < HTTP_MAX_HEADERS; i++)
		n += (size_t)snprintf(big + n, 32, "X-%d: v\r\n", i);
	memcpy(big + n, "\r\n", 3);
	CHECK(req(big, n + 2, &h) == OK);
	CHECK(h.nf == HTTP_MAX_HEADERS);
	n += (size_t)snprintf(big + n, 32, "X-last: v\r\n");
	memcpy(big + n, "\r\n", 3);
	CHECK(req(big, n + 2, &h) == MALFORMED);

	/* a head that never ends: NEED_MORE below the bound, MALFORMED at it */
	n = (size_t)snprintf(big, 64, "GET / HTTP/1.1\r\nHost: a\r\nX: ");
	memset(big + n, 'a', HTTP_HEAD_MAX + 64 - n);
	CHECK(req(big, HTTP_HEAD_MAX - 1, &h) == NEED_MORE);
	CHECK(req(big, HTTP_HEAD_MAX, &h) == MALFORMED);
	/* a complete head just over the bound */
	memcpy(big + HTTP_HEAD_MAX - 2, "\r\n\r\n", 4);
	CHECK(req(big, HTTP_HEAD_MAX + 2, &h) == MALFORMED);
	/* a request line as long as the bound */
	memcpy(big, "GET /", 5);
	memset(big + 5, 'a', HTTP_HEAD_MAX + 59);
	CHECK(req(big, HTTP_HEAD_MAX, &h) == MALFORMED);
	/* garbage fails fast, long before the bound */
	CHECK(req("\x16\x03\x01", 3, &h) == MALFORMED);
	CHECK(req("GE", 2, &h) == NEED_MORE);
	free(big);
}

static void test_responses(void)
{
	struct http_head h;

	CHECK(resp("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", false, &h) == OK);
	CHECK(h.status == 200 && h.body == HTTP_BODY_LENGTH && h.content_length == 12);
	CHECK(resp("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", true, &h) == OK);
	CHECK(h.body == HTTP_BODY_NONE);
	CHECK(resp("HTTP/1.1 204 No Content\r\n\r\n", false, &h) == OK);
	CHECK(h.status == 204 && h.body == HTTP_BODY_NONE);
	CHECK(resp("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false, &h) == OK);
	CHECK(h.body == HTTP_BODY_NONE);
	CHECK(resp("HTTP/1.1 100 Continue\r\n\r\n", false, &h) == OK);
	CHECK(h.status == 100 && h.body == HTTP_BODY_NONE);
	CHECK(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, &h) == OK);
	CHECK(h.body == HTTP_BODY_CHUNKED);
	CHECK(resp("HTTP/1.0 200 OK\r\n\r\n", false, &h) == OK);
	CHECK(h.body == HTTP_BODY_EOF && h.version == 10);
	CHECK(resp("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", false, &h) == OK);
	CHECK(resp("HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", false, &h) == OK);
	CHECK(h.status == 404);
	CHECK(resp("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		   false, &h) == OK);
	CHECK(h.status == 101 && h.upgrade == 0 && (h.conn & HTTP_CONN_UPGRADE));
	CHECK(resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		   false, &h) == MALFORMED);
	CHECK(resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", false, &h) == MALFORMED);
	CHECK(resp("HTTP/1.1 200 OK\nContent-Length: 1\n\n", false, &h) == MALFORMED);
	CHECK(resp("HTTP/1.1 20 OK\r\n\r\n", false, &h) == MALFORMED);
	CHECK(resp("HTTP/1.1 2000 OK\r\n\r\n", false, &h) == MALFORMED);
	CHECK(resp("HTTP/1.1 099 OK\r\n\r\n", false, &h) == MALFORMED);
	CHECK(resp("HTTP/2 200 OK\r\n\r\n", false, &h) == MALFORMED);
	CHECK(resp("ICY 200 OK\r\n\r\n", false, &h) == MALFORMED);
	CHECK(resp("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", false, &h) == MALFORMED);
	CHECK(resp("HTTP/1.1 200 OK\r\nContent", false, &h) == NEED_MORE);
}

/* Decode all of in, feeding it in pieces of at most step bytes. */
static int dechunk(const char *in, size_t len, size_t step, char *out, size_t *outlen, size_t *rest)
{
	struct http_chunked ch;
	size_t o = 0, off = 0;

	http_chunked_init(&ch);
	while (off < len && !ch.done) {
		size_t n = len - off < step ? len - off : step, pos = 0;
		uint8_t *piece = malloc(n);

		memcpy(piece, in + off, n);
		while (pos < n && !ch.done) {
			size_t used, doff, dlen;

			if (http_chunked_feed(&ch, piece + pos, n - pos, &used, &doff, &dlen) < 0) {
				free(piece);
				return -1;
			}
			memcpy(out + o, piece + pos + doff, dlen);
			o += dlen;
			if (!used)
				break;
			pos += used;
		}
		free(piece);
		off += pos;
		if (pos < n && !ch.done)
			return -2;   /* stalled */
	}
	*outlen = o;
	*rest = len - off;
	return ch.done ? 0 : 1;
}

static void test_chunked(void)
{
	static const struct { const char *in; int want; const char *out; size_t rest; } cases[] = {
		{ "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 0, "hello world", 0 },
		{ "5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 0, "hello", 16 },
		{ "A\r\n0123456789\r\n0\r\n\r\n", 0, "0123456789", 0 },
		{ "000a\r\n0123456789\r\n0\r\n\r\n", 0, "0123456789", 0 },
		{ "5;name=value;x\r\nhello\r\n0;last\r\n\r\n", 0, "hello", 0 },
		{ "5\r\nhello\r\n0\r\nX-Trailer: 1\r\nY: two words\r\n\r\n", 0, "hello", 0 },
		{ "5\r\nhello\r\n", 1, "hello", 0 },
		{ "5\r\nhello\r\n0\r\n", 1, "hello", 0 },
		{ "5\nhello\r\n0\r\n\r\n", -1, "", 0 },              /* bare LF */
		{ "5\r\nhelloX\r\n0\r\n\r\n", -1, "hello", 0 },     /* data longer than size */
		{ "5\r\nhello\n0\r\n\r\n", -1, "hello", 0 },
		{ "\r\nhello\r\n0\r\n\r\n", -1, "", 0 },             /* no size */
		{ "-5\r\nhello\r\n0\r\n\r\n", -1, "", 0 },
		{ "0x5\r\nhello\r\n0\r\n\r\n", -1, "", 0 },
		{ "5 \r\nhello\r\n0\r\n\r\n", -1, "", 0 },           /* BWS */
		{ "5 ;a\r\nhello\r\n0\r\n\r\n", -1, "", 0 },
		{ "5;a b\r\nhello\r\n0\r\n\r\n", -1, "", 0 },
		{ "5;a=\"q\"\r\nhello\r\n0\r\n\r\n", -1, "", 0 },    /* quoted ext: refused */
		{ "10000000000000000\r\n", -1, "", 0 },              /* 17 digits */
		{ "5\r\nhello\r\n0\r\nX : 1\r\n\r\n", -1, "hello", 0 },
		{ "5\r\nhello\r\n0\r\n: 1\r\n\r\n", -1, "hello", 0 },
		{ "5\r\nhello\r\n0\r\nX: \x01\r\n\r\n", -1, "hello", 0 },
		{ "5\r\nhello\r\n0\r\n\r\r\n", -1, "hello", 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (size_t step = 1; step <= 64; step = step * 2 + 1) {
			char out[64];
			size_t outlen = 0, rest = 0;
			int st = dechunk(cases[i].in, strlen(cases[i].in), step, out, &outlen, &rest);

			if (st != cases[i].want)
				fprintf(stderr, "  chunked case %zu step %zu: %d want %d\n", i, step, st,
					cases[i].want);
			CHECK(st == cases[i].want);
			if (st == 0) {
				CHECK(outlen == strlen(cases[i].out) && memcmp(out, cases[i].out, outlen) == 0);
				CHECK(rest == cases[i].rest);
			}
		}
	}
}

static void test_chunked_bounds(void)
{
	struct http_chunked ch;
	char big[HTTP_TRAILER_MAX + 64];
	size_t used, doff, dlen, n;

	/* a long extension */
	http_chunked_init(&ch);
	big[0] = '1';
	big[1] = ';';
	memset(big + 2, 'a', HTTP_CHUNK_EXT_MAX + 1);
	CHECK(http_chunked_feed(&ch, (uint8_t *)big, HTTP_CHUNK_EXT_MAX + 2, &used, &doff, &dlen) == 0);
	CHECK(http_chunked_feed(&ch, (uint8_t *)big + 2, 1, &used, &doff, &dlen) == -EINVAL);
	CHECK(ch.error != NULL);
	/* an error is final */
	CHECK(http_chunked_feed(&ch, (const uint8_t *)"\r\n", 2, &used, &doff, &dlen) == -EINVAL);
	/* an endless trailer */
	http_chunked_init(&ch);
	n = (size_t)snprintf(big, 16, "0\r\nX: ");
	memset(big + n, 'a', sizeof(big) - n);
	CHECK(http_chunked_feed(&ch, (uint8_t *)big, sizeof(big), &used, &doff, &dlen) == -EINVAL);
	/* a size at the 16-digit limit streams, and the count is exact */
	http_chunked_init(&ch);
	CHECK(http_chunked_feed(&ch, (const uint8_t *)"ffffffffffffffff\r\nab", 20, &used, &doff, &dlen) == 0);
	CHECK(used == 20 && doff == 18 && dlen == 2 && ch.remaining == UINT64_MAX - 2);
	CHECK(http_chunked_feed(&ch, (const uint8_t *)"ab", 2, &used, &doff, &dlen) == 0);
	CHECK(used == 2 && doff == 0 && dlen == 2 && ch.remaining == UINT64_MAX - 4);
}

static void test_chunk_header(void)
{
	char buf[24];
	size_t n;

	n = http_chunk_header(0, buf);
	CHECK(n == 3 && memcmp(buf, "0\r\n", 3) == 0);
	n = http_chunk_header(0x1f40, buf);
	CHECK(n == 6 && memcmp(buf, "1f40\r\n", 6) == 0);
	n = http_chunk_header(UINT64_MAX, buf);
	CHECK(n == 18 && memcmp(buf, "ffffffffffffffff\r\n", 18) == 0);
}

/* Which requests may go again on a new connection after the keep-alive race. */
static void test_resendable(void)
{
	static const struct { const char *req; bool yes; } cases[] = {
		{ "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", true },
		{ "HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n", true },
		{ "OPTIONS /a HTTP/1.1\r\nHost: x\r\n\r\n", true },
		{ "GET /a HTTP/1.0\r\n\r\n", true },
		{ "GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", true },
		/* a body is not kept: never */
		{ "GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", false },
		{ "GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false },
		/* not safe, idempotent or not */
		{ "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", false },
		{ "PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", false },
		{ "DELETE /a HTTP/1.1\r\nHost: x\r\n\r\n", false },
		{ "PATCH /a HTTP/1.1\r\nHost: x\r\n\r\n", false },
		{ "GETS /a HTTP/1.1\r\nHost: x\r\n\r\n", false },
		{ "GE /a HTTP/1.1\r\nHost: x\r\n\r\n", false },
		/* an upgrade or an expectation changes what a second send means */
		{ "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", false },
		{ "GET /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", false },
		{ "GET /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n", false },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = strlen(cases[i].req);
		uint8_t *copy = malloc(len);
		struct http_head h;

		if (!copy)
			abort();
		memcpy(copy, cases[i].req, len);
		CHECK(http_req_parse(copy, len, &h) == OK);
		if (http_req_resendable(copy, &h) != cases[i].yes)
			fprintf(stderr, "  resendable case %zu: want %d\n", i, cases[i].yes);
		CHECK(http_req_resendable(copy, &h) == cases[i].yes);
		free(copy);
	}
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
		unit_corpus_dir = argv[2];
	else if (argc != 1) {
		fprintf(stderr, "usage: %s [--write-corpus DIR]\n", argv[0]);
		return 2;
	}
	RUN(test_cases);
	RUN(test_fields);
	RUN(test_connection);
	RUN(test_pipelined);
	RUN(test_prefixes);
	RUN(test_bounds);
	RUN(test_responses);
	RUN(test_chunked);
	RUN(test_chunked_bounds);
	RUN(test_chunk_header);
	RUN(test_resendable);
	UNIT_DONE("http_msg");
}
