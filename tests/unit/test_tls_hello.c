// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for userspace/tls_hello.c.
 *
 * Real ClientHellos come from OpenSSL itself (a client SSL on a BIO pair,
 * SSL_connect, read what it wrote); malformed ones from a small builder
 * below. Every input is parsed from a heap copy of exactly its length so
 * ASan sees any read past the end.
 *
 *   test_tls_hello                      run the tests
 *   test_tls_hello --write-corpus DIR   also write each named case to DIR
 *                                       (the fuzzer's seed corpus)
 */
#include "tls_hello.h"
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define OK        TLS_HELLO_OK
#define NEED_MORE TLS_HELLO_NEED_MORE
#define MALFORMED TLS_HELLO_MALFORMED


/* Parse from an exact-size heap copy and check the invariants every
 * result must satisfy, whatever the input. */
static int parse(const uint8_t *buf, size_t len, struct tls_hello *h)
{
	uint8_t *copy = malloc(len ? len : 1);
	int st;

	if (!copy)
		abort();
	if (len)
		memcpy(copy, buf, len);
	st = tls_hello_parse(copy, len, h);
	free(copy);
	CHECK(st == OK || st == NEED_MORE || st == MALFORMED);
	if (st == NEED_MORE)
		CHECK(len < TLS_HELLO_MAX);
	if (st == OK) {
		CHECK(h->consumed > 0 && h->consumed <= len);
		CHECK(strlen(h->sni) < sizeof(h->sni));
		CHECK(h->has_sni == (h->sni[0] != '\0'));
		CHECK(h->nalpn >= 0 && h->nalpn <= TLS_HELLO_MAX_ALPN);
	}
	return st;
}

static void expect(const char *name, const uint8_t *buf, size_t len, int want, const char *sni)
{
	struct tls_hello h;
	int st = parse(buf, len, &h);

	unit_seed(name, buf, len);
	if (st != want)
		fprintf(stderr, "  case '%s': got %d, want %d\n", name, st, want);
	CHECK(st == want);
	if (st == OK && want == OK) {
		CHECK(h.has_sni == (sni != NULL));
		if (sni)
			CHECK_STR(h.sni, sni);
	}
}

/* Every proper prefix of a valid stream must ask for more, never OK. */
static void expect_prefixes_need_more(const uint8_t *buf, size_t len)
{
	struct tls_hello h;
	size_t bad = 0;

	for (size_t k = 0; k < len; k++)
		if (parse(buf, k, &h) != NEED_MORE)
			bad++;
	CHECK(bad == 0);
}

/* ---- a byte builder with nested length prefixes ---- */

struct bb {
	uint8_t *b;
	size_t n, cap;
	size_t open[8];
	int width[8];
	int depth;
};

static void bb_init(struct bb *b, uint8_t *buf, size_t cap)
{
	memset(b, 0, sizeof(*b));
	b->b = buf;
	b->cap = cap;
}

static void put(struct bb *b, const void *p, size_t n)
{
	if (n > b->cap - b->n)
		abort();   /* a test bug, not a parser finding */
	if (n)
		memcpy(b->b + b->n, p, n);
	b->n += n;
}

static void put8(struct bb *b, unsigned v)
{
	uint8_t x = (uint8_t)v;

	put(b, &x, 1);
}

static void put16(struct bb *b, unsigned v)
{
	put8(b, v >> 8);
	put8(b, v);
}

static void fill(struct bb *b, uint8_t v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		put8(b, v);
}

/* open(width) ... close(): the bytes between get a width-byte length. */
static void open_len(struct bb *b, int width)
{
	b->open[b->depth] = b->n;
	b->width[b->depth++] = width;
	fill(b, 0, (size_t)width);
}

static void close_len(struct bb *b)
{
	size_t at = b->open[--b->depth];
	int w = b->width[b->depth];
	size_t len = b->n - at - (size_t)w;

	for (int i = w - 1; i >= 0; i--, len >>= 8)
		b->b[at + (size_t)i] = (uint8_t)len;
}

static void poke16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static unsigned peek16(const uint8_t *p)
{
	return (unsigned)(p[0] << 8 | p[1]);
}

/* ---- extensions ---- */

static void ext_raw(struct bb *e, unsigned type, const void *body, size_t n)
{
	put16(e, type);
	put16(e, (unsigned)n);
	put(e, body, n);
}

static void ext_sni_n(struct bb *e, const char *name, size_t n)
{
	put16(e, 0);
	open_len(e, 2);
	open_len(e, 2);
	put8(e, 0);
	put16(e, (unsigned)n);
	put(e, name, n);
	close_len(e);
	close_len(e);
}

static void ext_sni(struct bb *e, const char *name)
{
	ext_sni_n(e, name, strlen(name));
}

static void ext_alpn(struct bb *e, const char *const *names, int n)
{
	put16(e, 16);
	open_len(e, 2);
	open_len(e, 2);
	for (int i = 0; i < n; i++) {
		put8(e, (unsigned)strlen(names[i]));
		put(e, names[i], strlen(names[i]));
	}
	close_len(e);
	close_len(e);
}

/* Offsets of the length fields inside a handshake message. */
struct hello_off {
	size_t sid, suites, comp, exts;
};

/*
 * A ClientHello handshake message (header included) with the given
 * extension block; no block at all when exts is NULL.
 */
static size_t build_msg(uint8_t *out, size_t cap, const uint8_t *exts, size_t exts_len,
			struct hello_off *off)
{
	struct bb b;
	struct hello_off o;

	bb_init(&b, out, cap);
	put8(&b, 1);
	open_len(&b, 3);
	put16(&b, 0x0303);
	fill(&b, 0x11, 32);                 /* random */
	o.sid = b.n;
	put8(&b, 32);
	fill(&b, 0x22, 32);
	o.suites = b.n;
	put16(&b, 4);
	put16(&b, 0x1301);
	put16(&b, 0xc02f);
	o.comp = b.n;
	put8(&b, 1);
	put8(&b, 0);
	o.exts = b.n;
	if (exts) {
		open_len(&b, 2);
		put(&b, exts, exts_len);
		close_len(&b);
	}
	close_len(&b);
	if (off)
		*off = o;
	return b.n;
}

/* Wrap a handshake message in records of at most `chunk` bytes. */
static size_t wrap(const uint8_t *msg, size_t n, size_t chunk, uint8_t *out, size_t cap)
{
	struct bb b;

	bb_init(&b, out, cap);
	for (size_t at = 0; at < n; at += chunk) {
		size_t k = n - at < chunk ? n - at : chunk;
		put8(&b, 22);
		put16(&b, 0x0301);
		put16(&b, (unsigned)k);
		put(&b, msg + at, k);
	}
	return b.n;
}

/* Two records, split after `cut` bytes of the message. */
static size_t wrap_at(const uint8_t *msg, size_t n, size_t cut, uint8_t *out, size_t cap)
{
	size_t a = wrap(msg, cut, TLS_RECORD_MAX, out, cap);

	return a + wrap(msg + cut, n - cut, TLS_RECORD_MAX, out + a, cap - a);
}

/* A complete single-record hello with the given extensions. */
static size_t hello_with(const struct bb *ext, uint8_t *out, size_t cap)
{
	uint8_t msg[4096];
	size_t n = build_msg(msg, sizeof(msg), ext->b, ext->n, NULL);

	return wrap(msg, n, TLS_RECORD_MAX, out, cap);
}

/* ---- OpenSSL-made hellos ---- */

struct ossl_opts {
	const char *sni;
	const unsigned char *alpn;   /* wire format, as SSL_set_alpn_protos takes it */
	unsigned alpn_len;
	int max_version;             /* 0: library default (TLS 1.3) */
};

static size_t openssl_hello(const struct ossl_opts *o, uint8_t *out, size_t cap)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = ctx ? SSL_new(ctx) : NULL;
	BIO *inner = NULL, *net = NULL;
	int n = -1;

	if (!ssl || BIO_new_bio_pair(&inner, 0, &net, 0) != 1)
		goto out;
	SSL_set_bio(ssl, inner, inner);   /* ssl owns inner from here */
	if (o->max_version && SSL_set_max_proto_version(ssl, o->max_version) != 1)
		goto out;
	if (o->sni && SSL_set_tlsext_host_name(ssl, o->sni) != 1)
		goto out;
	if (o->alpn && SSL_set_alpn_protos(ssl, o->alpn, o->alpn_len) != 0)
		goto out;
	/* No server answers, so the handshake stops after the ClientHello. */
	if (SSL_connect(ssl) != -1)
		goto out;
	n = BIO_read(net, out, (int)cap);
out:
	BIO_free(net);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	if (n <= 0) {
		ERR_print_errors_fp(stderr);
		abort();
	}
	return (size_t)n;
}

