// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for userspace/dns_msg.c.
 *
 * Queries come from libresolv's res_mkquery(); answers from a small
 * builder below that writes compression pointers by hand, so the tests
 * control exactly where each name points. Every input is parsed from a
 * heap copy of exactly its length so ASan sees any read past the end.
 *
 *   test_dns_msg                      run the tests
 *   test_dns_msg --write-corpus DIR   also write each named case to DIR
 */
#include "dns_msg.h"
#include "unit.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <fcntl.h>
#include <resolv.h>
#include <stdlib.h>
#include <unistd.h>


static uint8_t *copy_of(const uint8_t *buf, size_t len)
{
	uint8_t *c = malloc(len ? len : 1);

	if (!c)
		abort();
	if (len)
		memcpy(c, buf, len);
	return c;
}

static int qparse(const uint8_t *buf, size_t len, struct dns_question *q)
{
	uint8_t *c = copy_of(buf, len);
	int r = dns_query_parse(c, len, q);

	free(c);
	CHECK(r == 0 || r == -EINVAL);
	return r;
}

static int aparse(const uint8_t *buf, size_t len, struct dns_answer *a)
{
	uint8_t *c = copy_of(buf, len);
	int r = dns_answer_parse(c, len, a);

	free(c);
	CHECK(r == 0 || r == -EINVAL);
	if (r == 0) {
		CHECK(a->naddrs >= 0 && a->naddrs <= DNS_MAX_ADDRS);
		CHECK(a->ncnames >= 0 && a->ncnames <= DNS_MAX_CNAMES);
		for (int i = 0; i < a->naddrs; i++)
			CHECK(a->addrs[i].ttl <= DNS_TTL_MAX);
	}
	return r;
}

/* ---- a message builder; names are written by hand, pointers too ---- */

struct mb {
	uint8_t b[8192];
	size_t n;
	size_t rdlen_at;
};

static void put(struct mb *m, const void *p, size_t n)
{
	if (n > sizeof(m->b) - m->n)
		abort();   /* a test bug */
	memcpy(m->b + m->n, p, n);
	m->n += n;
}

static void put8(struct mb *m, unsigned v)
{
	uint8_t x = (uint8_t)v;

	put(m, &x, 1);
}

static void put16(struct mb *m, unsigned v)
{
	put8(m, v >> 8);
	put8(m, v);
}

static void put32(struct mb *m, uint32_t v)
{
	put16(m, v >> 16);
	put16(m, v & 0xffff);
}

/* Labels of "a.b.c", without the terminating root label. */
static void labels(struct mb *m, const char *dotted)
{
	while (*dotted) {
		const char *dot = strchr(dotted, '.');
		size_t n = dot ? (size_t)(dot - dotted) : strlen(dotted);

		put8(m, (unsigned)n);
		put(m, dotted, n);
		dotted += n + (dot ? 1 : 0);
	}
}

/* A whole uncompressed name; returns its offset for later pointers. */
static size_t name(struct mb *m, const char *dotted)
{
	size_t at = m->n;

	labels(m, dotted);
	put8(m, 0);
	return at;
}

static void ptr(struct mb *m, size_t off)
{
	put16(m, 0xc000 | (unsigned)off);
}

static void header(struct mb *m, unsigned id, unsigned flags, unsigned qd, unsigned an,
		   unsigned ns, unsigned ar)
{
	m->n = 0;
	put16(m, id);
	put16(m, flags);
	put16(m, qd);
	put16(m, an);
	put16(m, ns);
	put16(m, ar);
}

static void set_count(struct mb *m, int which, unsigned v)   /* 0 qd .. 3 ar */
{
	m->b[4 + 2 * which] = (uint8_t)(v >> 8);
	m->b[5 + 2 * which] = (uint8_t)v;
}

/* Owner name already written by the caller; then type, class, ttl, and
 * rdata between rr_data() and rr_end(). */
static void rr_data(struct mb *m, unsigned type, unsigned cls, uint32_t ttl)
{
	put16(m, type);
	put16(m, cls);
	put32(m, ttl);
	m->rdlen_at = m->n;
	put16(m, 0);
}

static void rr_end(struct mb *m)
{
	size_t len = m->n - m->rdlen_at - 2;

	m->b[m->rdlen_at] = (uint8_t)(len >> 8);
	m->b[m->rdlen_at + 1] = (uint8_t)len;
}

