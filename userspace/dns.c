/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "audit.h"
#include "dns.h"
#include "dns_msg.h"
#include "enforcer.h"
#include "util.h"

struct learned {
	char name[256];
	uint8_t addr[16];
	uint64_t expires_ms;    /* 0 = free */
	bool in_kernel;         /* its keys are in the kernel: one per target port of its name */
};

struct pending {
	struct main_item item;  /* kind MI_DNS_UPSTREAM, fd = socket to upstream */
	bool used;
	int slot;
	int listen_fd;
	struct sockaddr_storage client;
	socklen_t client_len;
	uint16_t id;           /* the agent's query id, restored in the reply */
	uint16_t up_id;        /* the random id sent upstream */
	char qname[256];
	uint16_t qtype;
	uint64_t deadline_ms;
	bool would_deny;
};

struct dns {
	const struct policy *p;
	int epfd;
	uint16_t base;
	bool has_upstream;
	uint8_t up_addr[16];
	uint16_t up_port;
	struct main_item listeners[2 * AG_MAX_AGENTS];
	int nlisteners;
	int nskipped;                   /* ports another process held at the start */
	struct pending pending[DNS_PENDING_MAX];
	pthread_rwlock_t lock;
	struct learned *learned[AG_MAX_AGENTS];   /* [slot][DNS_LEARNED_MAX], lazily */
	uint64_t queries, refused, failed, learned_total;
	int inflight[AG_MAX_AGENTS];
};

#define DNS_PENDING_PER_AGENT 64   /* one agent cannot starve the others' DNS */

static uint64_t mono_ms(void)
{
	return now_ns_mono() / 1000000ull;
}