static const unsigned char alpn_h2_h11[] = "\x02h2\x08http/1.1";

static void test_openssl_tls13(void)
{
	struct ossl_opts o = { .sni = "Example.COM", .alpn = alpn_h2_h11,
			       .alpn_len = sizeof(alpn_h2_h11) - 1 };
	uint8_t buf[4096];
	size_t n = openssl_hello(&o, buf, sizeof(buf));
	struct tls_hello h;

	CHECK(parse(buf, n, &h) == OK);
	CHECK(h.has_sni);
	CHECK_STR(h.sni, "example.com");
	CHECK(h.consumed == n);
	CHECK(h.record_version == 0x0301);
	CHECK(h.client_version == 0x0303);
	CHECK(h.has_alpn && h.nalpn == 2);
	CHECK_STR(h.alpn[0], "h2");
	CHECK_STR(h.alpn[1], "http/1.1");
	unit_seed("ok-openssl-tls13", buf, n);
	expect_prefixes_need_more(buf, n);
}

static void test_openssl_tls12(void)
{
	struct ossl_opts o = { .sni = "api.openai.com", .max_version = TLS1_2_VERSION };
	uint8_t buf[4096];
	size_t n = openssl_hello(&o, buf, sizeof(buf));
	struct tls_hello h;

	CHECK(parse(buf, n, &h) == OK);
	CHECK_STR(h.sni, "api.openai.com");
	CHECK(!h.has_alpn && h.nalpn == 0);
	CHECK(h.client_version == 0x0303);
	unit_seed("ok-openssl-tls12", buf, n);
	expect_prefixes_need_more(buf, n);
}

static void test_openssl_no_sni(void)
{
	struct ossl_opts o = { 0 };
	uint8_t buf[4096];
	size_t n = openssl_hello(&o, buf, sizeof(buf));
	struct tls_hello h;

	CHECK(parse(buf, n, &h) == OK);
	CHECK(!h.has_sni);
	CHECK_STR(h.sni, "");
	unit_seed("ok-openssl-no-sni", buf, n);
	expect_prefixes_need_more(buf, n);
}