static void rr_a(struct mb *m, const char *ip, uint32_t ttl)
{
	uint8_t a[16];
	int v6 = strchr(ip, ':') != NULL;

	if (inet_pton(v6 ? AF_INET6 : AF_INET, ip, a) != 1)
		abort();
	rr_data(m, v6 ? ns_t_aaaa : ns_t_a, ns_c_in, ttl);
	put(m, a, v6 ? 16 : 4);
	rr_end(m);
}

#define RESPONSE (0x8000 | 0x0100 | 0x0080)   /* QR, RD, RA; NOERROR */
#define QNAME_OFF 12

/* Header and the question "www.example.com A". */
static void answer_start(struct mb *m, unsigned an)
{
	header(m, 0x1234, RESPONSE, 1, an, 0, 0);
	name(m, "www.example.com");
	put16(m, ns_t_a);
	put16(m, ns_c_in);
}

static bool addr_is(const struct dns_addr *d, const char *ip)
{
	uint8_t want[16];

	if (strchr(ip, ':')) {
		if (inet_pton(AF_INET6, ip, want) != 1)
			abort();
	} else {
		static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };
		memcpy(want, mapped, 12);
		if (inet_pton(AF_INET, ip, want + 12) != 1)
			abort();
	}
	return memcmp(d->addr, want, 16) == 0;
}

static size_t mkquery(const char *qname, int type, uint8_t *buf, size_t cap)
{
	int n = res_mkquery(ns_o_query, qname, ns_c_in, type, NULL, 0, NULL, buf, (int)cap);

	if (n < 0)
		abort();
	return (size_t)n;
}

/* ---- queries ---- */

static void test_query_basic(void)
{
	uint8_t buf[512];
	size_t n = mkquery("WWW.Example.COM", ns_t_aaaa, buf, sizeof(buf));
	struct dns_question q;

	CHECK(qparse(buf, n, &q) == 0);
	CHECK(q.id == (buf[0] << 8 | buf[1]));
	CHECK_STR(q.qname, "www.example.com");
	CHECK(q.qtype == ns_t_aaaa && q.qclass == ns_c_in);
	unit_seed("query-aaaa", buf, n);

	n = mkquery(".", ns_t_ns, buf, sizeof(buf));
	CHECK(qparse(buf, n, &q) == 0);
	CHECK_STR(q.qname, "");
	unit_seed("query-root", buf, n);

	/* an EDNS OPT record in the additional section is fine */
	n = mkquery("example.com", ns_t_a, buf, sizeof(buf));
	static const uint8_t opt[] = { 0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0 };
	memcpy(buf + n, opt, sizeof(opt));
	buf[11] = 1;
	CHECK(qparse(buf, n + sizeof(opt), &q) == 0);
	CHECK_STR(q.qname, "example.com");
	unit_seed("query-edns", buf, n + sizeof(opt));
}

/* Odd bytes in a label come out escaped, never raw. */
static void test_query_escapes(void)
{
	struct mb m;
	struct dns_question q;

	header(&m, 7, 0x0100, 1, 0, 0, 0);
	put8(&m, 3);
	put(&m, "a.B", 3);
	put8(&m, 3);
	put(&m, "x\0y", 3);
	name(&m, "com");
	put16(&m, ns_t_a);
	put16(&m, ns_c_in);
	CHECK(qparse(m.b, m.n, &q) == 0);
	CHECK_STR(q.qname, "a\\.b.x\\000y.com");
	CHECK(!dns_name_is_valid(q.qname));
	unit_seed("query-escapes", m.b, m.n);

	/* 127 one-byte labels of 0x01: 255 bytes on the wire, 634 characters
	 * printed; too long for the field, so refused */
	header(&m, 7, 0x0100, 1, 0, 0, 0);
	for (int i = 0; i < 127; i++) {
		put8(&m, 1);
		put8(&m, 1);
	}
	put8(&m, 0);
	put16(&m, ns_t_a);
	put16(&m, ns_c_in);
	CHECK(qparse(m.b, m.n, &q) == -EINVAL);
	unit_seed("query-name-too-long-printed", m.b, m.n);
}

