/* SPDX-License-Identifier: Apache-2.0 */
/*
 * balance: spreads new agent connections over the worker threads by
 * connection count (bpf/balance.bpf.c, an SO_REUSEPORT program) instead of
 * the kernel's 4-tuple hash. Where it cannot load, the hash stays and the
 * enforcer says so in its log and status; nothing else depends on it.
 */
#ifndef AGENTGATE_BALANCE_H
#define AGENTGATE_BALANCE_H

#include <stddef.h>
#include <stdint.h>

struct balance;

/*
 * Loads the program for n workers whose IPv4 and IPv6 listeners are
 * fd4[i] and fd6[i] (-1: none), fills its socket map and attaches it to
 * both listener groups. 0 or -errno, with a reason in err.
 */
int balance_open(struct balance **out, int n, const int *fd4, const int *fd6, char *err, size_t errlen);
void balance_close(struct balance *b);   /* NULL-safe */

/* Worker i's two counters in the program's memory (see balance.bpf.c). */
uint32_t *balance_conns(struct balance *b, int i);
uint32_t *balance_pending(struct balance *b, int i);
/* Worker worker runs pinned to CPU cpu: connections from there prefer it. */
void balance_set_cpu(struct balance *b, int cpu, int worker);

#endif