/* OpenSSL sends whatever name it is given; literals must not pass. */
static void test_openssl_ip_literal(void)
{
	static const char *const names[] = { "10.0.0.1", "::1", "127.1" };
	uint8_t buf[4096];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct ossl_opts o = { .sni = names[i] };
		size_t n = openssl_hello(&o, buf, sizeof(buf));
		char name[64];

		snprintf(name, sizeof(name), "bad-openssl-ip-%zu", i);
		expect(name, buf, n, MALFORMED, NULL);
	}
}

/* Bytes after the hello (middlebox-compat ChangeCipherSpec, early data)
 * are not part of it and not looked at. */
static void test_trailing_records(void)
{
	struct ossl_opts o = { .sni = "example.com" };
	uint8_t buf[4096];
	size_t n = openssl_hello(&o, buf, sizeof(buf) - 64);
	static const uint8_t ccs[] = { 20, 3, 3, 0, 1, 1, 23, 3, 3, 0, 5 };
	struct tls_hello h;

	memcpy(buf + n, ccs, sizeof(ccs));
	CHECK(parse(buf, n + sizeof(ccs), &h) == OK);
	CHECK(h.consumed == n);
	CHECK_STR(h.sni, "example.com");
	unit_seed("ok-trailing-ccs", buf, n + sizeof(ccs));
}

/* The hello split into two records at every possible point, including
 * inside the 4-byte handshake header. */
static void test_split_everywhere(void)
{
	struct ossl_opts o = { .sni = "split.example.com" };
	uint8_t rec[4096], two[4200];
	size_t n = openssl_hello(&o, rec, sizeof(rec));
	const uint8_t *msg = rec + 5;
	size_t msg_len = n - 5;
	size_t ok = 0;

	for (size_t cut = 1; cut < msg_len; cut++) {
		struct tls_hello h;
		size_t m = wrap_at(msg, msg_len, cut, two, sizeof(two));

		if (parse(two, m, &h) == OK && h.consumed == m &&
		    strcmp(h.sni, "split.example.com") == 0)
			ok++;
		if (cut == 2)
			unit_seed("ok-split-in-header", two, m);
		if (cut == msg_len / 2) {
			unit_seed("ok-split-two-records", two, m);
			expect_prefixes_need_more(two, m);
		}
	}
	CHECK(ok == msg_len - 1);
}

/* Many records: up to TLS_HELLO_MAX_RECORDS, whatever their sizes; one
 * more is refused as soon as its first byte is there. */
static void test_many_records(void)
{
	struct ossl_opts o = { .sni = "tiny.example.com" };
	uint8_t rec[4096];
	static uint8_t many[4096 * 6];
	size_t n = openssl_hello(&o, rec, sizeof(rec)), msg = n - 5;
	size_t chunk = (msg + TLS_HELLO_MAX_RECORDS - 1) / TLS_HELLO_MAX_RECORDS;
	size_t m = wrap(rec + 5, msg, chunk, many, sizeof(many));
	struct tls_hello h;

	CHECK((msg + chunk - 1) / chunk == TLS_HELLO_MAX_RECORDS);
	CHECK(parse(many, m, &h) == OK);
	CHECK_STR(h.sni, "tiny.example.com");
	CHECK(h.consumed == m);
	unit_seed("ok-64-records", many, m);
	expect_prefixes_need_more(many, m);
	/* one byte per record: the 65th record is refused */
	m = wrap(rec + 5, msg, 1, many, sizeof(many));
	CHECK(parse(many, 64 * 6, &h) == NEED_MORE);
	CHECK(parse(many, 64 * 6 + 1, &h) == MALFORMED);
	CHECK(parse(many, m, &h) == MALFORMED);
	unit_seed("bad-one-byte-records", many, m);
}

static void test_no_extensions(void)
{
	uint8_t msg[256], rec[300];
	size_t n = build_msg(msg, sizeof(msg), NULL, 0, NULL);
	size_t m = wrap(msg, n, TLS_RECORD_MAX, rec, sizeof(rec));

	expect("ok-no-extension-block", rec, m, OK, NULL);
	expect_prefixes_need_more(rec, m);

	n = build_msg(msg, sizeof(msg), (const uint8_t *)"", 0, NULL);
	m = wrap(msg, n, TLS_RECORD_MAX, rec, sizeof(rec));
	expect("ok-empty-extension-block", rec, m, OK, NULL);
}

/* ---- the record layer ---- */

