/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http_msg: strict HTTP/1.x message framing for the http module: request
 * heads (what an agent sends), response heads (what the upstream answers),
 * and the chunked transfer coding in both directions.
 *
 * Why by hand: this parser is the security boundary between an agent and a
 * server that parses the same bytes again. The one packaged C parser
 * (Debian's http-parser 2.9.4, node's legacy parser) is lenient even when
 * built strict: it accepts bare LF, obs-fold, "Transfer-Encoding : chunked",
 * a duplicate Host and a raw '#', which are exactly the ambiguities request
 * smuggling lives on (notes/postgres-http.md §5.3). llhttp is not packaged.
 * So the grammar of RFC 9112 is implemented here, narrowed to what a proxy
 * can judge without guessing: anything two parsers could read differently
 * is MALFORMED, with a reason, and the caller answers 400 and closes.
 *
 * Refused in a request head: bare LF or CR, obs-fold, whitespace before a
 * colon or around the request line's parts, NUL or control bytes, bytes
 * >= 0x80 in names, a method that is not upper-case letters, a version other
 * than HTTP/1.0 or HTTP/1.1, more than HTTP_MAX_HEADERS fields, a head over
 * HTTP_HEAD_MAX, duplicate Host / Content-Length / Transfer-Encoding,
 * a name with '_' that reads, '_' taken for '-', as a framing, hop-by-hop,
 * identity or method-override field ("X_Forwarded_For": CGI and WSGI
 * servers do not tell them apart), Content-Length that is not plain digits, Content-Length together with
 * Transfer-Encoding, any transfer coding but a single "chunked", a
 * Transfer-Encoding in an HTTP/1.0 request, an HTTP/1.1 request without
 * Host.
 *
 * Library code: no logging, no allocation, no global state; reentrant.
 * Header and request-line fields are offsets into the caller's buffer, which
 * must stay unchanged while they are used.
 */
#ifndef AGENTGATE_HTTP_MSG_H
#define AGENTGATE_HTTP_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Head bounds. 16 KiB is more than browsers and curl ever send for a
 * request (nginx's default large_client_header_buffers is 4 x 8 KiB, per
 * line); responses get more room for cookies and CSP headers from servers
 * we trust more, but still a bound. A caller that has buffered the bound
 * always gets OK or MALFORMED, never NEED_MORE.
 */
#define HTTP_HEAD_MAX       (16u * 1024)
#define HTTP_RESP_HEAD_MAX  (64u * 1024)
#define HTTP_MAX_HEADERS    100
#define HTTP_METHOD_MAX     20

enum http_status {
	HTTP_OK        = 0,
	HTTP_NEED_MORE = 1,    /* a valid prefix; more bytes may complete it */
	HTTP_MALFORMED = -1,   /* refused; more bytes will not help */
};

enum http_body { HTTP_BODY_NONE = 0, HTTP_BODY_LENGTH, HTTP_BODY_CHUNKED, HTTP_BODY_EOF };

struct http_field {            /* offsets into the buffer that was parsed */
	uint32_t name, name_len;
	uint32_t value, value_len; /* optional whitespace trimmed */
};

/* Which well-known fields a message has, for hop-by-hop handling. */
#define HTTP_CONN_CLOSE      0x1u  /* Connection: close */
#define HTTP_CONN_KEEPALIVE  0x2u  /* Connection: keep-alive */
#define HTTP_CONN_UPGRADE    0x4u  /* Connection: upgrade */
#define HTTP_CONN_OTHER      0x8u  /* Connection names other fields: see http_conn_names() */

struct http_head {
	uint32_t head_len;         /* bytes of the head, the blank line included */
	/* request line (requests) */
	uint32_t method, method_len, target, target_len;
	/* status line (responses) */
	int status;
	int version;               /* 10 or 11 */
	struct http_field f[HTTP_MAX_HEADERS];
	unsigned nf;
	int host;                  /* index into f of Host, -1 if none */
	int expect;                /* index of Expect, -1 if none */
	int upgrade;               /* index of Upgrade, -1 if none */
	enum http_body body;
	uint64_t content_length;   /* HTTP_BODY_LENGTH */
	unsigned conn;             /* HTTP_CONN_* from the Connection field(s) */
	bool expect_continue;      /* Expect: 100-continue (the only expectation accepted) */
	const char *error;         /* MALFORMED: why, a static string */
};

