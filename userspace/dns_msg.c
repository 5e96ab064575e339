// SPDX-License-Identifier: Apache-2.0
/*
 * dns_msg: DNS queries and answers through glibc libresolv. See dns_msg.h.
 *
 * libresolv does the byte work: ns_initparse() checks that the counted
 * records exactly fill the message, ns_parserr() expands owner names
 * (refusing compression loops and pointers past the end) and checks each
 * RDLENGTH against the message, ns_name_uncompress() expands names inside
 * RDATA. What is left here is the policy-relevant shape: which messages we
 * accept, and which records of an answer belong to its question.
 */
#include "dns_msg.h"

#include <arpa/nameser.h>
#include <errno.h>
#include <resolv.h>
#include <string.h>

/* Header flag bits (RFC 1035 §4.1.1, RFC 4035 §3.2 for CD). */
enum {
	FLAG_QR = 0x8000,
	FLAG_RD = 0x0100,
	FLAG_RA = 0x0080,
	FLAG_CD = 0x0010,
};

static void ascii_lower(char *s)
{
	for (; *s; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
}

/*
 * Canonicalise, in place, a name libresolv printed into a NS_MAXDNAME
 * buffer: ASCII lower case (escapes are digits or punctuation, so this
 * never changes what a name means), and the root as "" (glibc prints "",
 * older resolvers ".").
 */
static void canon_name(char *s)
{
	if (s[0] == '.' && s[1] == '\0')
		s[0] = '\0';
	ascii_lower(s);
}

/* Copy a canonical name into a DNS_NAME_MAX field; longer is refused. */
static int store_name(char *dst, const char *src)
{
	size_t n = strlen(src);

	if (n >= DNS_NAME_MAX)
		return -EINVAL;
	memcpy(dst, src, n + 1);
	return 0;
}

/*
 * ns_initparse() skips names without following compression pointers, so a
 * loop or a pointer out of the message is only found by expanding. Expand
 * every owner name in every section once, so no message we accept (and
 * relay) has an owner name a resolver library would choke on. Names inside
 * RDATA of other types (NS, MX, SOA) are the agent's resolver's business.
 */
static int check_names(ns_msg *h)
{
	static const ns_sect sects[] = { ns_s_qd, ns_s_an, ns_s_ns, ns_s_ar };
	ns_rr rr;

	for (size_t s = 0; s < sizeof(sects) / sizeof(sects[0]); s++)
		for (int i = 0; i < ns_msg_count(*h, sects[s]); i++)
			if (ns_parserr(h, sects[s], i, &rr) < 0)
				return -EINVAL;
	return 0;
}

/* Common to queries and answers: framing, opcode, one question, names. */
static int open_msg(const uint8_t *msg, size_t len, size_t max, ns_msg *h)
{
	if (!msg || len < NS_HFIXEDSZ || len > max)
		return -EINVAL;
	if (ns_initparse(msg, (int)len, h) < 0)   /* len ≤ 65535: fits an int */
		return -EINVAL;
	if (ns_msg_getflag(*h, ns_f_opcode) != ns_o_query || ns_msg_count(*h, ns_s_qd) != 1)
		return -EINVAL;
	return check_names(h);
}

static int read_question(ns_msg *h, struct dns_question *q)
{
	ns_rr rr;

	if (ns_parserr(h, ns_s_qd, 0, &rr) < 0)
		return -EINVAL;
	canon_name(rr.name);
	if (store_name(q->qname, rr.name) < 0)
		return -EINVAL;
	q->id = ns_msg_id(*h);
	q->qtype = (uint16_t)ns_rr_type(rr);
	q->qclass = (uint16_t)ns_rr_class(rr);
	return 0;
}

/*
 * The query is forwarded as the agent wrote it, with another id. So its
 * question name must be written out whole, label by label: a compression
 * pointer in it (no client resolver compresses a lone question) may point into
 * the header, where we read the agent's id and the upstream reads ours,
 * and the two would read different names: a name dns.allow never matched
 * would be resolved (review, stop 28: with dnsmasq, about one random id in
 * six read an attacker's name, from bytes of an EDNS option the pointers
 * led into). For the same reason the only other record a query may carry
 * is EDNS's OPT, whose owner is the root, written as one zero byte.
 * Returns the offset just past the question, or -EINVAL.
 */
static long plain_question(const uint8_t *msg, size_t len)
{
	size_t off = NS_HFIXEDSZ;

	while (off < len && msg[off]) {
		if (msg[off] & 0xc0)
			return -EINVAL;   /* a pointer (or an obsolete label type) */
		off += 1 + (size_t)msg[off];
	}
	if (off >= len || len - off - 1 < 2 * NS_INT16SZ)
		return -EINVAL;
	return (long)(off + 1 + 2 * NS_INT16SZ);
}

int dns_query_parse(const uint8_t *msg, size_t len, struct dns_question *q)
{
	ns_msg h;
	ns_rr rr;
	long end;

	memset(q, 0, sizeof(*q));
	if (open_msg(msg, len, DNS_QUERY_MAX, &h) < 0)
		return -EINVAL;
	if (ns_msg_getflag(h, ns_f_qr) != 0)
		return -EINVAL;
	/* A query carries no answers; records there would be relayed unread. */
	if (ns_msg_count(h, ns_s_an) != 0 || ns_msg_count(h, ns_s_ns) != 0)
		return -EINVAL;
	if ((end = plain_question(msg, len)) < 0 || ns_msg_count(h, ns_s_ar) > 1)
		return -EINVAL;
	if (ns_msg_count(h, ns_s_ar) == 1 &&
	    ((size_t)end >= len || msg[end] != 0 || ns_parserr(&h, ns_s_ar, 0, &rr) < 0 ||
	     ns_rr_type(rr) != ns_t_opt))
		return -EINVAL;
	if (read_question(&h, q) < 0) {
		memset(q, 0, sizeof(*q));
		return -EINVAL;
	}
	return 0;
}

/* RFC 2181 §8: a TTL with the top bit set is 0. */
static uint32_t clamp_ttl(uint32_t ttl)
{
	if (ttl > 0x7fffffffu)
		return 0;
	return ttl < DNS_TTL_MAX ? ttl : DNS_TTL_MAX;
}

/* Names on the chain: 0 is the question, i > 0 is cnames[i - 1]. */
static const char *chain_name(const struct dns_answer *a, int i)
{
	return i == 0 ? a->q.qname : a->cnames[i - 1];
}

static int chain_find(const struct dns_answer *a, const char *name)
{
	for (int i = 0; i <= a->ncnames; i++)
		if (strcmp(chain_name(a, i), name) == 0)
			return i;
	return -1;
}

/* The CNAME's target, canonical; its RDATA must be exactly one name. */
static int cname_target(const ns_msg *h, const ns_rr *rr, char target[NS_MAXDNAME])
{
	int n = ns_name_uncompress(ns_msg_base(*h), ns_msg_end(*h), ns_rr_rdata(*rr),
				   target, NS_MAXDNAME);

	if (n < 0 || n != ns_rr_rdlen(*rr))
		return -EINVAL;
	canon_name(target);
	return 0;
}

static bool is_in_cname(const ns_rr *rr)
{
	return ns_rr_class(*rr) == ns_c_in && ns_rr_type(*rr) == ns_t_cname;
}

/*
 * Build the CNAME chain from q.qname into a->cnames, with ttl_to[i] the
 * smallest TTL on the way to chain name i. Records may come in any order,
 * so scan until a pass adds nothing; each pass that adds a link, at most
 * DNS_MAX_CNAMES of them, is followed by one that checks every CNAME of a
 * chain name against the chain: a second, different CNAME for one name, or
 * a link back into the chain, makes the answer ambiguous and is refused.
 */
static int follow_chain(ns_msg *h, struct dns_answer *a, uint32_t ttl_to[DNS_MAX_CNAMES + 1])
{
	char target[NS_MAXDNAME];
	bool grew = true;
	ns_rr rr;

	ttl_to[0] = DNS_TTL_MAX;
	while (grew) {
		grew = false;
		for (int i = 0; i < ns_msg_count(*h, ns_s_an); i++) {
			if (ns_parserr(h, ns_s_an, i, &rr) < 0)
				return -EINVAL;
			if (!is_in_cname(&rr))
				continue;
			canon_name(rr.name);
			int at = chain_find(a, rr.name);
			if (at < 0)
				continue;
			if (cname_target(h, &rr, target) < 0)
				return -EINVAL;
			if (at < a->ncnames) {
				if (strcmp(target, a->cnames[at]) != 0)
					return -EINVAL;   /* two CNAMEs for one name */
				continue;                 /* the link we have (or its duplicate) */
			}
			if (chain_find(a, target) >= 0)
				return -EINVAL;           /* loop */
			if (a->ncnames == DNS_MAX_CNAMES)
				continue;                 /* counted in nskipped by the caller */
			if (store_name(a->cnames[a->ncnames], target) < 0)
				return -EINVAL;
			uint32_t ttl = clamp_ttl(ns_rr_ttl(rr));
			ttl_to[a->ncnames + 1] = ttl < ttl_to[a->ncnames] ? ttl : ttl_to[a->ncnames];
			a->ncnames++;
			grew = true;
		}
	}
	return 0;
}

/* Keep an address whose owner is chain name `at`. */
static void add_addr(struct dns_answer *a, const ns_rr *rr, int at, uint32_t ttl_max)
{
	struct dns_addr *d = &a->addrs[a->naddrs++];
	const char *owner = chain_name(a, at);   /* stored, so it fits */
	uint32_t ttl = clamp_ttl(ns_rr_ttl(*rr));

	memset(d->addr, 0, sizeof(d->addr));
	if (ns_rr_type(*rr) == ns_t_a) {
		d->addr[10] = 0xff;
		d->addr[11] = 0xff;
		memcpy(d->addr + 12, ns_rr_rdata(*rr), 4);
	} else {
		memcpy(d->addr, ns_rr_rdata(*rr), 16);
	}
	d->ttl = ttl < ttl_max ? ttl : ttl_max;
	memcpy(d->name, owner, strlen(owner) + 1);
}

/* One pass over the answer section, the chain known: keep, skip, ignore. */
static int collect(ns_msg *h, struct dns_answer *a, const uint32_t ttl_to[DNS_MAX_CNAMES + 1])
{
	char target[NS_MAXDNAME];
	ns_rr rr;

	for (int i = 0; i < ns_msg_count(*h, ns_s_an); i++) {
		if (ns_parserr(h, ns_s_an, i, &rr) < 0)
			return -EINVAL;
		if (ns_rr_class(rr) != ns_c_in)
			continue;
		canon_name(rr.name);

		int at = chain_find(a, rr.name);
		switch (ns_rr_type(rr)) {
		case ns_t_a:
		case ns_t_aaaa:
			if (ns_rr_rdlen(rr) != (ns_rr_type(rr) == ns_t_a ? 4 : 16))
				return -EINVAL;
			if (at < 0)
				a->nunrelated++;
			else if (a->naddrs == DNS_MAX_ADDRS)
				a->nskipped++;
			else
				add_addr(a, &rr, at, ttl_to[at]);
			break;
		case ns_t_cname:
			if (cname_target(h, &rr, target) < 0)
				return -EINVAL;
			if (at < 0)
				a->nunrelated++;
			else if (at == a->ncnames)
				a->nskipped++;   /* the link past DNS_MAX_CNAMES */
			break;
		default:
			break;               /* RRSIG, DNAME, ...: not ours to read */
		}
	}
	return 0;
}

int dns_answer_parse(const uint8_t *msg, size_t len, struct dns_answer *a)
{
	uint32_t ttl_to[DNS_MAX_CNAMES + 1];
	ns_msg h;

	memset(a, 0, sizeof(*a));
	if (open_msg(msg, len, DNS_MSG_MAX, &h) < 0 || ns_msg_getflag(h, ns_f_qr) != 1 ||
	    read_question(&h, &a->q) < 0 || follow_chain(&h, a, ttl_to) < 0 ||
	    collect(&h, a, ttl_to) < 0) {
		memset(a, 0, sizeof(*a));
		return -EINVAL;
	}
	a->id = ns_msg_id(h);
	a->rcode = ns_msg_getflag(h, ns_f_rcode);
	a->truncated = ns_msg_getflag(h, ns_f_tc) != 0;
	return 0;
}

/* Length of an uncompressed wire name as ns_name_unpack() writes it. */
static size_t wire_name_len(const uint8_t *name)
{
	size_t n = 0;

	while (name[n] != 0)
		n += (size_t)name[n] + 1;
	return n + 1;
}

int dns_make_reply(const uint8_t *query, size_t qlen, int rcode, uint8_t *out, size_t outlen)
{
	struct dns_question q;
	uint8_t qname[NS_MAXCDNAME];
	ns_msg h;

	if (rcode < 0 || rcode > 15)   /* larger codes need EDNS */
		return -EINVAL;
	if (dns_query_parse(query, qlen, &q) < 0 || ns_initparse(query, (int)qlen, &h) < 0)
		return -EINVAL;
	/* The question's name starts right after the header. Unpacking it
	 * keeps the agent's letter case and drops any compression pointer,
	 * which would be meaningless in a message of our own. */
	if (ns_name_unpack(query, query + qlen, query + NS_HFIXEDSZ, qname, sizeof(qname)) < 0)
		return -EINVAL;

	size_t nlen = wire_name_len(qname);
	size_t total = NS_HFIXEDSZ + nlen + 2 * NS_INT16SZ;
	if (total > outlen)
		return -ENOSPC;

	unsigned flags = FLAG_QR | FLAG_RA | (unsigned)rcode;
	if (ns_msg_getflag(h, ns_f_rd))
		flags |= FLAG_RD;
	if (ns_msg_getflag(h, ns_f_cd))
		flags |= FLAG_CD;

	memset(out, 0, NS_HFIXEDSZ);
	ns_put16(q.id, out);
	ns_put16(flags, out + 2);
	ns_put16(1, out + 4);                   /* QDCOUNT; AN, NS, AR stay 0 */
	memcpy(out + NS_HFIXEDSZ, qname, nlen);
	ns_put16(q.qtype, out + NS_HFIXEDSZ + nlen);
	ns_put16(q.qclass, out + NS_HFIXEDSZ + nlen + NS_INT16SZ);
	return (int)total;
}

bool dns_name_is_valid(const char *name)
{
	size_t label = 0, total = 0;

	if (!name || name[0] == '\0')
		return false;
	for (const char *p = name; *p; p++) {
		char c = *p;

		if (++total > 253)
			return false;
		if (c == '.') {
			if (label == 0)
				return false;   /* leading dot or empty label */
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return false;
		if (++label > 63)
			return false;
	}
	return label != 0;              /* no trailing dot */
}

const char *dns_type_name(uint16_t qtype)
{
	switch (qtype) {
	case ns_t_a:     return "A";
	case ns_t_aaaa:  return "AAAA";
	case ns_t_cname: return "CNAME";
	case ns_t_mx:    return "MX";
	case ns_t_txt:   return "TXT";
	case ns_t_ptr:   return "PTR";
	case ns_t_srv:   return "SRV";
	case 65:         return "HTTPS";   /* RFC 9460; not in glibc's ns_type */
	case ns_t_any:   return "ANY";
	default:         return NULL;
	}
}