static void test_record_layer(void)
{
	uint8_t e_buf[512], rec[1024], bad[1024];
	struct bb e;
	size_t n;

	bb_init(&e, e_buf, sizeof(e_buf));
	ext_sni(&e, "example.com");
	n = hello_with(&e, rec, sizeof(rec));
	expect("ok-built", rec, n, OK, "example.com");
	expect_prefixes_need_more(rec, n);

	/* refused from the first byte: no waiting for more */
	expect("bad-appdata-1byte", (const uint8_t *)"\x17", 1, MALFORMED, NULL);
	memcpy(bad, rec, n);
	bad[0] = 23;
	expect("bad-record-type-23", bad, n, MALFORMED, NULL);
	expect("bad-http", (const uint8_t *)"GET / HTTP/1.1\r\n\r\n", 18, MALFORMED, NULL);
	{
		/* SSLv2-compatible CLIENT-HELLO: 2-byte header with high bit */
		static const uint8_t v2[] = {
			0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
			0x00, 0x00, 0x35, 0x00, 0x00, 0x2f, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x05,
			0x00, 0x00, 0x04, 0x01, 0x00, 0x80, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
			0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13,
		};
		expect("bad-sslv2-hello", v2, sizeof(v2), MALFORMED, NULL);
		expect("bad-sslv2-1byte", v2, 1, MALFORMED, NULL);
	}

	memcpy(bad, rec, n);
	bad[1] = 2;
	expect("bad-record-major-2", bad, n, MALFORMED, NULL);
	expect("bad-record-major-2-prefix", bad, 2, MALFORMED, NULL);

	memcpy(bad, rec, n);
	poke16(bad + 3, 0);
	expect("bad-record-len-0", bad, n, MALFORMED, NULL);
	poke16(bad + 3, TLS_RECORD_MAX + 1);
	expect("bad-record-len-2^14+1", bad, n, MALFORMED, NULL);
	expect("bad-record-len-2^14+1-hdr", bad, 5, MALFORMED, NULL);

	/* record longer than the hello: holds a second message → refused
	 * as soon as the handshake header is in */
	memcpy(bad, rec, n);
	poke16(bad + 3, peek16(rec + 3) + 1);
	bad[n] = 0;
	expect("bad-record-len+1", bad, n + 1, MALFORMED, NULL);
	expect("bad-record-len+1-early", bad, 9, MALFORMED, NULL);
	/* record shorter than the hello: the rest must come in a record of
	 * its own, so its last byte is read as the next record's type */
	memcpy(bad, rec, n);
	poke16(bad + 3, peek16(rec + 3) - 1);
	expect("need-record-len-1", bad, n - 1, NEED_MORE, NULL);
	expect("bad-record-len-1", bad, n, MALFORMED, NULL);

	memcpy(bad, rec, n);
	bad[5] = 2;   /* ServerHello */
	expect("bad-handshake-type-2", bad, n, MALFORMED, NULL);
	expect("bad-handshake-type-2-early", bad, 6, MALFORMED, NULL);
}

static void test_handshake_length(void)
{
	uint8_t e_buf[512], msg[1024], rec[1100], bad[1100];
	struct bb e;
	size_t n, m;

	bb_init(&e, e_buf, sizeof(e_buf));
	ext_sni(&e, "example.com");
	n = build_msg(msg, sizeof(msg), e.b, e.n, NULL);
	m = wrap(msg, n, TLS_RECORD_MAX, rec, sizeof(rec));

	/* handshake length one too small: the record then holds more than
	 * the message */
	memcpy(bad, rec, m);
	bad[8]--;
	expect("bad-hs-len-1", bad, m, MALFORMED, NULL);
	/* one too large: the message continues in a record not yet here... */
	memcpy(bad, rec, m);
	bad[8]++;
	expect("need-hs-len+1", bad, m, NEED_MORE, NULL);
	/* ...and a record of another type is not its continuation */
	memcpy(bad + m, "\x17\x03\x01\x00\x01\x00", 6);
	expect("bad-hs-len+1-then-appdata", bad, m + 6, MALFORMED, NULL);
	/* or the continuation carries a byte too many */
	memcpy(bad + m, "\x16\x03\x01\x00\x02\x00\x00", 7);
	expect("bad-hs-len+1-then-2", bad, m + 7, MALFORMED, NULL);
	/* the missing byte added in its own record is fine at framing, but it
	 * lands after the extension block: trailing data in the hello */
	memcpy(bad + m, "\x16\x03\x01\x00\x01\x00", 6);
	expect("bad-hs-trailing-byte", bad, m + 6, MALFORMED, NULL);

	/* a body that ends inside the random */
	static const uint8_t short_random[] = { 22, 3, 1, 0, 10, 1, 0, 0, 6, 3, 3, 0, 0, 0, 0 };
	expect("bad-short-random", short_random, sizeof(short_random), MALFORMED, NULL);

	/* zero-length ClientHello */
	static const uint8_t zero[] = { 22, 3, 1, 0, 4, 1, 0, 0, 0 };
	expect("bad-hs-len-0", zero, sizeof(zero), MALFORMED, NULL);

	/* a length that can never fit the bound is refused at once */
	static const uint8_t huge[] = { 22, 3, 1, 0x40, 0, 1, 0xff, 0xff, 0xff };
	expect("bad-hs-len-16M", huge, sizeof(huge), MALFORMED, NULL);

	/* continuation record with another version */
	m = wrap_at(msg, n, n / 2, bad, sizeof(bad));
	expect("ok-split-same-version", bad, m, OK, "example.com");
	poke16(bad + 5 + n / 2 + 1, 0x0303);
	expect("bad-split-version-differs", bad, m, MALFORMED, NULL);
}

/* The bound: a hello whose records total exactly TLS_HELLO_MAX is fine;
 * one byte more is refused, and no buffer of TLS_HELLO_MAX bytes is ever
 * answered NEED_MORE. */