static void test_query_rejects(void)
{
	uint8_t buf[512], bad[512];
	size_t n = mkquery("example.com", ns_t_a, buf, sizeof(buf));
	struct dns_question q;
	size_t bad_prefixes = 0;

	for (size_t k = 0; k < n; k++)
		if (qparse(buf, k, &q) != -EINVAL)
			bad_prefixes++;
	CHECK(bad_prefixes == 0);

	memcpy(bad, buf, n);
	bad[2] |= 0x80;
	CHECK(qparse(bad, n, &q) == -EINVAL);
	unit_seed("query-bad-qr", bad, n);

	for (unsigned op = 1; op < 16; op++) {
		memcpy(bad, buf, n);
		bad[2] = (uint8_t)((bad[2] & 0x87) | op << 3);
		CHECK(qparse(bad, n, &q) == -EINVAL);
	}

	memcpy(bad, buf, n);
	bad[5] = 0;
	CHECK(qparse(bad, 12, &q) == -EINVAL);           /* header only, no question */
	CHECK(qparse(bad, n, &q) == -EINVAL);            /* and trailing bytes */

	/* two questions */
	memcpy(bad, buf, n);
	memcpy(bad + n, buf + 12, n - 12);
	bad[5] = 2;
	CHECK(qparse(bad, 2 * n - 12, &q) == -EINVAL);
	unit_seed("query-two-questions", bad, 2 * n - 12);

	/* a byte after the question */
	memcpy(bad, buf, n);
	bad[n] = 0;
	CHECK(qparse(bad, n + 1, &q) == -EINVAL);

	/* an answer record in a query */
	struct mb m;
	header(&m, 1, 0x0100, 1, 1, 0, 0);
	name(&m, "example.com");
	put16(&m, ns_t_a);
	put16(&m, ns_c_in);
	ptr(&m, QNAME_OFF);
	rr_a(&m, "192.0.2.1", 60);
	CHECK(qparse(m.b, m.n, &q) == -EINVAL);
	unit_seed("query-with-answer", m.b, m.n);

	/* qname a pointer to itself */
	header(&m, 1, 0x0100, 1, 0, 0, 0);
	ptr(&m, QNAME_OFF);
	put16(&m, ns_t_a);
	put16(&m, ns_c_in);
	CHECK(qparse(m.b, m.n, &q) == -EINVAL);
	unit_seed("query-ptr-loop", m.b, m.n);

	/* a label running past the end */
	header(&m, 1, 0x0100, 1, 0, 0, 0);
	put8(&m, 60);
	put(&m, "abc", 3);
	CHECK(qparse(m.b, m.n, &q) == -EINVAL);

	/* a loop in the additional section only */
	header(&m, 1, 0x0100, 1, 0, 0, 1);
	name(&m, "example.com");
	put16(&m, ns_t_a);
	put16(&m, ns_c_in);
	size_t at = m.n;
	ptr(&m, at);
	rr_data(&m, 41, 512, 0);
	rr_end(&m);
	CHECK(qparse(m.b, m.n, &q) == -EINVAL);
	unit_seed("query-ar-ptr-loop", m.b, m.n);
}

static void test_query_sizes(void)
{
	struct mb m;
	struct dns_question q;

	/* padded with an EDNS option to exactly 4096, then one more */
	for (size_t total = 4096; total <= 4097; total++) {
		header(&m, 1, 0x0100, 1, 0, 0, 1);
		name(&m, "example.com");
		put16(&m, ns_t_a);
		put16(&m, ns_c_in);
		put8(&m, 0);
		rr_data(&m, 41, 4096, 0);
		size_t pad = total - m.n - 4;
		put16(&m, 12);                 /* Padding option, RFC 7830 */
		put16(&m, (unsigned)pad);
		for (size_t i = 0; i < pad; i++)
			put8(&m, 0);
		rr_end(&m);
		CHECK(m.n == total);
		CHECK(qparse(m.b, m.n, &q) == (total == 4096 ? 0 : -EINVAL));
	}
	CHECK(qparse(m.b, 11, &q) == -EINVAL);
	CHECK(dns_query_parse(NULL, 0, &q) == -EINVAL);
}

/* ---- answers ---- */

/*
 * www.example.com    CNAME edge.cdn.example.net   (ttl 3600)
 * edge.cdn...        CNAME a1.cdn.example.net      (ttl 60, compressed twice)
 * a1.cdn...          A     192.0.2.1               (ttl 300)
 * a1.cdn...          AAAA  2001:db8::1             (ttl 100000)
 * evil.example.org   A     6.6.6.6                 (not on the chain)
 * Written forwards or backwards.
 */
