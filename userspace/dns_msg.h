/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dns_msg: read the DNS queries agents send and the answers the upstream
 * resolver returns, and build the short replies the enforcer gives itself
 * (REFUSED, SERVFAIL). Wire parsing and name decompression are glibc
 * libresolv's (ns_initparse, ns_parserr, ns_name_uncompress); this module
 * adds the checks and the shape agentgate needs. Link with -lresolv.
 *
 * Names are in presentation form as libresolv prints them, ASCII letters
 * lower-cased, no trailing dot, "" for the root. Bytes outside
 * letters/digits/hyphen come out escaped ("a\.b", "\032"), so a name never
 * contains a raw NUL or space; callers that match names against policy
 * check dns_name_is_valid() first.
 *
 * Library code: no logging, no allocation, no global state; reentrant.
 */
#ifndef AGENTGATE_DNS_MSG_H
#define AGENTGATE_DNS_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNS_QUERY_MAX   4096    /* a query longer than this is refused */
#define DNS_MSG_MAX     65535   /* the most a DNS message can be (TCP length prefix) */
#define DNS_NAME_MAX    256     /* presentation name buffer, NUL included */
#define DNS_MAX_ADDRS   32
#define DNS_MAX_CNAMES  8
#define DNS_TTL_MAX     86400u  /* learned addresses are forgotten within a day */

struct dns_question {
	uint16_t id;
	char qname[DNS_NAME_MAX];   /* lower case, no trailing dot; "" for root */
	uint16_t qtype, qclass;
};

struct dns_addr {
	uint8_t addr[16];           /* IPv4 stored IPv4-mapped ::ffff:a.b.c.d */
	uint32_t ttl;               /* seconds, ≤ DNS_TTL_MAX and ≤ every CNAME TTL leading here */
	char name[DNS_NAME_MAX];    /* owner name of the A/AAAA record */
};

struct dns_answer {
	uint16_t id;
	int rcode;                  /* header RCODE, 0..15 (ns_r_noerror, ns_r_nxdomain, ...) */
	struct dns_question q;
	struct dns_addr addrs[DNS_MAX_ADDRS];
	int naddrs;
	char cnames[DNS_MAX_CNAMES][DNS_NAME_MAX]; /* CNAME targets, in chain order from q.qname */
	int ncnames;
	int nskipped;               /* chain records (A, AAAA, CNAME) that did not fit the arrays */
	int nunrelated;             /* A, AAAA, CNAME records not reachable from q.qname: ignored */
	bool truncated;             /* TC bit */
};

/*
 * Parse a query an agent sent. Accepts len 12..DNS_QUERY_MAX, QR=0, opcode
 * QUERY, exactly one question, no answer or authority records (an
 * additional section, e.g. EDNS OPT, is allowed), and every owner name in
 * the message expands. Fills *q and returns 0, or returns -EINVAL; *q is
 * cleared first either way.
 */
int dns_query_parse(const uint8_t *msg, size_t len, struct dns_question *q);

/*
 * Parse an answer from the upstream resolver. Accepts len 12..DNS_MSG_MAX,
 * QR=1, opcode QUERY, exactly one question, every owner name in every
 * section expands, A/AAAA of class IN have 4/16 bytes of data, and CNAME
 * data is exactly one name. Returns 0 or -EINVAL; *a is cleared first.
 *
 * Only what the question asked for is reported: the CNAME chain is followed
 * from q.qname (up to DNS_MAX_CNAMES links; a loop or a name with two
 * CNAMEs is -EINVAL), and A/AAAA records (class IN) are kept only when
 * their owner is q.qname or on that chain. Anything else an upstream adds,
 * such as an "allowed.example.com A 6.6.6.6" in the answer to a query for
 * a name the agent controls, is counted in nunrelated and never reported:
 * forwarding resolvers pass such records through unchecked. Callers should
 * attribute the addresses to q.qname, and check a.id and a.q against the
 * query they sent.
 *
 * TTLs: RFC 2181 §8 values with the top bit set count as 0; each address
 * keeps the smallest TTL on its way from q.qname, at most DNS_TTL_MAX.
 */
int dns_answer_parse(const uint8_t *msg, size_t len, struct dns_answer *a);

/*
 * Build, into out[0..outlen), the reply to `query` that the enforcer gives
 * itself: same id and question (qname bytes as the agent sent them, so
 * 0x20 case randomisation still matches), QR=1, opcode QUERY, RD and CD
 * copied, RA=1, the given rcode (0..15, e.g. ns_r_refused, ns_r_servfail),
 * no records. The query must pass dns_query_parse().
 * Returns the reply's length, -EINVAL for a bad query or rcode, or -ENOSPC
 * when outlen is too small.
 */
int dns_make_reply(const uint8_t *query, size_t qlen, int rcode, uint8_t *out, size_t outlen);

/*
 * true when `name` is a host name we can match: 1..253 characters, labels
 * of 1..63 characters from [A-Za-z0-9_-] separated by single dots, no
 * leading or trailing dot (the root, "", is not a host name). Underscores
 * are allowed because DNS uses them (_dmarc, SRV). Numeric names such as
 * "1.2.3.4" pass: this is DNS syntax, not a check that a name is no IP.
 */
bool dns_name_is_valid(const char *name);

/* "A", "AAAA", "CNAME", "MX", "TXT", "PTR", "SRV", "HTTPS", "ANY", or NULL
 * for any other type (print the number). Static strings. */
const char *dns_type_name(uint16_t qtype);

#endif