static void test_size_bound(void)
{
	static uint8_t e_buf[70000], msg[70000], rec[72000];
	struct bb e;
	struct tls_hello h;
	size_t body, n, m;

	/* four full-ish records: 65536 - 4 * 5 = 65516 message bytes */
	for (int extra = 0; extra <= 1; extra++) {
		bb_init(&e, e_buf, sizeof(e_buf));
		ext_sni(&e, "big.example.com");
		/* the message without padding body is build_msg(...) + 4 bytes
		 * of padding extension header; size the body to hit 65516 */
		n = build_msg(msg, sizeof(msg), e.b, e.n, NULL);
		body = 65516 + (size_t)extra - n - 4;
		put16(&e, 21);                 /* padding, RFC 7685 */
		put16(&e, (unsigned)body);
		fill(&e, 0, body);
		n = build_msg(msg, sizeof(msg), e.b, e.n, NULL);
		CHECK(n == 65516 + (size_t)extra);
		m = wrap(msg, n, TLS_RECORD_MAX, rec, sizeof(rec));
		CHECK(m == TLS_HELLO_MAX + (size_t)extra);
		if (extra == 0) {
			CHECK(parse(rec, m, &h) == OK);
			CHECK_STR(h.sni, "big.example.com");
			CHECK(parse(rec, m - 1, &h) == NEED_MORE);
		} else {
			CHECK(parse(rec, m, &h) == MALFORMED);
			CHECK(parse(rec, TLS_HELLO_MAX, &h) == MALFORMED);
			/* refused as soon as the last record header shows it */
			CHECK(parse(rec, 3 * (TLS_RECORD_MAX + 5) + 5, &h) == MALFORMED);
		}
	}

	/* an oversized hello in 1-byte records: refused once the records
	 * would pass the bound, so at most TLS_HELLO_MAX bytes are buffered */
	static uint8_t small[TLS_HELLO_MAX + 16];
	struct bb b;
	bb_init(&b, small, sizeof(small));
	while (b.n + 6 <= sizeof(small)) {
		put8(&b, 22);
		put16(&b, 0x0301);
		put16(&b, 1);
		put8(&b, 0);
	}
	static const uint8_t hs_hdr[] = { 1, 0, 0xff, 0x00 };   /* 65280-byte body */
	for (int i = 0; i < 4; i++)
		small[6 * i + 5] = hs_hdr[i];
	CHECK(parse(small, TLS_HELLO_MAX, &h) == MALFORMED);
	CHECK(parse(small, TLS_HELLO_MAX_RECORDS * 6, &h) == NEED_MORE);
	unit_seed("bad-bound-1byte-records", small, TLS_HELLO_MAX);

	/* the 16 KiB record limit holds per record, not for the hello */
	bb_init(&e, e_buf, sizeof(e_buf));
	ext_sni(&e, "two.example.com");
	put16(&e, 21);
	put16(&e, 20000);
	fill(&e, 0, 20000);
	n = build_msg(msg, sizeof(msg), e.b, e.n, NULL);
	m = wrap(msg, n, TLS_RECORD_MAX, rec, sizeof(rec));
	expect("ok-20k-two-records", rec, m, OK, "two.example.com");
}

/* ---- ClientHello body fields ---- */

static void test_body_fields(void)
{
	uint8_t e_buf[512], msg[1024], rec[1100];
	struct bb e;
	struct hello_off off;
	size_t n, m;

	bb_init(&e, e_buf, sizeof(e_buf));
	ext_sni(&e, "example.com");
	n = build_msg(msg, sizeof(msg), e.b, e.n, &off);

#define MUTATE(name, stmt) do { \
		uint8_t *p = rec + 5; \
		m = wrap(msg, n, TLS_RECORD_MAX, rec, sizeof(rec)); \
		stmt; \
		expect(name, rec, m, MALFORMED, NULL); \
	} while (0)

	MUTATE("bad-client-version-2", p[4] = 2);
	MUTATE("bad-sid-len-33", p[off.sid] = 33);
	MUTATE("bad-sid-len-255", p[off.sid] = 255);
	MUTATE("bad-sid-len-31", p[off.sid] = 31);
	MUTATE("bad-suites-odd", poke16(p + off.suites, 3));
	MUTATE("bad-suites-0", poke16(p + off.suites, 0));
	MUTATE("bad-suites-huge", poke16(p + off.suites, 0xfffe));
	MUTATE("bad-comp-0", p[off.comp] = 0);
	MUTATE("bad-comp-2", p[off.comp] = 2);
	MUTATE("bad-exts-len+1", poke16(p + off.exts, peek16(p + off.exts) + 1));
	MUTATE("bad-exts-len-1", poke16(p + off.exts, peek16(p + off.exts) - 1));
	MUTATE("bad-exts-len-ffff", poke16(p + off.exts, 0xffff));
	/* extension body length past the block */
	MUTATE("bad-ext-len+1", poke16(p + off.exts + 4, peek16(p + off.exts + 4) + 1));
	MUTATE("bad-ext-len-1", poke16(p + off.exts + 4, peek16(p + off.exts + 4) - 1));
#undef MUTATE

	/* an extension block of one byte: not even a type */
	n = build_msg(msg, sizeof(msg), (const uint8_t *)"\0", 1, NULL);
	m = wrap(msg, n, TLS_RECORD_MAX, rec, sizeof(rec));
	expect("bad-exts-1-byte", rec, m, MALFORMED, NULL);
	n = build_msg(msg, sizeof(msg), e.b, e.n, &off);

	/* the handshake length checked against the record, the record against
	 * the hello: also one byte after the extension block */
	m = wrap(msg, n, TLS_RECORD_MAX, rec, sizeof(rec));
	rec[m] = 0;
	poke16(rec + 3, peek16(rec + 3) + 1);
	rec[8]++;
	expect("bad-trailing-after-exts", rec, m + 1, MALFORMED, NULL);
}