/* First "nameserver" line of /etc/resolv.conf. */
static int resolv_conf_upstream(uint8_t addr[16])
{
	char *txt = read_file("/etc/resolv.conf", 65536, NULL), *save = NULL;
	int ret = -ENOENT;

	if (!txt)
		return -errno;
	for (char *line = strtok_r(txt, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char ns[64];
		struct in_addr a4;

		if (sscanf(line, " nameserver %63s", ns) != 1)
			continue;
		memset(addr, 0, 16);
		if (inet_pton(AF_INET, ns, &a4) == 1) {
			addr[10] = addr[11] = 0xff;
			memcpy(addr + 12, &a4, 4);
			ret = 0;
		} else if (inet_pton(AF_INET6, ns, addr) == 1) {
			ret = 0;
		}
		if (ret == 0)
			break;
	}
	free(txt);
	return ret;
}

int dns_open(struct dns **out, const struct policy *p, uint16_t base, int epfd, char *err, size_t errlen)
{
	struct dns *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->p = p;
	d->epfd = epfd;
	d->base = base;
	pthread_rwlock_init(&d->lock, NULL);
	if (p->has_dns) {
		memcpy(d->up_addr, p->dns_upstream.addr, 16);
		d->up_port = p->dns_upstream.port;
		d->has_upstream = true;
	} else if (resolv_conf_upstream(d->up_addr) == 0) {
		d->up_port = 53;
		d->has_upstream = true;
	}
	for (size_t i = 0; i < p->nagents; i++) {
		int slot = E->slot_of[i];

		for (int f = 0; f < 2; f++) {
			int fd = loopback_socket(f ? AF_INET6 : AF_INET, SOCK_DGRAM, base + slot, false);
			struct main_item *it = &d->listeners[d->nlisteners];
			struct epoll_event ev = { .events = EPOLLIN, .data.ptr = it };

			if (fd == -EADDRINUSE) {
				/* another process took it while no enforcer ran: the
				 * guard gives it nothing, and this agent's queries go
				 * unanswered (a reply must come from this very port) */
				log_warn("DNS listener for agent '%s' on port %u: taken by another process; that "
					 "agent's DNS queries%s get no answer until the port is free and the "
					 "enforcer restarts", p->agents[i].name, base + slot, f ? " over IPv6" : "");
				d->nskipped++;
				continue;
			}
			if (fd < 0) {
				snprintf(err, errlen, "DNS listener on port %u: %s", base + slot, strerror(-fd));
				dns_close(d);
				return fd;
			}
			*it = (struct main_item){ .kind = MI_DNS_LISTEN, .fd = fd, .slot = slot, .ptr = d };
			d->nlisteners++;
			epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
		}
	}
	*out = d;
	return 0;
}

int dns_listeners_skipped(const struct dns *d)
{
	return d ? d->nskipped : 0;
}

int dns_listener_count(const struct dns *d)
{
	return d ? d->nlisteners : 0;
}

int dns_listener(const struct dns *d, int i, int *slot, bool *v6)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	*slot = d->listeners[i].slot;
	*v6 = getsockname(d->listeners[i].fd, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family == AF_INET6;
	return d->listeners[i].fd;
}

void dns_set_policy(struct dns *d, const struct policy *p)
{
	if (d)
		d->p = p;
}

void dns_close(struct dns *d)
{
	if (!d)
		return;
	for (int i = 0; i < d->nlisteners; i++)
		close(d->listeners[i].fd);
	for (int i = 0; i < DNS_PENDING_MAX; i++)
		if (d->pending[i].used)
			close(d->pending[i].item.fd);
	for (int i = 0; i < AG_MAX_AGENTS; i++)
		free(d->learned[i]);
	pthread_rwlock_destroy(&d->lock);
	free(d);
}

static void agent_ctx(int slot, struct audit_agent *a, struct ident_principal *pr)
{
	int idx = enforcer_agent_idx(slot);

	memset(a, 0, sizeof(*a));
	if (idx >= 0) {
		a->name = E->policy->agents[idx].name;
		a->cgroup = E->agents[idx].cgroup_rel;
		a->cgroup_id = E->agents[idx].cgid;
		enforcer_audit_principal(idx, a, pr);
	}
}

static void audit_dns(struct dns *d, int slot, const char *qname, uint16_t qtype, int rcode,
		      const struct dns_answer *ans, bool allowed, const char *reason)
{
	json_t *ev;
	struct audit_agent a;
	struct ident_principal pr;
	const char *tn = dns_type_name(qtype);
	char up[64];

	if (!enforcer_audit_admit(slot))
		return;
	ev = audit_event(4003, allowed ? 2 : 1, allowed ? "Response" : "Query");
	if (!ev)
		return;
	agent_ctx(slot, &a, &pr);
	audit_add_agent(ev, &a);
	json_object_set_new(ev, "query", json_pack("{s:s, s:s, s:s}", "hostname", qname,
		"type", tn ? tn : "", "class", "IN"));
	if (!tn) {
		char num[16];

		snprintf(num, sizeof(num), "TYPE%u", qtype);
		json_object_set_new(json_object_get(ev, "query"), "type", json_string(num));
	}
	if (rcode >= 0) {
		json_object_set_new(ev, "rcode_id", json_integer(rcode));
		json_object_set_new(ev, "rcode", json_string(rcode == 0 ? "NoError" : rcode == 2 ? "ServFail"
			: rcode == 3 ? "NXDomain" : rcode == 5 ? "Refused" : "Other"));
	}
	if (ans) {
		json_t *arr = json_array();

		for (int i = 0; i < ans->naddrs; i++) {
			char s[64];

			addr_str(ans->addrs[i].addr, s, sizeof(s));
			json_array_append_new(arr, json_pack("{s:s, s:s, s:i}", "rdata", s,
				"type", addr_is_v4mapped(ans->addrs[i].addr) ? "A" : "AAAA",
				"ttl", (int)ans->addrs[i].ttl));
		}
		for (int i = 0; i < ans->ncnames; i++)
			json_array_append_new(arr, json_pack("{s:s, s:s}", "rdata", ans->cnames[i],
							     "type", "CNAME"));
		json_object_set_new(ev, "answers", arr);
	}
	if (d->has_upstream) {
		addr_str(d->up_addr, up, sizeof(up));
		json_object_set_new(ev, "dst_endpoint", json_pack("{s:s, s:i}", "ip", up, "port", d->up_port));
	}
	audit_add_verdict(ev, allowed, false, NULL, reason);
	audit_emit(ev);
}

static void reply_error(int lfd, const struct sockaddr_storage *client, socklen_t clen,
			const uint8_t *q, size_t qlen, int rcode)
{
	uint8_t out[512];
	int n = dns_make_reply(q, qlen, rcode, out, sizeof(out));

	if (n > 0)
		sendto(lfd, out, n, MSG_DONTWAIT, (const struct sockaddr *)client, clen);
}

static void on_query(struct dns *d, struct main_item *li)
{
	uint8_t buf[4096];
	struct sockaddr_storage client;

	for (int budget = 64; budget > 0; budget--) {
		socklen_t clen = sizeof(client);
		ssize_t n = recvfrom(li->fd, buf, sizeof(buf), 0, (struct sockaddr *)&client, &clen);
		struct dns_question q;
		struct pending *pd = NULL;

		if (n < 0)
			return;
		d->queries++;
		if (dns_query_parse(buf, n, &q)) {
			d->failed++;
			audit_dns(d, li->slot, "", 0, -1, NULL, false, "malformed DNS query");
			continue;   /* not answerable: no question to echo */
		}
		bool would_deny = false;
		/* The allow list is matched on the name's text: a label holding a
		 * dot (escaped as "\." in that text) would make exfil.attacker\.example.test
		 * look like a name under example.test. Only host names are matched. */
		bool host = dns_name_is_valid(q.qname);
		if (!host || !policy_dns_allowed(d->p, q.qname)) {
			if (d->p->mode != POLICY_OBSERVE) {
				d->refused++;
				reply_error(li->fd, &client, clen, buf, n, ns_r_refused);
				audit_dns(d, li->slot, q.qname, q.qtype, ns_r_refused, NULL, false,
					  host ? "name not allowed by dns.allow"
					       : "not a host name (a label with a character other than letters, "
						 "digits, '-' and '_')");
				continue;
			}
			would_deny = true;   /* observe: recorded with the answer */
		}
		if (d->inflight[li->slot] < DNS_PENDING_PER_AGENT)
			for (int i = 0; i < DNS_PENDING_MAX && !pd; i++)
				if (!d->pending[i].used)
					pd = &d->pending[i];
		if (!d->has_upstream || !pd) {
			d->failed++;
			reply_error(li->fd, &client, clen, buf, n, ns_r_servfail);
			audit_dns(d, li->slot, q.qname, q.qtype, ns_r_servfail, NULL, false,
				  !pd ? "too many queries in flight" : "no DNS upstream configured");
			continue;
		}
		/* The agent chose its query id; the upstream sees a random one, so
		 * an off-path party the agent colludes with cannot predict it. */
		uint16_t up_id;
		if (getrandom(&up_id, sizeof(up_id), 0) != sizeof(up_id))
			up_id = (uint16_t)now_ns_mono();
		uint8_t agent_id[2] = { buf[0], buf[1] }, agent_flags = buf[3];
		buf[0] = up_id >> 8;
		buf[1] = up_id & 0xff;
		/* CD off: the agent does not turn off a validating upstream's
		 * DNSSEC checks for answers we learn addresses from */
		buf[3] &= ~0x10;
		struct sockaddr_storage up;
		socklen_t ulen = addr_to_sockaddr(d->up_addr, d->up_port, &up);
		int fd = socket(up.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

		if (fd < 0 || connect(fd, (struct sockaddr *)&up, ulen) || send(fd, buf, n, 0) != n) {
			if (fd >= 0)
				close(fd);
			d->failed++;
			buf[0] = agent_id[0];   /* answered with the agent's own id and flags */
			buf[1] = agent_id[1];
			buf[3] = agent_flags;
			reply_error(li->fd, &client, clen, buf, n, ns_r_servfail);
			audit_dns(d, li->slot, q.qname, q.qtype, ns_r_servfail, NULL, false,
				  "DNS upstream unreachable");
			continue;
		}
		memset(pd, 0, sizeof(*pd));
		pd->used = true;
		pd->item = (struct main_item){ .kind = MI_DNS_UPSTREAM, .fd = fd, .slot = li->slot, .ptr = d };
		pd->slot = li->slot;
		pd->listen_fd = li->fd;
		pd->client = client;
		pd->client_len = clen;
		pd->id = q.id;
		pd->up_id = up_id;
		pd->would_deny = would_deny;
		d->inflight[li->slot]++;
		snprintf(pd->qname, sizeof(pd->qname), "%s", q.qname);
		pd->qtype = q.qtype;
		pd->deadline_ms = mono_ms() + DNS_TIMEOUT_MS;
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &pd->item };
		epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev);
	}
}