/*
 * Parse the request head at the start of buf[0..len). OK fills h (head_len is
 * where the body or the next request starts); NEED_MORE only while
 * len < HTTP_HEAD_MAX; MALFORMED sets h->error. The body framing follows
 * RFC 9112 §6: chunked, Content-Length, else none.
 */
int http_req_parse(const uint8_t *buf, size_t len, struct http_head *h);

/*
 * Parse a response head. req_method_head: the request was HEAD;
 * req_connect: it was a CONNECT. Framing per RFC 9112 §6.3: 1xx, 204, 304
 * and responses to HEAD have no body; otherwise chunked, Content-Length, or
 * until the connection closes (HTTP_BODY_EOF). Same rules and returns as
 * http_req_parse, bounded by HTTP_RESP_HEAD_MAX.
 */
int http_resp_parse(const uint8_t *buf, size_t len, bool req_method_head, struct http_head *h);

/*
 * True when the parsed request h may be sent a second time, on a new
 * connection, after a reused one closed before any byte of its answer (the
 * keep-alive race, RFC 9112 §9.3.1): a safe method (GET, HEAD, OPTIONS;
 * RFC 9110 §9.2.1), no body (none is kept to send again), no upgrade and
 * no Expect. Idempotent PUT and DELETE are left out on purpose.
 */
bool http_req_resendable(const uint8_t *buf, const struct http_head *h);

/* n bytes at s equal name's first n (ASCII case-insensitive). */
bool http_name_eq(const uint8_t *s, const char *name, size_t n);

/* True when field f's name equals name (ASCII case-insensitive). Inline:
 * the length of a literal name is folded, so most fields are told apart
 * by their length without a look at a byte. */
static inline bool http_field_is(const uint8_t *buf, const struct http_field *f, const char *name)
{
	size_t n = __builtin_strlen(name);

	return f->name_len == n && http_name_eq(buf + f->name, name, n);
}

/*
 * True when field f is named by a token of some Connection field of h (so it
 * is hop-by-hop and must not be forwarded).
 */
bool http_conn_names(const uint8_t *buf, const struct http_head *h, const struct http_field *f);

/* True for a valid field name / field value (RFC 9110 §5.1, §5.5, no obs-text). */
bool http_token_ok(const uint8_t *s, size_t n);
bool http_value_ok(const uint8_t *s, size_t n);

/*
 * Chunked transfer coding, decoding (RFC 9112 §7.1). Chunk extensions are
 * accepted only as ";token" or ";token=token" (bounded) and dropped; trailer
 * fields are checked like header fields, bounded by HTTP_TRAILER_MAX, and
 * dropped: the message is re-encoded by http_chunk_header() and friends, so
 * nothing of the sender's framing is forwarded as written.
 */
#define HTTP_CHUNK_EXT_MAX  256
#define HTTP_TRAILER_MAX    (8u * 1024)

struct http_chunked {
	int state;
	uint64_t remaining;        /* data bytes left in the current chunk */
	unsigned n;                /* digits / extension bytes / trailer bytes so far */
	unsigned name_len;         /* of the trailer field being read */
	bool done;                 /* the last chunk and trailers were read */
	const char *error;
};

void http_chunked_init(struct http_chunked *ch);
/*
 * Feed in[0..len). Consumes framing up to and including at most one span of
 * chunk data: *used is how many bytes of in were consumed; when *dlen > 0,
 * in[*doff .. *doff + *dlen) is payload. Call again with the rest while
 * *used > 0 and !ch->done. Returns 0, or -EINVAL (ch->error says why).
 */
int http_chunked_feed(struct http_chunked *ch, const uint8_t *in, size_t len,
		      size_t *used, size_t *doff, size_t *dlen);

/* Chunk framing for re-encoding: "<hex>\r\n" into out (>= 20 bytes); returns its length. */
size_t http_chunk_header(uint64_t n, char *out);
#define HTTP_CHUNK_TAIL  "\r\n"
#define HTTP_CHUNK_LAST  "0\r\n\r\n"

#endif