/* ---- extensions ---- */

static void test_duplicates(void)
{
	uint8_t e_buf[512], rec[1024];
	struct bb e;
	size_t n;
	static const char *const h2[] = { "h2" };

	bb_init(&e, e_buf, sizeof(e_buf));
	ext_sni(&e, "example.com");
	ext_sni(&e, "example.com");
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-dup-sni-same", rec, n, MALFORMED, NULL);

	bb_init(&e, e_buf, sizeof(e_buf));
	ext_sni(&e, "allowed.example.com");
	ext_sni(&e, "evil.example.net");
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-dup-sni-differ", rec, n, MALFORMED, NULL);

	bb_init(&e, e_buf, sizeof(e_buf));
	ext_sni(&e, "example.com");
	ext_alpn(&e, h2, 1);
	ext_alpn(&e, h2, 1);
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-dup-alpn", rec, n, MALFORMED, NULL);

	bb_init(&e, e_buf, sizeof(e_buf));
	ext_raw(&e, 0x0a0a, "", 0);     /* GREASE */
	ext_sni(&e, "example.com");
	n = hello_with(&e, rec, sizeof(rec));
	expect("ok-grease", rec, n, OK, "example.com");
	bb_init(&e, e_buf, sizeof(e_buf));
	ext_raw(&e, 0x0a0a, "", 0);
	ext_sni(&e, "example.com");
	ext_raw(&e, 0x0a0a, "x", 1);
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-dup-grease", rec, n, MALFORMED, NULL);
	bb_init(&e, e_buf, sizeof(e_buf));
	ext_raw(&e, 0xffff, "", 0);
	ext_raw(&e, 0xffff, "", 0);
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-dup-ffff", rec, n, MALFORMED, NULL);
}

static void test_psk_last(void)
{
	uint8_t e_buf[512], rec[1024];
	struct bb e;
	size_t n;

	bb_init(&e, e_buf, sizeof(e_buf));
	ext_sni(&e, "example.com");
	ext_raw(&e, 41, "\0\0\0\0", 4);
	n = hello_with(&e, rec, sizeof(rec));
	expect("ok-psk-last", rec, n, OK, "example.com");

	bb_init(&e, e_buf, sizeof(e_buf));
	ext_raw(&e, 41, "\0\0\0\0", 4);
	ext_sni(&e, "example.com");
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-psk-not-last", rec, n, MALFORMED, NULL);
}

static const struct {
	const char *name;
	size_t len;          /* 0: strlen(name) */
	int want;
	const char *sni;     /* expected, lower-cased */
} sni_cases[] = {
	{ "example.com", 0, OK, "example.com" },
	{ "Example.COM", 0, OK, "example.com" },
	{ "a", 0, OK, "a" },
	{ "xn--bcher-kva.example", 0, OK, "xn--bcher-kva.example" },
	{ "a-b.c-d.e9", 0, OK, "a-b.c-d.e9" },
	{ "1.2.3.example", 0, OK, "1.2.3.example" },
	{ "", 0, MALFORMED, NULL },
	{ "under_score.example", 0, MALFORMED, NULL },
	{ "sp ace.example", 0, MALFORMED, NULL },
	{ "nul\0.example.com", 16, MALFORMED, NULL },
	{ "example.com\0evil.net", 20, MALFORMED, NULL },
	{ "example.com.", 0, MALFORMED, NULL },
	{ ".example.com", 0, MALFORMED, NULL },
	{ "example..com", 0, MALFORMED, NULL },
	{ ".", 0, MALFORMED, NULL },
	{ "*.example.com", 0, MALFORMED, NULL },
	{ "ex\\.ample.com", 0, MALFORMED, NULL },
	{ "exam\xc3\xa9ple.com", 0, MALFORMED, NULL },
	{ "1.2.3.4", 0, MALFORMED, NULL },
	{ "127.1", 0, MALFORMED, NULL },
	{ "2130706433", 0, MALFORMED, NULL },
	{ "0x7f000001", 0, MALFORMED, NULL },
	{ "0x7f.0.0.1", 0, MALFORMED, NULL },
	{ "0X7F.1", 0, MALFORMED, NULL },
	{ "017700000001", 0, MALFORMED, NULL },
	{ "1.2.3.4.", 0, MALFORMED, NULL },
	{ "a.b.123", 0, MALFORMED, NULL },
	{ "::1", 0, MALFORMED, NULL },
	{ "[::1]", 0, MALFORMED, NULL },
	{ "fe80::1%eth0", 0, MALFORMED, NULL },
	{ "example.com:443", 0, MALFORMED, NULL },
};