static void finish(struct dns *d, struct pending *pd)
{
	d->inflight[pd->slot]--;
	epoll_ctl(d->epfd, EPOLL_CTL_DEL, pd->item.fd, NULL);
	close(pd->item.fd);
	pd->used = false;
}

/* The exchange ends without an answer: the agent gets SERVFAIL now rather
 * than waiting out its own timeout. */
static void fail(struct dns *d, struct pending *pd, const char *reason)
{
	uint8_t q[512];
	/* Rebuild a minimal query to echo in the SERVFAIL. */
	int qlen = res_mkquery(ns_o_query, pd->qname, ns_c_in, pd->qtype, NULL, 0, NULL, q, sizeof(q));

	d->failed++;
	if (qlen > 1) {
		q[0] = pd->id >> 8;
		q[1] = pd->id & 0xff;
		reply_error(pd->listen_fd, &pd->client, pd->client_len, q, qlen, ns_r_servfail);
	}
	audit_dns(d, pd->slot, pd->qname, pd->qtype, ns_r_servfail, NULL, false, reason);
	finish(d, pd);
}

static bool name_eq(const char *a, const char *b)
{
	return strcasecmp(a, b) == 0;
}

/* Does a host-name target named 'name' at 'port' serve this agent? */
static bool name_port_target(const struct policy *p, int idx, const char *name, size_t t)
{
	const struct policy_target *tg = &p->targets[t];

	return tg->addr.kind == ADDR_HOST && name_eq(tg->addr.host, name) && enforcer_may_target(E->policy, idx, t);
}