static size_t build_chain(struct mb *m, bool reversed)
{
	size_t edge, cdn, a1;

	answer_start(m, 5);
	if (!reversed) {
		ptr(m, QNAME_OFF);
		rr_data(m, ns_t_cname, ns_c_in, 3600);
		edge = m->n;
		name(m, "edge.cdn.example.net");
		rr_end(m);
		cdn = edge + 5;                /* "cdn.example.net" inside it */
		ptr(m, edge);
		rr_data(m, ns_t_cname, ns_c_in, 60);
		a1 = m->n;
		put8(m, 2);
		put(m, "a1", 2);
		ptr(m, cdn);
		rr_end(m);
		ptr(m, a1);
		rr_a(m, "192.0.2.1", 300);
		ptr(m, a1);
		rr_a(m, "2001:db8::1", 100000);
		name(m, "evil.example.org");
		rr_a(m, "6.6.6.6", 300);
	} else {
		name(m, "evil.example.org");
		rr_a(m, "6.6.6.6", 300);
		a1 = name(m, "a1.cdn.example.net");
		rr_a(m, "2001:db8::1", 100000);
		ptr(m, a1);
		rr_a(m, "192.0.2.1", 300);
		edge = m->n;
		put8(m, 4);
		put(m, "edge", 4);
		ptr(m, a1 + 3);
		rr_data(m, ns_t_cname, ns_c_in, 60);
		ptr(m, a1);
		rr_end(m);
		ptr(m, QNAME_OFF);
		rr_data(m, ns_t_cname, ns_c_in, 3600);
		ptr(m, edge);
		rr_end(m);
	}
	return m->n;
}

static void test_answer_chain(void)
{
	for (int rev = 0; rev <= 1; rev++) {
		struct mb m;
		struct dns_answer a;
		size_t n = build_chain(&m, rev);

		CHECK(aparse(m.b, n, &a) == 0);
		CHECK(a.id == 0x1234 && a.rcode == ns_r_noerror && !a.truncated);
		CHECK_STR(a.q.qname, "www.example.com");
		CHECK(a.q.qtype == ns_t_a && a.q.qclass == ns_c_in);
		CHECK(a.ncnames == 2);
		CHECK_STR(a.cnames[0], "edge.cdn.example.net");
		CHECK_STR(a.cnames[1], "a1.cdn.example.net");
		CHECK(a.naddrs == 2);
		CHECK(a.nunrelated == 1 && a.nskipped == 0);
		for (int i = 0; i < a.naddrs; i++) {
			CHECK_STR(a.addrs[i].name, "a1.cdn.example.net");
			CHECK(a.addrs[i].ttl == 60);   /* the chain's shortest link */
		}
		int v4 = addr_is(&a.addrs[0], "192.0.2.1") ? 0 : 1;
		CHECK(addr_is(&a.addrs[v4], "192.0.2.1"));
		CHECK(addr_is(&a.addrs[1 - v4], "2001:db8::1"));
		unit_seed(rev ? "answer-chain-reversed" : "answer-chain", m.b, n);

		size_t bad = 0;
		for (size_t k = 0; k < n; k++)
			if (aparse(m.b, k, &a) != -EINVAL)
				bad++;
		CHECK(bad == 0);
	}
}

static void test_answer_direct(void)
{
	struct mb m;
	struct dns_answer a;

	answer_start(&m, 4);
	ptr(&m, QNAME_OFF);
	rr_a(&m, "192.0.2.7", 0x80000000u);   /* top bit: 0 */
	ptr(&m, QNAME_OFF);
	rr_a(&m, "192.0.2.8", 1000000);       /* clamped */
	ptr(&m, QNAME_OFF);
	rr_a(&m, "::1", 5);
	/* class CH: not an address of ours, not counted; nor is an MX */
	set_count(&m, 1, 5);
	ptr(&m, QNAME_OFF);
	rr_data(&m, ns_t_mx, ns_c_in, 5);
	put16(&m, 10);
	ptr(&m, QNAME_OFF);
	rr_end(&m);
	ptr(&m, QNAME_OFF);
	rr_data(&m, ns_t_a, ns_c_chaos, 5);
	put16(&m, 0x1234);
	rr_end(&m);
	CHECK(aparse(m.b, m.n, &a) == 0);
	CHECK(a.naddrs == 3 && a.ncnames == 0 && a.nunrelated == 0);
	CHECK(addr_is(&a.addrs[0], "192.0.2.7") && a.addrs[0].ttl == 0);
	CHECK(addr_is(&a.addrs[1], "192.0.2.8") && a.addrs[1].ttl == DNS_TTL_MAX);
	CHECK(addr_is(&a.addrs[2], "::1") && a.addrs[2].ttl == 5);
	CHECK_STR(a.addrs[0].name, "www.example.com");
	unit_seed("answer-ttls", m.b, m.n);

	/* owner in another case still matches the question */
	answer_start(&m, 1);
	name(&m, "WWW.EXAMPLE.COM");
	rr_a(&m, "192.0.2.9", 60);
	CHECK(aparse(m.b, m.n, &a) == 0);
	CHECK(a.naddrs == 1 && a.nunrelated == 0);
	CHECK_STR(a.addrs[0].name, "www.example.com");

	/* NXDOMAIN with no records, TC */
	answer_start(&m, 0);
	m.b[3] = (uint8_t)((m.b[3] & 0xf0) | ns_r_nxdomain);
	m.b[2] |= 0x02;
	CHECK(aparse(m.b, m.n, &a) == 0);
	CHECK(a.rcode == ns_r_nxdomain && a.truncated && a.naddrs == 0);
	unit_seed("answer-nxdomain-tc", m.b, m.n);
}

