// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Which worker thread gets a new connection. Every worker listens on the
 * enforcer's port with SO_REUSEPORT; without this program the kernel picks
 * by a hash of the 4-tuple, so 8 connections land 4/4 on two workers only
 * about a quarter of the time, and 6/2 or 7/1 a quarter of the time: one
 * thread relays most of the traffic while the other idles, and throughput
 * swings by a third from one run to the next (measured with pgbench -c 8).
 *
 * This program picks the worker with the fewest connections. A worker's
 * count is what it relays (written by the worker, conns[]) plus what the
 * kernel already sent it and it has not yet accepted (pending[]: added
 * here, taken off by the worker as it accepts), so a burst of connects
 * spreads out before any of them is accepted. Among the least loaded, the
 * worker pinned to the CPU this runs on (the client's, on loopback:
 * cpu_worker[], filled by the enforcer, enforcer.c pin_workers()), else the
 * 4-tuple hash decides.
 *
 * It decides only where a connection queues, never whether it is allowed:
 * if anything fails here the kernel falls back to its hash.
 *
 * No CO-RE here: the only kernel struct it reads is its context, whose
 * layout is uapi, so it takes the types from <linux/bpf.h> and not from
 * vmlinux.h (whose structs all carry preserve_access_index). An object with
 * CO-RE relocations makes libbpf read and parse the kernel's BTF when it
 * loads: 65-70 ms of every enforcer start on the 2-CPU VMs, which
 * agentgate.bpf.c's load pays once already.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "agentgate_abi.h"

#define ETH_P_IPV6 0x86DD
_Static_assert((AG_BAL_MAX & (AG_BAL_MAX - 1)) == 0, "AG_BAL_MAX is a power of two");

/* Sockets: key i is worker i's IPv4 listener, AG_BAL_MAX + i its IPv6 one.
 * A SOCKMAP, not a REUSEPORT_SOCKARRAY: that one keeps its entry in the
 * socket's sk_user_data, and a socket with it cannot also be in the
 * SOCKMAP the port guard (ag_guard in agentgate.bpf.c) assigns from. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 2 * AG_BAL_MAX);
	__type(key, __u32);
	__type(value, __u64);
} ag_bal_socks SEC(".maps");

const volatile __u32 nworkers = 1;

/* Memory-mapped by the enforcer (the skeleton's .bss). */
__u32 conns[AG_BAL_MAX];
__u32 pending[AG_BAL_MAX];
/* 1 + the worker pinned to each CPU; 0: none. */
__u32 cpu_worker[AG_BAL_CPUS];

SEC("sk_reuseport")
int ag_pick_worker(struct sk_reuseport_md *md)
{
	__u32 n = nworkers, start, best = 0, best_load = ~0u, key;

	if (n < 1 || n > AG_BAL_MAX)
		return SK_PASS;   /* the kernel's hash */
	start = md->hash % n;
	for (__u32 k = 0; k < AG_BAL_MAX && k < n; k++) {
		__u32 i = start + k, load;

		if (i >= n)
			i -= n;
		i &= AG_BAL_MAX - 1;   /* a no-op (i < n), for the verifier */
		load = conns[i] + pending[i];
		if (load < best_load) {
			best_load = load;
			best = i;
		}
	}
	/* Among the least loaded, the worker of the CPU the SYN is processed
	 * on: the connecting thread's (loopback), so the relay starts where
	 * its client runs and their wakeups stay on one CPU. */
	__u32 cpu = bpf_get_smp_processor_id();

	if (cpu < AG_BAL_CPUS) {
		__u32 lw = cpu_worker[cpu];

		if (lw >= 1 && lw <= n) {
			__u32 l = (lw - 1) & (AG_BAL_MAX - 1);

			if (conns[l] + pending[l] <= best_load)
				best = l;
		}
	}
	key = best;
	if (md->eth_protocol == bpf_htons(ETH_P_IPV6))
		key += AG_BAL_MAX;
	if (bpf_sk_select_reuseport(md, &ag_bal_socks, &key, 0))
		return SK_PASS;   /* that listener is gone (shutting down): the kernel's hash */
	__sync_fetch_and_add(&pending[best & (AG_BAL_MAX - 1)], 1);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