static void test_sni_names(void)
{
	uint8_t e_buf[1024], rec[2048];
	struct bb e;

	for (size_t i = 0; i < sizeof(sni_cases) / sizeof(sni_cases[0]); i++) {
		size_t len = sni_cases[i].len ? sni_cases[i].len : strlen(sni_cases[i].name);
		char name[64];

		bb_init(&e, e_buf, sizeof(e_buf));
		ext_sni_n(&e, sni_cases[i].name, len);
		size_t n = hello_with(&e, rec, sizeof(rec));
		snprintf(name, sizeof(name), "%s-sni-%02zu",
			 sni_cases[i].want == OK ? "ok" : "bad", i);
		expect(name, rec, n, sni_cases[i].want, sni_cases[i].sni);
	}
}

static void test_sni_lengths(void)
{
	uint8_t e_buf[1024], rec[2048];
	char name[300];
	struct bb e;
	size_t n;

	/* label of 63 is fine, 64 is not */
	memset(name, 'a', 63);
	memcpy(name + 63, ".com", 5);
	bb_init(&e, e_buf, sizeof(e_buf));
	ext_sni(&e, name);
	n = hello_with(&e, rec, sizeof(rec));
	expect("ok-sni-label-63", rec, n, OK, name);
	memset(name, 'a', 64);
	memcpy(name + 64, ".com", 5);
	bb_init(&e, e_buf, sizeof(e_buf));
	ext_sni(&e, name);
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-sni-label-64", rec, n, MALFORMED, NULL);

	/* 255 bytes (4 labels of 63 and 3 dots) fits; 256 does not */
	for (int i = 0; i < 4; i++) {
		memset(name + 64 * i, 'b', 63);
		name[64 * i + 63] = '.';
	}
	name[255] = '\0';
	bb_init(&e, e_buf, sizeof(e_buf));
	ext_sni(&e, name);
	n = hello_with(&e, rec, sizeof(rec));
	expect("ok-sni-255", rec, n, OK, name);
	name[255] = 'b';
	name[256] = '\0';
	bb_init(&e, e_buf, sizeof(e_buf));
	ext_sni(&e, name);
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-sni-256", rec, n, MALFORMED, NULL);
}

static void test_sni_structure(void)
{
	uint8_t e_buf[512], rec[1024];
	struct bb e;
	size_t n;

	/* two host names in one list */
	bb_init(&e, e_buf, sizeof(e_buf));
	put16(&e, 0);
	open_len(&e, 2);
	open_len(&e, 2);
	put8(&e, 0); put16(&e, 11); put(&e, "example.com", 11);
	put8(&e, 0); put16(&e, 8); put(&e, "evil.net", 8);
	close_len(&e);
	close_len(&e);
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-sni-two-names", rec, n, MALFORMED, NULL);

	/* a second entry of another type */
	bb_init(&e, e_buf, sizeof(e_buf));
	put16(&e, 0);
	open_len(&e, 2);
	open_len(&e, 2);
	put8(&e, 0); put16(&e, 11); put(&e, "example.com", 11);
	put8(&e, 1); put16(&e, 1); put8(&e, 'x');
	close_len(&e);
	close_len(&e);
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-sni-second-type", rec, n, MALFORMED, NULL);

	/* name_type other than host_name */
	bb_init(&e, e_buf, sizeof(e_buf));
	ext_sni(&e, "example.com");
	e.b[6] = 1;
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-sni-name-type-1", rec, n, MALFORMED, NULL);

	/* list length vs extension length vs name length, each way */
	static const struct { const char *name; size_t at; int delta; } lens[] = {
		{ "bad-sni-ext-len+1", 2, +1 },   /* past the extension block */
		{ "bad-sni-list-len+1", 4, +1 },
		{ "bad-sni-list-len-1", 4, -1 },
		{ "bad-sni-name-len+1", 7, +1 },
		{ "bad-sni-name-len-1", 7, -1 },
	};
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		bb_init(&e, e_buf, sizeof(e_buf));
		ext_sni(&e, "example.com");
		poke16(e.b + lens[i].at, (unsigned)((int)peek16(e.b + lens[i].at) + lens[i].delta));
		n = hello_with(&e, rec, sizeof(rec));
		expect(lens[i].name, rec, n, MALFORMED, NULL);
	}

	/* extension shorter than its list, with a byte after the list */
	bb_init(&e, e_buf, sizeof(e_buf));
	ext_sni(&e, "example.com");
	put8(&e, 0);
	poke16(e.b + 2, peek16(e.b + 2) + 1);
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-sni-byte-after-list", rec, n, MALFORMED, NULL);

	/* empty extension (what a server sends back) and empty list */
	bb_init(&e, e_buf, sizeof(e_buf));
	ext_raw(&e, 0, "", 0);
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-sni-empty-ext", rec, n, MALFORMED, NULL);
	bb_init(&e, e_buf, sizeof(e_buf));
	ext_raw(&e, 0, "\0\0", 2);
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-sni-empty-list", rec, n, MALFORMED, NULL);
}