static void test_answer_many(void)
{
	struct mb m;
	struct dns_answer a;

	answer_start(&m, 40);
	for (int i = 0; i < 40; i++) {
		char ip[32];

		snprintf(ip, sizeof(ip), "198.51.100.%d", i);
		ptr(&m, QNAME_OFF);
		rr_a(&m, ip, 60);
	}
	CHECK(aparse(m.b, m.n, &a) == 0);
	CHECK(a.naddrs == DNS_MAX_ADDRS && a.nskipped == 8);
	CHECK(addr_is(&a.addrs[31], "198.51.100.31"));
	unit_seed("answer-40-a", m.b, m.n);
}

/* A chain longer than DNS_MAX_CNAMES: the ninth link is skipped, what
 * hangs below it cannot be tied to the question. */
static void test_answer_long_chain(void)
{
	struct mb m;
	struct dns_answer a;
	char owner[32], target[32];

	answer_start(&m, 11);
	for (int i = 0; i < 10; i++) {
		snprintf(owner, sizeof(owner), "c%d.example.com", i);
		snprintf(target, sizeof(target), "c%d.example.com", i + 1);
		if (i == 0)
			ptr(&m, QNAME_OFF);
		else
			name(&m, owner);
		rr_data(&m, ns_t_cname, ns_c_in, 60);
		name(&m, target);
		rr_end(&m);
	}
	name(&m, "c10.example.com");
	rr_a(&m, "192.0.2.10", 60);
	CHECK(aparse(m.b, m.n, &a) == 0);
	CHECK(a.ncnames == DNS_MAX_CNAMES);
	CHECK_STR(a.cnames[7], "c8.example.com");
	CHECK(a.nskipped == 1);
	CHECK(a.nunrelated == 2 && a.naddrs == 0);
	unit_seed("answer-long-chain", m.b, m.n);
}

