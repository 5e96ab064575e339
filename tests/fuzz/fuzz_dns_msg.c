// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer target for userspace/dns_msg.c: the same bytes go through the
 * query parser, the answer parser, the reply builder and the name check,
 * and the promises of dns_msg.h are checked on what comes out:
 *  - a query we accept gets a reply that parses as an answer with the same
 *    id and question, and exactly the reply's length fits;
 *  - an answer we accept reports only addresses whose owner is the
 *    question or on its CNAME chain, TTLs within DNS_TTL_MAX, names
 *    NUL-terminated and lower-case.
 * tests/fuzz/replay.c runs this on the corpus without libFuzzer.
 */
#include "dns_msg.h"

#include <arpa/nameser.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void must(bool cond)
{
	if (!cond)
		abort();
}

static void check_name(const char *name)
{
	must(memchr(name, '\0', DNS_NAME_MAX) != NULL);
	for (const char *p = name; *p; p++)
		must(!(*p >= 'A' && *p <= 'Z') && *p != ' ');
}

static void check_query(const uint8_t *data, size_t size)
{
	struct dns_question q;
	struct dns_answer a;
	uint8_t reply[512];
	int n;

	if (dns_query_parse(data, size, &q) != 0) {
		must(dns_make_reply(data, size, ns_r_refused, reply, sizeof(reply)) == -EINVAL);
		return;
	}
	check_name(q.qname);
	n = dns_make_reply(data, size, ns_r_refused, reply, sizeof(reply));
	must(n >= NS_HFIXEDSZ + 5 && n <= NS_HFIXEDSZ + NS_MAXCDNAME + 4);
	must(dns_answer_parse(reply, (size_t)n, &a) == 0);
	must(a.id == q.id && a.rcode == ns_r_refused && strcmp(a.q.qname, q.qname) == 0);
	must(a.q.qtype == q.qtype && a.q.qclass == q.qclass);
	must(a.naddrs == 0 && a.ncnames == 0 && a.nskipped == 0 && a.nunrelated == 0);
	must(dns_make_reply(data, size, ns_r_refused, reply, (size_t)n - 1) == -ENOSPC);
	must(dns_make_reply(data, size, 16, reply, sizeof(reply)) == -EINVAL);
}

static void check_answer(const uint8_t *data, size_t size)
{
	struct dns_answer a;

	if (dns_answer_parse(data, size, &a) != 0)
		return;
	must(a.rcode >= 0 && a.rcode <= 15);
	must(a.naddrs >= 0 && a.naddrs <= DNS_MAX_ADDRS);
	must(a.ncnames >= 0 && a.ncnames <= DNS_MAX_CNAMES);
	must(a.nskipped >= 0 && a.nunrelated >= 0);
	check_name(a.q.qname);
	for (int i = 0; i < a.ncnames; i++)
		check_name(a.cnames[i]);
	for (int i = 0; i < a.naddrs; i++) {
		bool on_chain = strcmp(a.addrs[i].name, a.q.qname) == 0;

		for (int j = 0; j < a.ncnames && !on_chain; j++)
			on_chain = strcmp(a.addrs[i].name, a.cnames[j]) == 0;
		must(on_chain);
		must(a.addrs[i].ttl <= DNS_TTL_MAX);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char name[300];
	size_t n = size < sizeof(name) - 1 ? size : sizeof(name) - 1;

	check_query(data, size);
	check_answer(data, size);

	if (n)
		memcpy(name, data, n);
	name[n] = '\0';
	if (dns_name_is_valid(name))
		must(strlen(name) >= 1 && strlen(name) <= 253);
	if (size >= 2)
		(void)dns_type_name((uint16_t)(data[0] << 8 | data[1]));
	return 0;
}
