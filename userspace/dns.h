/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dns: the enforcer's DNS listener. Agent slot s has its own UDP listener at
 * 127.0.0.1 and ::1, port dns_base + s (the kernel sends the agent's
 * port-53 datagrams there), so the agent is known from the port a query
 * arrives on. Queries are checked against dns.allow, forwarded to
 * dns.upstream (default: the first nameserver of /etc/resolv.conf), audited
 * (DNS Activity 4003), and the addresses each name resolved to are learned
 * per agent, kept for TTL + DNS_GRACE_S (clients cache answers past their
 * TTL). Host-name targets match those addresses; for agents that may use such
 * a target, learned addresses are also added to the kernel allow set.
 * Runs on the main thread only, except dns_resolved(), which any worker calls.
 */
#ifndef AGENTGATE_DNS_H
#define AGENTGATE_DNS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include "policy.h"

#define DNS_PENDING_MAX 1024
#define DNS_LEARNED_MAX 1024   /* per agent */
#define DNS_TIMEOUT_MS 5000
#define DNS_GRACE_S 300

struct dns;

int dns_open(struct dns **out, const struct policy *p, uint16_t base, int epfd, char *err, size_t errlen);
void dns_close(struct dns *d);
/* The per-agent DNS listeners: i from 0 to dns_listener_count() - 1; the
 * socket, with its agent slot and family. */
int dns_listener_count(const struct dns *d);
/* Listeners not opened: their port was another process's (see dns_open). */
int dns_listeners_skipped(const struct dns *d);
int dns_listener(const struct dns *d, int i, int *slot, bool *v6);
/* After agentgate reload (main thread): judge names (mode, dns.allow) and
 * keep learned kernel entries by p from now on. p has the same dns section
 * and targets as the policy it replaces. */
void dns_set_policy(struct dns *d, const struct policy *p);
void dns_on_event(struct dns *d, void *item, uint32_t events);
void dns_tick(struct dns *d);
/* policy_host_resolved_fn; ctx is (void *)(uintptr_t)slot. Thread-safe. */
bool dns_resolved(void *ctx, const char *host, const uint8_t addr[16]);
json_t *dns_status(struct dns *d);

#endif