static void test_answer_rejects(void)
{
	struct mb m;
	struct dns_answer a;
	size_t n;

	/* QR clear */
	n = build_chain(&m, false);
	m.b[2] &= 0x7f;
	CHECK(aparse(m.b, n, &a) == -EINVAL);
	unit_seed("answer-bad-qr", m.b, n);

	/* two questions, zero questions */
	answer_start(&m, 0);
	name(&m, "second.example.com");
	put16(&m, ns_t_a);
	put16(&m, ns_c_in);
	set_count(&m, 0, 2);
	CHECK(aparse(m.b, m.n, &a) == -EINVAL);
	unit_seed("answer-two-questions", m.b, m.n);
	header(&m, 1, RESPONSE | ns_r_formerr, 0, 0, 0, 0);
	CHECK(aparse(m.b, m.n, &a) == -EINVAL);

	/* owner name pointing at itself */
	answer_start(&m, 1);
	ptr(&m, m.n);
	rr_a(&m, "192.0.2.1", 60);
	CHECK(aparse(m.b, m.n, &a) == -EINVAL);
	unit_seed("answer-ptr-self", m.b, m.n);

	/* two pointers pointing at each other, in CNAME data */
	answer_start(&m, 1);
	ptr(&m, QNAME_OFF);
	rr_data(&m, ns_t_cname, ns_c_in, 60);
	ptr(&m, m.n + 2);
	ptr(&m, m.n - 2);
	rr_end(&m);
	CHECK(aparse(m.b, m.n, &a) == -EINVAL);
	unit_seed("answer-ptr-pair-loop", m.b, m.n);

	/* pointer past the end */
	answer_start(&m, 1);
	ptr(&m, 0x3fff);
	rr_a(&m, "192.0.2.1", 60);
	CHECK(aparse(m.b, m.n, &a) == -EINVAL);

	/* a loop in the authority section of an otherwise fine answer */
	answer_start(&m, 1);
	set_count(&m, 2, 1);
	ptr(&m, QNAME_OFF);
	rr_a(&m, "192.0.2.1", 60);
	ptr(&m, m.n);
	rr_data(&m, ns_t_ns, ns_c_in, 60);
	ptr(&m, QNAME_OFF);
	rr_end(&m);
	CHECK(aparse(m.b, m.n, &a) == -EINVAL);
	unit_seed("answer-ns-ptr-loop", m.b, m.n);

	/* A with 5 bytes, AAAA with 4 */
	answer_start(&m, 1);
	ptr(&m, QNAME_OFF);
	rr_data(&m, ns_t_a, ns_c_in, 60);
	put(&m, "\1\2\3\4\5", 5);
	rr_end(&m);
	CHECK(aparse(m.b, m.n, &a) == -EINVAL);
	unit_seed("answer-a-5-bytes", m.b, m.n);
	answer_start(&m, 1);
	ptr(&m, QNAME_OFF);
	rr_data(&m, ns_t_aaaa, ns_c_in, 60);
	put(&m, "\1\2\3\4", 4);
	rr_end(&m);
	CHECK(aparse(m.b, m.n, &a) == -EINVAL);

	/* RDLENGTH past the end */
	answer_start(&m, 1);
	ptr(&m, QNAME_OFF);
	rr_a(&m, "192.0.2.1", 60);
	m.b[m.n - 5] = 0x10;
	CHECK(aparse(m.b, m.n, &a) == -EINVAL);

	/* CNAME data with a byte after the name */
	answer_start(&m, 1);
	ptr(&m, QNAME_OFF);
	rr_data(&m, ns_t_cname, ns_c_in, 60);
	name(&m, "x.example.com");
	put8(&m, 0);
	rr_end(&m);
	CHECK(aparse(m.b, m.n, &a) == -EINVAL);
	unit_seed("answer-cname-trailing", m.b, m.n);

	/* the same off the chain: every CNAME is checked, related or not */
	answer_start(&m, 1);
	name(&m, "evil.example.org");
	rr_data(&m, ns_t_cname, ns_c_in, 60);
	name(&m, "x.example.com");
	put8(&m, 0);
	rr_end(&m);
	CHECK(aparse(m.b, m.n, &a) == -EINVAL);
	unit_seed("answer-unrelated-cname-trailing", m.b, m.n);

	/* a CNAME target whose printed form does not fit DNS_NAME_MAX */
	answer_start(&m, 1);
	ptr(&m, QNAME_OFF);
	rr_data(&m, ns_t_cname, ns_c_in, 60);
	for (int i = 0; i < 100; i++) {
		put8(&m, 1);
		put8(&m, ' ');
	}
	put8(&m, 0);
	rr_end(&m);
	CHECK(aparse(m.b, m.n, &a) == -EINVAL);
	unit_seed("answer-cname-target-too-long", m.b, m.n);

	/* CNAME loops: to itself, and www -> x -> www */
	answer_start(&m, 1);
	ptr(&m, QNAME_OFF);
	rr_data(&m, ns_t_cname, ns_c_in, 60);
	ptr(&m, QNAME_OFF);
	rr_end(&m);
	CHECK(aparse(m.b, m.n, &a) == -EINVAL);
	answer_start(&m, 2);
	ptr(&m, QNAME_OFF);
	rr_data(&m, ns_t_cname, ns_c_in, 60);
	size_t x = name(&m, "x.example.com");
	rr_end(&m);
	ptr(&m, x);
	rr_data(&m, ns_t_cname, ns_c_in, 60);
	ptr(&m, QNAME_OFF);
	rr_end(&m);
	CHECK(aparse(m.b, m.n, &a) == -EINVAL);
	unit_seed("answer-cname-loop", m.b, m.n);

	/* two different CNAMEs for the question; the same one twice is fine */
	for (int same = 0; same <= 1; same++) {
		answer_start(&m, 2);
		ptr(&m, QNAME_OFF);
		rr_data(&m, ns_t_cname, ns_c_in, 60);
		name(&m, "one.example.net");
		rr_end(&m);
		ptr(&m, QNAME_OFF);
		rr_data(&m, ns_t_cname, ns_c_in, 60);
		name(&m, same ? "ONE.example.net" : "two.example.net");
		rr_end(&m);
		CHECK(aparse(m.b, m.n, &a) == (same ? 0 : -EINVAL));
		if (same)
			CHECK(a.ncnames == 1);
		unit_seed(same ? "answer-cname-dup-same" : "answer-cname-two", m.b, m.n);
	}

	/* a byte after the last record */
	n = build_chain(&m, false);
	m.b[n] = 0;
	CHECK(aparse(m.b, n + 1, &a) == -EINVAL);

	/* a count larger than the records present (a cut-off UDP answer) */
	n = build_chain(&m, false);
	set_count(&m, 1, 6);
	CHECK(aparse(m.b, n, &a) == -EINVAL);

	/* the opcode of a query only */
	n = build_chain(&m, false);
	m.b[2] |= ns_o_notify << 3;
	CHECK(aparse(m.b, n, &a) == -EINVAL);
}