/* Is the kernel key (addr/128, port) the policy's own, for a target of
 * address kind this agent may use (granted, or by claims)? An IP target,
 * or a network of one address (/32, /128), writes that very key. */
static bool static_key(const struct policy *p, int ai, const uint8_t addr[16], uint16_t port)
{
	for (size_t t = 0; ai >= 0 && t < p->ntargets; t++) {
		const struct policy_addr *a = &p->targets[t].addr;

		if ((a->kind == ADDR_IP || a->kind == ADDR_CIDR) && a->prefixlen == 128 && a->port == port &&
		    memcmp(a->addr, addr, 16) == 0 && enforcer_may_target(p, ai, (int)t))
			return true;
	}
	return false;
}

/* Adds addr to the kernel allow set for every host-name target named 'name'
 * that this agent may use (one key per port). True when one was added. A
 * key the policy wrote itself is left alone: overwritten (its flags with
 * it) and then deleted when the learned name expired, it refused the
 * static target until a reload (review, stop 28). */
static bool kernel_allow(struct dns *d, int slot, const char *name, const uint8_t addr[16])
{
	const struct policy *p = d->p;
	int idx = enforcer_agent_idx(slot);
	bool any = false;

	for (size_t t = 0; idx >= 0 && t < p->ntargets; t++)
		if (name_port_target(p, idx, name, t) && !static_key(p, idx, addr, p->targets[t].addr.port) &&
		    loader_allow(E->loader, slot, addr, 128, p->targets[t].addr.port, t, 0, true) == 0)
			any = true;
	return any;
}