static void test_alpn(void)
{
	uint8_t e_buf[1024], rec[2048];
	struct bb e;
	struct tls_hello h;
	size_t n;
	static const char *const eight[] = { "a", "b", "c", "d", "e", "f", "g", "h" };
	static const char *const nine[] = { "a", "b", "c", "d", "e", "f", "g", "h", "i" };
	static const char *const long31[] = { "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" };
	static const char *const long32[] = { "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" };
	static const char *const empty[] = { "h2", "" };
	static const char *const ctl[] = { "h2\x01" };

	bb_init(&e, e_buf, sizeof(e_buf));
	ext_alpn(&e, eight, 8);
	n = hello_with(&e, rec, sizeof(rec));
	CHECK(parse(rec, n, &h) == OK);
	CHECK(h.has_alpn && h.nalpn == 8);
	CHECK_STR(h.alpn[7], "h");
	unit_seed("ok-alpn-8", rec, n);

	bb_init(&e, e_buf, sizeof(e_buf));
	ext_alpn(&e, long31, 1);
	n = hello_with(&e, rec, sizeof(rec));
	CHECK(parse(rec, n, &h) == OK && h.nalpn == 1);
	CHECK_STR(h.alpn[0], long31[0]);

	bb_init(&e, e_buf, sizeof(e_buf));
	ext_alpn(&e, nine, 9);
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-alpn-9", rec, n, MALFORMED, NULL);
	bb_init(&e, e_buf, sizeof(e_buf));
	ext_alpn(&e, long32, 1);
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-alpn-32-bytes", rec, n, MALFORMED, NULL);
	bb_init(&e, e_buf, sizeof(e_buf));
	ext_alpn(&e, empty, 2);
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-alpn-empty-name", rec, n, MALFORMED, NULL);
	bb_init(&e, e_buf, sizeof(e_buf));
	ext_alpn(&e, ctl, 1);
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-alpn-control-char", rec, n, MALFORMED, NULL);
	bb_init(&e, e_buf, sizeof(e_buf));
	ext_alpn(&e, NULL, 0);
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-alpn-empty-list", rec, n, MALFORMED, NULL);
	bb_init(&e, e_buf, sizeof(e_buf));
	ext_alpn(&e, eight, 2);
	e.b[6] = 5;   /* first name's length runs past the list */
	n = hello_with(&e, rec, sizeof(rec));
	expect("bad-alpn-name-len", rec, n, MALFORMED, NULL);
}

/* ECH: the SNI is the outer name only; reported, not refused */
static void test_ech(void)
{
	uint8_t e_buf[512], rec[1024];
	struct bb e;
	struct tls_hello h;
	size_t n;

	bb_init(&e, e_buf, sizeof(e_buf));
	ext_sni(&e, "public.example.com");
	n = hello_with(&e, rec, sizeof(rec));
	CHECK(parse(rec, n, &h) == OK && !h.has_ech);

	/* today's, ESNI's, and every earlier ECH draft's code point: servers
	 * built on a draft (NSS's 0xfe08, Cloudflare's 0xfe09/0xfe0a) read
	 * the inner name too (found by review) */
	static const unsigned types[] = { 0xfe0d, 0xffce, 0xfe08, 0xfe09, 0xfe0a, 0xfe0b, 0xfe0c,
					  0xff02, 0xff08 };
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		bb_init(&e, e_buf, sizeof(e_buf));
		ext_sni(&e, "public.example.com");
		ext_raw(&e, types[i], "\0\1\2\3", 4);
		n = hello_with(&e, rec, sizeof(rec));
		CHECK(parse(rec, n, &h) == OK);
		CHECK(h.has_ech);
		CHECK_STR(h.sni, "public.example.com");
		if (i < 2)
			unit_seed(i == 0 ? "ok-ech" : "ok-esni", rec, n);
		else if (types[i] == 0xfe0a)
			unit_seed("ok-ech-draft10", rec, n);
	}
	/* their neighbours are other extensions */
	static const unsigned others[] = { 0xfe07, 0xfe0e, 0xff01, 0xff03, 0xfd00 };
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		bb_init(&e, e_buf, sizeof(e_buf));
		ext_sni(&e, "public.example.com");
		ext_raw(&e, others[i], "\0\1\2\3", 4);
		n = hello_with(&e, rec, sizeof(rec));
		CHECK(parse(rec, n, &h) == OK && !h.has_ech);
	}
}

/* A failed parse leaves nothing behind that looks like a result. */
static void test_cleared_on_failure(void)
{
	uint8_t e_buf[512], rec[1024];
	struct bb e;
	struct tls_hello h;
	size_t n;

	bb_init(&e, e_buf, sizeof(e_buf));
	ext_sni(&e, "example.com");
	ext_raw(&e, 0xffff, "", 0);
	ext_raw(&e, 0xffff, "", 0);
	n = hello_with(&e, rec, sizeof(rec));
	memset(&h, 0x5a, sizeof(h));
	CHECK(tls_hello_parse(rec, n, &h) == MALFORMED);
	CHECK(!h.has_sni && h.sni[0] == '\0' && h.consumed == 0);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
		unit_corpus_dir = argv[2];
	else if (argc != 1) {
		fprintf(stderr, "usage: %s [--write-corpus DIR]\n", argv[0]);
		return 2;
	}

	RUN(test_openssl_tls13);
	RUN(test_openssl_tls12);
	RUN(test_openssl_no_sni);
	RUN(test_openssl_ip_literal);
	RUN(test_trailing_records);
	RUN(test_split_everywhere);
	RUN(test_many_records);
	RUN(test_no_extensions);
	RUN(test_record_layer);
	RUN(test_handshake_length);
	RUN(test_size_bound);
	RUN(test_body_fields);
	RUN(test_duplicates);
	RUN(test_psk_last);
	RUN(test_sni_names);
	RUN(test_sni_lengths);
	RUN(test_sni_structure);
	RUN(test_alpn);
	RUN(test_ech);
	RUN(test_cleared_on_failure);
	UNIT_DONE("tls_hello");
}