/* ---- replies we make ---- */

static void test_make_reply(void)
{
	uint8_t query[512], reply[512];
	size_t qn = mkquery("MiXeD.ExAmPlE.cOm", ns_t_aaaa, query, sizeof(query));
	struct dns_answer a;
	struct dns_question q;
	int n;

	CHECK(qparse(query, qn, &q) == 0);
	n = dns_make_reply(query, qn, ns_r_refused, reply, sizeof(reply));
	CHECK(n == (int)qn);      /* header + the same question */
	CHECK(n > 0 && aparse(reply, (size_t)n, &a) == 0);
	CHECK(a.id == q.id && a.rcode == ns_r_refused);
	CHECK_STR(a.q.qname, "mixed.example.com");
	CHECK(a.q.qtype == ns_t_aaaa && a.q.qclass == ns_c_in);
	CHECK(a.naddrs == 0 && a.ncnames == 0 && !a.truncated);
	/* flags: QR, opcode 0, RD copied (res_mkquery sets it), RA, rcode */
	CHECK(reply[2] == (0x80 | 0x01) && reply[3] == (0x80 | ns_r_refused));
	CHECK(memcmp(reply + 4, "\0\1\0\0\0\0\0\0", 8) == 0);
	/* the question bytes exactly as the agent sent them (0x20 case) */
	CHECK(memcmp(reply + 12, query + 12, qn - 12) == 0);
	unit_seed("reply-refused", reply, (size_t)n);

	n = dns_make_reply(query, qn, ns_r_servfail, reply, sizeof(reply));
	CHECK(n > 0 && aparse(reply, (size_t)n, &a) == 0 && a.rcode == ns_r_servfail);

	/* RD clear and CD set in the query are mirrored */
	query[2] &= (uint8_t)~0x01;
	query[3] |= 0x10;
	n = dns_make_reply(query, qn, ns_r_refused, reply, sizeof(reply));
	CHECK(n > 0 && reply[2] == 0x80 && reply[3] == (0x80 | 0x10 | ns_r_refused));

	/* exact room works, one byte less does not */
	CHECK(dns_make_reply(query, qn, ns_r_refused, reply, qn) == (int)qn);
	CHECK(dns_make_reply(query, qn, ns_r_refused, reply, qn - 1) == -ENOSPC);

	CHECK(dns_make_reply(query, qn, 16, reply, sizeof(reply)) == -EINVAL);
	CHECK(dns_make_reply(query, qn, -1, reply, sizeof(reply)) == -EINVAL);
	CHECK(dns_make_reply(query, qn - 1, ns_r_refused, reply, sizeof(reply)) == -EINVAL);
	query[2] |= 0x80;   /* an answer is not a query */
	CHECK(dns_make_reply(query, qn, ns_r_refused, reply, sizeof(reply)) == -EINVAL);

	/* an EDNS query: the reply carries the question only */
	qn = mkquery("example.com", ns_t_a, query, sizeof(query));
	static const uint8_t opt[] = { 0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0 };
	memcpy(query + qn, opt, sizeof(opt));
	query[11] = 1;
	n = dns_make_reply(query, qn + sizeof(opt), ns_r_refused, reply, sizeof(reply));
	CHECK(n == (int)qn && reply[11] == 0);

	/* a compressed qname is refused: pointing into the header, it reads
	 * the id, which the enforcer replaces before forwarding (we would
	 * check one name and the upstream resolve another) */
	struct mb m;
	header(&m, 9, 0x0100, 1, 0, 0, 0);
	ptr(&m, 4);
	put16(&m, ns_t_ns);
	put16(&m, ns_c_in);
	CHECK(qparse(m.b, m.n, &q) == -EINVAL);
	CHECK(dns_make_reply(m.b, m.n, ns_r_refused, reply, sizeof(reply)) == -EINVAL);
	unit_seed("query-qname-ptr-into-header", m.b, m.n);

	/* the review's shape: data.example.test then a pointer to offset 0
	 * (id 0x0000: read as the root here, as anything by the upstream) */
	header(&m, 0x0000, 0x0100, 1, 0, 0, 0);
	labels(&m, "data.example.test");   /* no root label: the pointer ends the name */
	ptr(&m, 0);
	put16(&m, ns_t_a);
	put16(&m, ns_c_in);
	CHECK(qparse(m.b, m.n, &q) == -EINVAL);
	unit_seed("query-qname-tail-ptr-to-id", m.b, m.n);

	/* EDNS: one OPT record owned by the root is the only extra record */
	qn = mkquery("example.com", ns_t_a, query, sizeof(query));
	memcpy(query + qn, opt, sizeof(opt));
	query[11] = 1;
	CHECK(qparse(query, qn + sizeof(opt), &q) == 0);
	static const uint8_t txt[] = { 0, 0, 16, 0, 1, 0, 0, 0, 0, 0, 2, 1, 'x' };
	memcpy(query + qn, txt, sizeof(txt));
	CHECK(qparse(query, qn + sizeof(txt), &q) == -EINVAL);          /* a TXT record */
	memcpy(query + qn, opt, sizeof(opt));
	memcpy(query + qn + sizeof(opt), opt, sizeof(opt));
	query[11] = 2;
	CHECK(qparse(query, qn + 2 * sizeof(opt), &q) == -EINVAL);      /* two OPTs */
	static const uint8_t optp[] = { 0xc0, 12, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0 };
	memcpy(query + qn, optp, sizeof(optp));
	query[11] = 1;
	CHECK(qparse(query, qn + sizeof(optp), &q) == -EINVAL);         /* OPT owner compressed */
}