/* True when the kernel key (slot, addr/128, port) is still needed: by another
 * learned name of this agent with a target at that port, or by a static
 * target of the policy (static_key()). */
static bool key_needed(struct dns *d, int slot, const struct learned *self, uint16_t port)
{
	const struct policy *p = d->p;
	int ai = enforcer_agent_idx(slot);

	for (int i = 0; ai >= 0 && i < DNS_LEARNED_MAX; i++) {
		const struct learned *l = &d->learned[slot][i];

		if (l == self || !l->expires_ms || !l->in_kernel || memcmp(l->addr, self->addr, 16))
			continue;
		for (size_t t = 0; t < p->ntargets; t++)
			if (p->targets[t].addr.port == port && name_port_target(p, ai, l->name, t))
				return true;
	}
	return static_key(p, ai, self->addr, port);
}

/* Removes every key kernel_allow() added for l that nothing else needs:
 * a name with targets at two ports has two keys. */
static void kernel_forget(struct dns *d, int slot, struct learned *l)
{
	const struct policy *p = d->p;
	int idx = enforcer_agent_idx(slot);

	for (size_t t = 0; l->in_kernel && idx >= 0 && t < p->ntargets; t++)
		if (name_port_target(p, idx, l->name, t) && !key_needed(d, slot, l, p->targets[t].addr.port))
			loader_allow(E->loader, slot, l->addr, 128, p->targets[t].addr.port, t, 0, false);
	l->in_kernel = false;
}

static void learn(struct dns *d, int slot, const char *name, const uint8_t addr[16], uint32_t ttl)
{
	uint64_t now = mono_ms(), exp = now + (uint64_t)(ttl + DNS_GRACE_S) * 1000;
	struct learned *tab, *slotp = NULL, *oldest = NULL;

	pthread_rwlock_wrlock(&d->lock);
	if (!d->learned[slot])
		d->learned[slot] = calloc(DNS_LEARNED_MAX, sizeof(struct learned));
	tab = d->learned[slot];
	if (!tab) {
		pthread_rwlock_unlock(&d->lock);
		return;
	}
	for (int i = 0; i < DNS_LEARNED_MAX; i++) {
		struct learned *l = &tab[i];

		if (l->expires_ms && name_eq(l->name, name) && memcmp(l->addr, addr, 16) == 0) {
			slotp = l;
			break;
		}
		if (!l->expires_ms && !slotp)
			slotp = l;
		if (l->expires_ms && (!oldest || l->expires_ms < oldest->expires_ms))
			oldest = l;
	}
	if (!slotp)
		slotp = oldest;   /* table full: the entry closest to expiry goes */
	if (slotp->expires_ms && !(name_eq(slotp->name, name) && !memcmp(slotp->addr, addr, 16)))
		kernel_forget(d, slot, slotp);
	if (!(slotp->expires_ms && name_eq(slotp->name, name) && !memcmp(slotp->addr, addr, 16))) {
		snprintf(slotp->name, sizeof(slotp->name), "%s", name);
		memcpy(slotp->addr, addr, 16);
		slotp->in_kernel = false;
		d->learned_total++;
	}
	if (exp > slotp->expires_ms)
		slotp->expires_ms = exp;
	if (!slotp->in_kernel)
		slotp->in_kernel = kernel_allow(d, slot, name, addr);
	pthread_rwlock_unlock(&d->lock);
}