/* ---- helpers ---- */

static void test_name_is_valid(void)
{
	static const struct { const char *name; bool ok; } cases[] = {
		{ "example.com", true },
		{ "EXAMPLE.com", true },
		{ "a", true },
		{ "_dmarc.example.com", true },
		{ "xn--bcher-kva.example", true },
		{ "1.2.3.4", true },
		{ "", false },
		{ ".", false },
		{ "example.com.", false },
		{ ".example.com", false },
		{ "a..b", false },
		{ "a b.com", false },
		{ "a\\.b.com", false },
		{ "*.example.com", false },
		{ "ex\xc3\xa9mple.com", false },
		{ "example.com:53", false },
	};
	char name[300];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (dns_name_is_valid(cases[i].name) != cases[i].ok) {
			fprintf(stderr, "  dns_name_is_valid('%s') != %d\n", cases[i].name, cases[i].ok);
			CHECK(false);
		}
	CHECK(!dns_name_is_valid(NULL));

	/* label 63 / 64, total 253 / 254 */
	memset(name, 'a', 63);
	name[63] = '\0';
	CHECK(dns_name_is_valid(name));
	memset(name, 'a', 64);
	name[64] = '\0';
	CHECK(!dns_name_is_valid(name));
	for (int i = 0; i < 4; i++) {
		memset(name + 64 * i, 'b', 63);
		name[64 * i + 63] = '.';
	}
	name[253] = '\0';   /* 63.63.63.61 */
	CHECK(dns_name_is_valid(name));
	name[253] = 'b';
	name[254] = '\0';
	CHECK(!dns_name_is_valid(name));
}

static void test_type_name(void)
{
	CHECK_STR(dns_type_name(ns_t_a), "A");
	CHECK_STR(dns_type_name(ns_t_aaaa), "AAAA");
	CHECK_STR(dns_type_name(ns_t_cname), "CNAME");
	CHECK_STR(dns_type_name(ns_t_mx), "MX");
	CHECK_STR(dns_type_name(ns_t_txt), "TXT");
	CHECK_STR(dns_type_name(ns_t_ptr), "PTR");
	CHECK_STR(dns_type_name(ns_t_srv), "SRV");
	CHECK_STR(dns_type_name(65), "HTTPS");
	CHECK_STR(dns_type_name(ns_t_any), "ANY");
	CHECK(dns_type_name(0) == NULL);
	CHECK(dns_type_name(64) == NULL);
	CHECK(dns_type_name(65535) == NULL);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
		unit_corpus_dir = argv[2];
	else if (argc != 1) {
		fprintf(stderr, "usage: %s [--write-corpus DIR]\n", argv[0]);
		return 2;
	}

	RUN(test_query_basic);
	RUN(test_query_escapes);
	RUN(test_query_rejects);
	RUN(test_query_sizes);
	RUN(test_answer_chain);
	RUN(test_answer_direct);
	RUN(test_answer_many);
	RUN(test_answer_long_chain);
	RUN(test_answer_rejects);
	RUN(test_make_reply);
	RUN(test_name_is_valid);
	RUN(test_type_name);
	UNIT_DONE("dns_msg");
}