static void on_answer(struct dns *d, struct pending *pd)
{
	uint8_t buf[4096];
	struct dns_answer ans;
	/* MSG_TRUNC: the datagram's own length, to tell a cut answer */
	ssize_t n = recv(pd->item.fd, buf, sizeof(buf), MSG_TRUNC);

	if ((n < 0 && errno == EAGAIN) || n == 0)
		return;   /* an empty datagram is no answer, and ends nothing */
	if (n > (ssize_t)sizeof(buf)) {
		/* more than we read: not parsed, never relayed cut; the agent
		 * gets SERVFAIL now rather than at the deadline (its own EDNS
		 * buffer size let the upstream answer that large) */
		if (((unsigned)buf[0] << 8 | buf[1]) == pd->up_id)
			fail(d, pd, "DNS answer larger than 4096 bytes");
		return;
	}
	if (n < 0 || dns_answer_parse(buf, n, &ans) || ans.id != pd->up_id ||
	    !name_eq(ans.q.qname, pd->qname) || ans.q.qtype != pd->qtype) {
		/* Not the answer to this query: ignore it and keep waiting, so a
		 * spoofed datagram cannot end the exchange. The deadline bounds it. */
		if (n > 0)
			return;
		/* ICMP port unreachable (nothing listens yet, or any more): no
		 * answer will come on this socket. */
		fail(d, pd, "DNS upstream unreachable");
		return;
	}
	/* Addresses are learned under the name the agent asked for, never under
	 * a name the answer claims (a CNAME chain from a resolver the agent can
	 * influence could name any host-name target). */
	for (int i = 0; i < ans.naddrs; i++)
		learn(d, pd->slot, pd->qname, ans.addrs[i].addr, ans.addrs[i].ttl);
	buf[0] = pd->id >> 8;
	buf[1] = pd->id & 0xff;
	sendto(pd->listen_fd, buf, n, MSG_DONTWAIT, (struct sockaddr *)&pd->client, pd->client_len);
	audit_dns(d, pd->slot, pd->qname, pd->qtype, ans.rcode, &ans, true,
		  pd->would_deny ? "name not allowed by dns.allow (observe mode)" : NULL);
	finish(d, pd);
}

void dns_on_event(struct dns *d, void *item, uint32_t events)
{
	struct main_item *it = item;

	if (it->kind == MI_DNS_LISTEN)
		on_query(d, it);
	else
		on_answer(d, (struct pending *)it);   /* item is the first member */
}

void dns_tick(struct dns *d)
{
	uint64_t now = mono_ms();

	for (int i = 0; i < DNS_PENDING_MAX; i++) {
		struct pending *pd = &d->pending[i];

		if (!pd->used || now < pd->deadline_ms)
			continue;
		fail(d, pd, "DNS upstream did not answer");
	}
	pthread_rwlock_wrlock(&d->lock);
	for (int s = 0; s < AG_MAX_AGENTS; s++) {
		if (!d->learned[s])
			continue;
		for (int i = 0; i < DNS_LEARNED_MAX; i++) {
			struct learned *l = &d->learned[s][i];

			if (!l->expires_ms || now < l->expires_ms)
				continue;
			kernel_forget(d, s, l);
			l->expires_ms = 0;
		}
	}
	pthread_rwlock_unlock(&d->lock);
}

bool dns_resolved(void *ctx, const char *host, const uint8_t addr[16])
{
	struct dns *d = E ? E->dns : NULL;
	int slot = (int)(uintptr_t)ctx;
	uint64_t now = mono_ms();
	bool found = false;

	if (!d || slot <= 0 || slot >= AG_MAX_AGENTS)
		return false;
	pthread_rwlock_rdlock(&d->lock);
	if (d->learned[slot]) {
		for (int i = 0; i < DNS_LEARNED_MAX && !found; i++) {
			const struct learned *l = &d->learned[slot][i];

			found = l->expires_ms > now && memcmp(l->addr, addr, 16) == 0 &&
				name_eq(l->name, host);
		}
	}
	pthread_rwlock_unlock(&d->lock);
	return found;
}

json_t *dns_status(struct dns *d)
{
	char up[64] = "";

	if (d->has_upstream)
		addr_str(d->up_addr, up, sizeof(up));
	return json_pack("{s:s, s:i, s:i, s:I, s:I, s:I, s:I}", "upstream", up, "upstream_port",
			 d->up_port, "port_base", d->base, "queries", (json_int_t)d->queries,
			 "refused", (json_int_t)d->refused, "failed", (json_int_t)d->failed,
			 "learned", (json_int_t)d->learned_total);
}
