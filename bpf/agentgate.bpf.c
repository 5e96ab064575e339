// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * agentgate kernel side: every socket an agent cgroup opens is stamped with
 * the agent's identity, and every TCP connect is either refused here or
 * rewritten to the enforcer's loopback listener; DNS goes to the enforcer's
 * DNS listener and all other UDP is refused.
 *
 * Every error path denies. Anything the programs could not do (ring buffer
 * full, map update failed) is counted in ag_counters for the enforcer to
 * report. Enforcement never depends on an event being delivered.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "agentgate_abi.h"
#include "maps.bpf.h"

#define AF_INET   2
#define AF_INET6  10
#define SOCK_STREAM 1
#define SOCK_DGRAM  2
#define ECONNREFUSED 111

#define ALLOW 1
#define DENY  0

/* Set by the loader from a feature probe: bpf_set_retval() exists (>= 5.18)
 * so a denied connect fails with ECONNREFUSED instead of EPERM. */
const volatile bool has_set_retval = false;

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&ag_counters, &idx);

	if (v)
		*v += 1;
}

static __always_inline bool is_v4mapped(const __u8 a[16])
{
	return a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == 0 && a[4] == 0 &&
	       a[5] == 0 && a[6] == 0 && a[7] == 0 && a[8] == 0 && a[9] == 0 &&
	       a[10] == 0xff && a[11] == 0xff;
}

static __always_inline void map_v4(__u8 a[16], __u32 ip4_be)
{
	__builtin_memset(a, 0, 10);
	a[10] = 0xff;
	a[11] = 0xff;
	__builtin_memcpy(a + 12, &ip4_be, 4);
}

/* The metadata class; twin of policy_is_metadata_addr() in userspace. */
static __always_inline bool is_metadata(const __u8 a[16])
{
	if (is_v4mapped(a))   /* 169.254.0.0/16, 100.100.100.200 */
		return (a[12] == 169 && a[13] == 254) ||
		       (a[12] == 100 && a[13] == 100 && a[14] == 100 && a[15] == 200);
	if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)   /* fe80::/10 */
		return true;
	/* fd00:ec2::254 */
	return a[0] == 0xfd && a[1] == 0x00 && a[2] == 0x0e && a[3] == 0xc2 &&
	       a[4] == 0 && a[5] == 0 && a[6] == 0 && a[7] == 0 && a[8] == 0 &&
	       a[9] == 0 && a[10] == 0 && a[11] == 0 && a[12] == 0 && a[13] == 0 &&
	       a[14] == 0x02 && a[15] == 0x54;
}

/* The enforcer's own address: 127.0.0.1 (v4-mapped too) or ::1, exactly.
 * Not all of 127/8: a socket that was redirected once (its flag stays when
 * the agent disconnects it with AF_UNSPEC) then connected to 127.0.0.2 at
 * our port would pass as "already ours" and reach whatever listens there. */
static __always_inline bool is_loopback(const __u8 a[16])
{
	int i;

	if (is_v4mapped(a))
		return a[12] == 127 && a[13] == 0 && a[14] == 0 && a[15] == 1;
	for (i = 0; i < 15; i++)
		if (a[i])
			return false;
	return a[15] == 1;
}

static __always_inline void fill_task(struct ag_sk_state *st)
{
	__u64 pt = bpf_get_current_pid_tgid();

	st->tgid = pt >> 32;
	st->pid = (__u32)pt;
	st->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(st->comm, sizeof(st->comm));
}

static __always_inline void emit(__u32 kind, __u32 reason, __u32 slot, __u64 cookie,
				 const __u8 addr[16], __u16 port, __u8 family, __u8 proto)
{
	struct ag_event *e = bpf_ringbuf_reserve(&ag_events, sizeof(*e), 0);
	__u64 pt;

	if (!e) {
		count(AG_CNT_RB_DROP);
		return;
	}
	pt = bpf_get_current_pid_tgid();
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->sock_cookie = cookie;
	e->kind = kind;
	e->reason = reason;
	e->slot = slot;
	e->tgid = pt >> 32;
	e->pid = (__u32)pt;
	e->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (addr)
		__builtin_memcpy(e->addr, addr, 16);
	else
		__builtin_memset(e->addr, 0, 16);
	e->port = port;
	e->family = family;
	e->proto = proto;
	e->pad0 = 0;
	/* Redirects are routine (the enforcer audits the connection itself):
	 * they do not wake the consumer, which drains them with the next
	 * denial or its periodic poll. Denials wake it. */
	bpf_ringbuf_submit(e, kind == AG_EV_REDIRECT || kind == AG_EV_DNS_REDIRECT ? BPF_RB_NO_WAKEUP : 0);
}

/* ---- socket creation: only TCP and UDP over IPv4/IPv6, stamped ---------- */

SEC("cgroup/sock_create")
int ag_sock_create(struct bpf_sock *sk)
{
	struct ag_cgrp_cfg *cc = bpf_get_local_storage(&ag_cgrp, 0);
	__u32 fam = sk->family, type = sk->type, proto = sk->protocol;
	struct ag_sk_state *st;
	__u32 reason = AG_R_NONE, slot = cc ? cc->slot : 0;

	if (fam != AF_INET && fam != AF_INET6)
		reason = AG_R_FAMILY;
	else if (!((type == SOCK_STREAM && proto == IPPROTO_TCP) ||
		   (type == SOCK_DGRAM && proto == IPPROTO_UDP)))
		reason = AG_R_PROTOCOL;
	else if (slot == 0 || slot >= AG_MAX_AGENTS)
		reason = AG_R_NO_AGENT;
	if (reason != AG_R_NONE) {
		count(reason == AG_R_NO_AGENT ? AG_CNT_NO_AGENT : AG_CNT_DENY_SOCK);
		emit(AG_EV_SOCK_DENY, reason, slot, 0, NULL, 0, fam, proto);
		return DENY;
	}

	st = bpf_sk_storage_get(&ag_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		count(AG_CNT_SK_STORAGE_FAIL);
		emit(AG_EV_SOCK_DENY, AG_R_MAP_FAIL, slot, 0, NULL, 0, fam, proto);
		return DENY;
	}
	/* Programs of nested cgroups run innermost first: the innermost agent's
	 * stamp stands, an enclosing agent's copy does not overwrite it. */
	if (st->flags & AG_SK_STAMPED)
		return ALLOW;
	st->slot = slot;
	st->flags = AG_SK_STAMPED;
	st->cgroup_id = bpf_get_current_cgroup_id();
	fill_task(st);
	return ALLOW;
}

/*
 * Attached (BPF_F_ALLOW_OVERRIDE, not a link) to the cgroup that holds the
 * policy cgroups ("agentgate" under the cgroup2 mount). A cgroup with
 * programs of its own runs only those: every attached agent cgroup.
 * One without, under it, runs this instead: a policy cgroup deleted and
 * made again (a new cgroup, no programs) until the enforcer attaches it,
 * the parent itself, and a cgroup left by an agent the policy dropped.
 * None of them may make an inet socket, so nothing made there meanwhile
 * goes out directly (threat model 13c). It stays while no enforcer runs,
 * as the pinned links do; `detach --all` takes it off.
 */
SEC("cgroup/sock_create")
int ag_unattached(struct bpf_sock *sk)
{
	count(AG_CNT_NO_AGENT);
	emit(AG_EV_SOCK_DENY, AG_R_UNATTACHED, 0, 0, NULL, 0, sk->family, sk->protocol);
	return DENY;
}

/* ---- setsockopt: no source routes, no early reuse of a closed port ------- */

/*
 * An IPv4 loose or strict source route (IP_OPTIONS) or an IPv6 routing
 * header (IPV6_RTHDR) sends a redirected connect's SYN to the route's first
 * hop instead of 127.0.0.1: the egress backstop drops it, but the socket
 * waits in SYN-SENT with its entry in the pair map (ag_pairs), never
 * accepted, and one agent making such connects fast could keep the map,
 * shared by every agent, full (review, stop 36). Nothing an agent needs
 * uses them. Refused with EPERM on the agent's sockets of any family.
 */
#define AG_SOL_IP 0
#define AG_IP_OPTIONS 4
#define AG_SOL_IPV6 41
#define AG_IPV6_2292RTHDR 5
#define AG_IPV6_RTHDR 57

/*
 * A gracefully closed socket hands its port to a FIN_WAIT2 time-wait socket,
 * which holds it for tcp_fin_timeout (60 s) or the socket's TCP_LINGER2,
 * while its entry in ag_pairs waits for the enforcer's accept (the close
 * hook leaves it, ag_sock_ops). Once the port is free, a process outside
 * the agent cgroups binding it and dialling the enforcer meets the queued
 * connection (a challenge ACK), kills it with its own reset, and its SYN
 * sent again is queued under the agent's entry (case 12d, review of stop
 * 42). So an agent may not shorten that time: a positive TCP_LINGER2 is
 * refused with EPERM (up to 30 s it is that time; from 61 to 75 s the
 * kernel holds the port 2 * (value - 60) s: tcp_keepalive_timer()); 0 (the
 * host's default) and a negative one (close with a reset: an abort, whose
 * entry goes at once) pass. Nor may the time-wait socket be taken over
 * before it ends: with SO_REUSEADDR or SO_REUSEPORT on the agent's socket
 * (the time-wait socket inherits them), an outside process with the same
 * option could bind the port at once, and its connect from a bound port
 * takes over a time-wait socket with timestamps whatever tcp_tw_reuse says
 * (tcp_twsk_unique()). An agent cannot accept connections, and a client
 * socket needs neither: on agents' TCP sockets both are set to 0 instead
 * (the call succeeds; counted). The value checked is the one the kernel
 * takes: optlen is set to an int's size, so a buffer past a page (which
 * the kernel would read again from the caller: a second thread could
 * change it meanwhile) is not read again.
 */
#define AG_SOL_TCP 6
#define AG_TCP_LINGER2 8
#define AG_SOL_SOCKET 1
#define AG_SO_REUSEADDR 2
#define AG_SO_REUSEPORT 15

SEC("cgroup/setsockopt")
int ag_setsockopt(struct bpf_sockopt *ctx)
{
	int level = ctx->level, name = ctx->optname;
	struct bpf_sock *sk = ctx->sk;
	bool linger2 = level == AG_SOL_TCP && name == AG_TCP_LINGER2;
	bool reuse = level == AG_SOL_SOCKET && (name == AG_SO_REUSEADDR || name == AG_SO_REUSEPORT) &&
		     sk && sk->protocol == IPPROTO_TCP;

	if ((level == AG_SOL_IP && name == AG_IP_OPTIONS) ||
	    (level == AG_SOL_IPV6 && (name == AG_IPV6_RTHDR || name == AG_IPV6_2292RTHDR))) {
		count(AG_CNT_DENY_SOCKOPT);
		return 0;
	}
	if ((linger2 || reuse) && ctx->optlen >= (int)sizeof(int)) {   /* shorter: the kernel's EINVAL */
		int *v = ctx->optval;

		if ((void *)(v + 1) > ctx->optval_end) {
			count(AG_CNT_DENY_SOCKOPT);
			return 0;
		}
		ctx->optlen = sizeof(int);
		if (linger2 && *v > 0) {
			count(AG_CNT_DENY_SOCKOPT);
			return 0;
		}
		if (reuse && *v) {
			*v = 0;
			count(AG_CNT_DENY_SOCKOPT);
		}
		return 1;
	}
	/* past a page the program sees only the first one: 0 hands the
	 * kernel the caller's own buffer (Documentation/bpf/prog_cgroup_sockopt.rst) */
	if (ctx->optlen > 4096)
		ctx->optlen = 0;
	return 1;
}

/* ---- AF_UNIX: connect and sendto only to the agent's unix_sockets -------- */

/*
 * cgroup/connect_unix and cgroup/sendmsg_unix (Linux >= 6.7): the section
 * names are libbpf 1.1's nearest (it knows neither); the loader sets the
 * attach types (BPF_CGROUP_UNIX_CONNECT, _SENDMSG) and loads these two only
 * where the kernel has them. An agent may connect (stream, seqpacket,
 * datagram) or send a datagram only to an address its unix_sockets names,
 * spelled the same: a path is not resolved here (the kernel looks it up
 * after this hook), so "/var/run/x" and "/run/x" are two addresses, a
 * relative path matches nothing, and a symlink matches only under its own
 * name. A datagram sent on a connected socket names no address and was
 * checked at the connect. Refused with EACCES (the error of a socket file
 * the caller may not write); in observe mode let through and reported.
 */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym __weak;
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

#define AG_AF_UNIX 1
#define AG_EACCES 13

/* the value, hidden from the optimiser (libbpf's barrier_var) */
static __always_inline __u64 opaque(__u64 v)
{
	asm volatile("" : "+r"(v));
	return v;
}

static __always_inline int unix_check(struct bpf_sock_addr *ctx, __u8 op)
{
	struct ag_cgrp_cfg *cc = bpf_get_local_storage(&ag_cgrp, 0);
	__u32 slot = cc ? cc->slot : 0, reason = AG_R_NONE, n, len = 0;
	struct bpf_sock_addr_kern *sa;
	struct sockaddr_un *un;
	struct ag_unix_event *e;
	struct ag_agent_cfg *ac;
	struct ag_unix_key k = {};
	bool observe = false;
	int i;

	if (ctx->user_family != AG_AF_UNIX)
		return ALLOW;   /* not ours (the kernel calls this hook for AF_UNIX only) */
	sa = bpf_cast_to_kern_ctx(ctx);
	n = sa->uaddrlen;   /* checked by the kernel: 2 < n <= sizeof(struct sockaddr_un) */
	n = n > 2 ? n - 2 : 0;
	if (n > AG_UNIX_PATH_MAX)
		n = AG_UNIX_PATH_MAX;
	if (slot == 0 || slot >= AG_MAX_AGENTS)
		reason = AG_R_NO_AGENT;
	else if (!(ac = bpf_map_lookup_elem(&ag_agents, &slot)) || !(ac->flags & AG_AF_ACTIVE))
		reason = AG_R_NO_AGENT;
	else
		observe = ac->flags & AG_AF_OBSERVE;
	/* sun_path, from the kernel's copy of the address (a struct
	 * sockaddr_storage): read through BTF, byte by byte at fixed offsets
	 * (a load that faults reads 0), not with bpf_probe_read_kernel(),
	 * which a kernel locked down for confidentiality refuses: the whole
	 * object would then not load */
	un = bpf_rdonly_cast(sa->uaddr, bpf_core_type_id_kernel(struct sockaddr_un));
#pragma unroll
	for (i = 0; i < AG_UNIX_PATH_MAX; i++)
		k.path[i] = un->sun_path[i];
	/* The key: a path up to its first NUL, or every byte of an abstract
	 * name (sun_path[0] == 0), then zeros; len counts the kept bytes.
	 * Computed without a branch on the bytes: a loop that breaks at the
	 * first NUL makes the verifier walk the rest once per place it could
	 * break, half a second of kernel time at every load. keep stays 1
	 * while the bytes are kept; opaque() stops clang turning the
	 * arithmetic back into the compare-and-jump it stands for. */
	{
		__u64 abstract, keep = 1, b, in, nz;

		abstract = 1 - ((opaque((__u8)k.path[0]) + 255) >> 8);
#pragma clang loop unroll(disable)
		for (i = 0; i < AG_UNIX_PATH_MAX; i++) {
			b = (__u8)k.path[i];
			nz = (opaque(b) + 255) >> 8;             /* b != 0 */
			in = (opaque(i) - (__u64)n) >> 63;       /* i < n */
			keep = opaque(keep & in & (nz | abstract));
			k.path[i] = (char)(b * keep);
			len += keep;
		}
	}
	k.slot = slot;
	k.len = len;
	/* A path is looked up in the caller's mount namespace. In a user
	 * namespace of its own an agent may mount over a listed path's
	 * directory (a tmpfs) and put a symlink to any socket there (review):
	 * there, only abstract names are matched. */
	if (reason == AG_R_NONE && len && k.path[0] != 0) {
		struct task_struct *t = bpf_get_current_task_btf();

		if (t->cred->user_ns->level != 0)
			reason = AG_R_UNIX_USERNS;
	}
	if (reason == AG_R_NONE && len && bpf_map_lookup_elem(&ag_unix, &k))
		return ALLOW;
	if (reason == AG_R_NONE)
		reason = AG_R_UNIX_PATH;
	else
		observe = false;   /* no agent, no observing */
	if (!observe)
		count(AG_CNT_DENY_UNIX);
	e = bpf_ringbuf_reserve(&ag_events, sizeof(*e), 0);
	if (e) {
		__u64 pt = bpf_get_current_pid_tgid();

		__builtin_memset(e, 0, sizeof(*e));
		e->h.ts_ns = bpf_ktime_get_boot_ns();
		e->h.cgroup_id = bpf_get_current_cgroup_id();
		e->h.sock_cookie = bpf_get_socket_cookie(ctx);
		e->h.kind = AG_EV_UNIX;
		e->h.reason = reason;
		e->h.slot = slot;
		e->h.tgid = pt >> 32;
		e->h.pid = (__u32)pt;
		e->h.uid = (__u32)bpf_get_current_uid_gid();
		bpf_get_current_comm(e->h.comm, sizeof(e->h.comm));
		e->h.family = AG_AF_UNIX;
		e->len = len;
		e->op = op;
		e->observed = observe;
		e->type = (__u8)ctx->type;
		__builtin_memcpy(e->path, k.path, sizeof(e->path));
		bpf_ringbuf_submit(e, 0);
	} else {
		count(AG_CNT_RB_DROP);
	}
	if (observe)
		return ALLOW;
	if (has_set_retval)
		bpf_set_retval(-AG_EACCES);
	return DENY;
}

SEC("cgroup/connect4")
int ag_connect_unix(struct bpf_sock_addr *ctx)
{
	return unix_check(ctx, AG_UNIX_CONNECT);
}

SEC("cgroup/sendmsg4")
int ag_sendmsg_unix(struct bpf_sock_addr *ctx)
{
	return unix_check(ctx, AG_UNIX_SENDMSG);
}

/* ---- connect: refuse, or remember the destination and redirect ---------- */

/* connect() fails with ECONNREFUSED (where bpf_set_retval exists), a
 * sendmsg() with EPERM: "refused by the peer" means nothing for a datagram. */
static __always_inline int deny_op(struct bpf_sock_addr *ctx, __u32 reason, __u32 slot,
				   const __u8 addr[16], __u16 port, __u8 family, bool is_sendmsg)
{
	count(AG_CNT_DENY_CONNECT);
	emit(AG_EV_DENY, reason, slot, bpf_get_socket_cookie(ctx), addr, port, family,
	     (__u8)ctx->protocol);
	if (has_set_retval && !is_sendmsg)
		bpf_set_retval(-ECONNREFUSED);
	return DENY;
}

static __always_inline bool allowed(__u32 slot, const __u8 addr[16], __u16 port, bool *metadata_ok)
{
	struct ag_allow_key k = {};
	struct ag_allow_val *v;

	k.prefixlen = AG_ALLOW_FIXED_BITS + 128;
	k.slot = slot;
	k.port = port;
	k.proto = IPPROTO_TCP;
	__builtin_memcpy(k.addr, addr, 16);
	v = bpf_map_lookup_elem(&ag_allow, &k);
	if (!v) {
		k.port = 0;
		v = bpf_map_lookup_elem(&ag_allow, &k);
	}
	if (!v)
		return false;
	*metadata_ok = v->flags & AG_ALLOW_METADATA;
	return true;
}

/* Writes the enforcer address into ctx: 127.0.0.1, ::1 or ::ffff:127.0.0.1. */
static __always_inline void rewrite(struct bpf_sock_addr *ctx, bool v6, bool mapped, __u16 port)
{
	/* One store per field straight off ctx: the verifier refuses stores
	 * through a ctx pointer the compiler has offset (as it does when it
	 * merges per-branch stores). */
	__u32 w2 = mapped ? bpf_htonl(0x0000ffff) : 0;
	__u32 w3 = mapped ? bpf_htonl(0x7f000001) : bpf_htonl(1);

	if (!v6) {
		ctx->user_ip4 = bpf_htonl(0x7f000001);
	} else {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = w2;
		ctx->user_ip6[3] = w3;
	}
	ctx->user_port = bpf_htons(port);
}

/*
 * UDP, from connect() or sendmsg(): only DNS, which goes to the agent's DNS
 * listener; the resolver the agent addressed is remembered for recvmsg and
 * getpeername.
 */
static __always_inline int udp_dst(struct bpf_sock_addr *ctx, struct ag_sk_state *st,
				   const struct ag_global *g, const __u8 addr[16], __u16 port,
				   bool v6, bool is_sendmsg)
{
	/* Already pointing at our listener: a second copy of this program (an
	 * enclosing agent cgroup's) sees the first copy's rewrite. */
	if (is_loopback(addr) && port == g->dns_port_base + st->slot && (st->flags & AG_SK_DNS))
		return ALLOW;
	if (port != 53)
		return deny_op(ctx, AG_R_UDP_NOT_DNS, st->slot, addr, port,
				    v6 ? AF_INET6 : AF_INET, is_sendmsg);
	if (st->slot >= g->dns_port_count)
		return deny_op(ctx, AG_R_NO_AGENT, st->slot, addr, port,
				    v6 ? AF_INET6 : AF_INET, is_sendmsg);
	__builtin_memcpy(st->dns_addr, addr, 16);
	st->dns_port = port;
	st->dns_family = v6 ? AF_INET6 : AF_INET;
	st->flags |= AG_SK_DNS;
	count(AG_CNT_DNS_REDIRECT);
	rewrite(ctx, v6, is_v4mapped(addr), g->dns_port_base + st->slot);
	return ALLOW;
}

/*
 * Every agent shares ag_pairs (AG_PAIR_MAX entries), and an entry lives
 * from the SYN until the enforcer accepts: one agent making connects faster
 * than they are accepted (the enforcer stopped, its backlog full, SYNs
 * retried for 30 s) could fill it, and every agent's connects then failed
 * (threat model 14a, a known limit until stop 41). The enforcer gives each agent a
 * share, AG_PAIR_MAX / (agents + 1), so all of them together never fill it
 * and each always finds its own share free. Checked here, before the
 * rewrite, so the agent gets ECONNREFUSED rather than a connection the
 * enforcer must refuse; counted at TCP_CONNECT_CB (ag_sock_ops). Without
 * atomics that return a value (this object is built for BPF v1), connects
 * in flight at once can each pass the check before any is counted: the
 * share is exceeded by at most one per thread between this hook and
 * TCP_CONNECT_CB (which can sleep: it is not one per CPU).
 */
static __always_inline bool over_quota(const struct ag_global *g, __u32 slot)
{
	__s64 *n;

	if (!g->pair_quota)
		return false;
	n = bpf_map_lookup_elem(&ag_pending, &slot);
	return n && *n >= (__s64)g->pair_quota;
}

/* Entry k leaves ag_pairs: its agent's share gets it back, only when this
 * call is the one that removed it. */
static __always_inline void pair_delete(const struct ag_pair_key *k)
{
	struct ag_pair_val *v = bpf_map_lookup_elem(&ag_pairs, k);
	__u32 slot;
	__s64 *n;

	if (!v)
		return;
	slot = v->slot;
	if (bpf_map_delete_elem(&ag_pairs, k))
		return;
	n = bpf_map_lookup_elem(&ag_pending, &slot);
	if (n)
		__sync_fetch_and_add(n, -1);
}

static __always_inline int do_connect(struct bpf_sock_addr *ctx, const __u8 addr[16], __u16 port,
				      bool v6, bool is_sendmsg)
{
	__u32 zero = 0, slot;
	struct ag_global *g = bpf_map_lookup_elem(&ag_global, &zero);
	struct ag_agent_cfg *ac;
	struct ag_sk_state *st;
	__u8 family = v6 ? AF_INET6 : AF_INET;
	bool metadata_ok = false, hit;

	if (!g || g->abi_version != AG_ABI_VERSION || !(g->flags & AG_GF_READY)) {
		count(AG_CNT_CFG_MISSING);
		return deny_op(ctx, AG_R_NO_CONFIG, 0, addr, port, family, is_sendmsg);
	}
	st = bpf_sk_storage_get(&ag_sk, ctx->sk, 0, 0);
	if (!st || !(st->flags & AG_SK_STAMPED)) {
		count(AG_CNT_NO_STAMP);
		return deny_op(ctx, AG_R_NO_STAMP, 0, addr, port, family, is_sendmsg);
	}
	slot = st->slot;
	if (bpf_get_netns_cookie(ctx) != g->netns_cookie)
		return deny_op(ctx, AG_R_NETNS, slot, addr, port, family, is_sendmsg);
	/* A socket bound to a device (SO_BINDTODEVICE) sends what we rewrite
	 * to 127.0.0.1 out of that device, to the gateway or whoever answers
	 * ARP for 127.0.0.1 (review, stop 27). Refused here with a reason;
	 * IP_UNICAST_IF and IP_PKTINFO, which this hook cannot see, meet the
	 * backstop's loopback check. */
	if (ctx->sk->bound_dev_if && ctx->sk->bound_dev_if != AG_LOOPBACK_IFINDEX)
		return deny_op(ctx, AG_R_BOUND_DEVICE, slot, addr, port, family, is_sendmsg);
	if (ctx->type == SOCK_DGRAM)
		return udp_dst(ctx, st, g, addr, port, v6, is_sendmsg);
	if (is_sendmsg || ctx->type != SOCK_STREAM)
		return deny_op(ctx, AG_R_PROTOCOL, slot, addr, port, family, is_sendmsg);

	ac = bpf_map_lookup_elem(&ag_agents, &slot);
	if (!ac || !(ac->flags & AG_AF_ACTIVE)) {
		count(AG_CNT_NO_AGENT);
		return deny_op(ctx, AG_R_NO_AGENT, slot, addr, port, family, is_sendmsg);
	}

	/* A second copy of this program (it must never happen, but if it does)
	 * sees our rewrite: keep the destination the first copy saved. */
	if ((st->flags & AG_SK_REDIRECTED) && is_loopback(addr) && port == g->tcp_port) {
		/* also a socket redirected before, disconnected (connect with
		 * AF_UNSPEC: its entry given back) and connected to the
		 * listener itself: it gets an entry too (review, stop 41) */
		if (over_quota(g, slot)) {
			count(AG_CNT_PAIR_QUOTA);
			return deny_op(ctx, AG_R_PAIR_QUOTA, slot, addr, port, family, is_sendmsg);
		}
		return ALLOW;
	}

	hit = allowed(slot, addr, port, &metadata_ok);
	if (is_metadata(addr) && !metadata_ok)
		return deny_op(ctx, AG_R_METADATA, slot, addr, port, family, is_sendmsg);
	if (!hit && !(ac->flags & AG_AF_OBSERVE))
		return deny_op(ctx, AG_R_NOT_ALLOWED, slot, addr, port, family, is_sendmsg);
	if (over_quota(g, slot)) {
		count(AG_CNT_PAIR_QUOTA);
		return deny_op(ctx, AG_R_PAIR_QUOTA, slot, addr, port, family, is_sendmsg);
	}

	__builtin_memcpy(st->orig_addr, addr, 16);
	st->orig_port = port;
	st->orig_family = family;
	st->flags |= AG_SK_REDIRECTED;
	fill_task(st);
	rewrite(ctx, v6, is_v4mapped(addr), g->tcp_port);
	count(AG_CNT_REDIRECT);
	emit(AG_EV_REDIRECT, AG_R_NONE, slot, bpf_get_socket_cookie(ctx), addr, port, family,
	     IPPROTO_TCP);
	return ALLOW;
}

static __always_inline void ctx_addr6(struct bpf_sock_addr *ctx, __u8 a[16])
{
	__u32 w[4];

	w[0] = ctx->user_ip6[0];
	w[1] = ctx->user_ip6[1];
	w[2] = ctx->user_ip6[2];
	w[3] = ctx->user_ip6[3];
	__builtin_memcpy(a, w, 16);
}

static __always_inline __u16 ctx_port(struct bpf_sock_addr *ctx)
{
	return bpf_ntohs((__u16)ctx->user_port);
}

SEC("cgroup/connect4")
int ag_connect4(struct bpf_sock_addr *ctx)
{
	__u8 a[16];

	map_v4(a, ctx->user_ip4);
	return do_connect(ctx, a, ctx_port(ctx), false, false);
}

SEC("cgroup/connect6")
int ag_connect6(struct bpf_sock_addr *ctx)
{
	__u8 a[16];

	ctx_addr6(ctx, a);
	return do_connect(ctx, a, ctx_port(ctx), true, false);
}

SEC("cgroup/sendmsg4")
int ag_sendmsg4(struct bpf_sock_addr *ctx)
{
	__u8 a[16];

	map_v4(a, ctx->user_ip4);
	return do_connect(ctx, a, ctx_port(ctx), false, true);
}

SEC("cgroup/sendmsg6")
int ag_sendmsg6(struct bpf_sock_addr *ctx)
{
	__u8 a[16];

	ctx_addr6(ctx, a);
	return do_connect(ctx, a, ctx_port(ctx), true, true);
}

/* ---- the agent sees the peer it dialled ------------------------------- */

static __always_inline void set_addr(struct bpf_sock_addr *ctx, const __u8 a[16], __u16 port, bool v6)
{
	__u32 w[4];

	__builtin_memcpy(w, a, 16);
	if (v6) {
		ctx->user_ip6[0] = w[0];
		ctx->user_ip6[1] = w[1];
		ctx->user_ip6[2] = w[2];
		ctx->user_ip6[3] = w[3];
	} else {
		ctx->user_ip4 = w[3];
	}
	ctx->user_port = bpf_htons(port);
}

static __always_inline int peer(struct bpf_sock_addr *ctx, bool v6)
{
	struct ag_sk_state *st = bpf_sk_storage_get(&ag_sk, ctx->sk, 0, 0);

	if (!st)
		return ALLOW;
	if (st->flags & AG_SK_REDIRECTED)
		set_addr(ctx, st->orig_addr, st->orig_port, v6);
	else if (st->flags & AG_SK_DNS)
		set_addr(ctx, st->dns_addr, st->dns_port, v6);
	return ALLOW;
}

SEC("cgroup/getpeername4")
int ag_getpeername4(struct bpf_sock_addr *ctx)
{
	return peer(ctx, false);
}

SEC("cgroup/getpeername6")
int ag_getpeername6(struct bpf_sock_addr *ctx)
{
	return peer(ctx, true);
}

/* DNS replies appear to come from the resolver the agent addressed. */
static __always_inline int recv(struct bpf_sock_addr *ctx, bool v6)
{
	__u32 zero = 0;
	struct ag_global *g = bpf_map_lookup_elem(&ag_global, &zero);
	struct ag_sk_state *st = bpf_sk_storage_get(&ag_sk, ctx->sk, 0, 0);
	__u8 a[16];

	if (!g || !st || !(st->flags & AG_SK_DNS))
		return ALLOW;
	if (v6)
		ctx_addr6(ctx, a);
	else
		map_v4(a, ctx->user_ip4);
	if (is_loopback(a) && ctx_port(ctx) == g->dns_port_base + st->slot)
		set_addr(ctx, st->dns_addr, st->dns_port, v6);
	return ALLOW;
}

SEC("cgroup/recvmsg4")
int ag_recvmsg4(struct bpf_sock_addr *ctx)
{
	return recv(ctx, false);
}

SEC("cgroup/recvmsg6")
int ag_recvmsg6(struct bpf_sock_addr *ctx)
{
	return recv(ctx, true);
}

/* ---- an agent may not squat the enforcer's ports ---------------------- */

static __always_inline int bind_check(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct ag_global *g = bpf_map_lookup_elem(&ag_global, &zero);
	__u16 port = ctx_port(ctx);

	if (!g) {
		count(AG_CNT_CFG_MISSING);
		return DENY;
	}
	if (port != 0 && (port == g->tcp_port ||
			  (port >= g->dns_port_base && port < g->dns_port_base + g->dns_port_count))) {
		count(AG_CNT_DENY_BIND);
		emit(AG_EV_BIND_DENY, AG_R_RESERVED_PORT, 0, bpf_get_socket_cookie(ctx), NULL,
		     port, (__u8)ctx->family, (__u8)ctx->protocol);
		return DENY;
	}
	return ALLOW;
}

SEC("cgroup/bind4")
int ag_bind4(struct bpf_sock_addr *ctx)
{
	return bind_check(ctx);
}

SEC("cgroup/bind6")
int ag_bind6(struct bpf_sock_addr *ctx)
{
	return bind_check(ctx);
}

/* ---- backstop: an agent's packets go to the enforcer and nowhere else ---
 *
 * The connect hooks redirect what an agent dials; these catch what they
 * cannot see: connections opened before the cgroup was attached, inbound
 * connections to listeners an agent opened, and anything else that would
 * leave or reach an agent socket without passing the enforcer. Only TCP to
 * or from the enforcer's listener port and UDP to or from the agent DNS
 * ports on loopback pass. Headers that cannot be parsed are dropped.
 * Sockets created outside the cgroup (fd passing) carry their own cgroup and
 * are not covered: a known limit.
 */
#define ETH_P_IP   0x0800
#define ETH_P_IPV6 0x86DD

static __always_inline bool enforcer_port(const struct ag_global *g, __u8 proto, __u16 port)
{
	if (proto == IPPROTO_TCP)
		return port == g->tcp_port;
	if (proto == IPPROTO_UDP)
		return port >= g->dns_port_base && port < g->dns_port_base + g->dns_port_count;
	return false;
}

static __always_inline int backstop(struct __sk_buff *skb, bool egress)
{
	__u32 zero = 0;
	struct ag_global *g = bpf_map_lookup_elem(&ag_global, &zero);
	__u8 proto, peer_lo;
	__u16 ports[2];
	__u32 off;

	if (!g)
		goto drop;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			goto drop;
		if (ip.frag_off & bpf_htons(0x3fff))   /* fragments: no ports to check */
			goto drop;
		proto = ip.protocol;
		off = ip.ihl * 4;
		/* the enforcer's 127.0.0.1, the peer's side (not all of 127/8:
		 * another loopback address at our port is somebody else) */
		peer_lo = (egress ? bpf_ntohl(ip.daddr) : bpf_ntohl(ip.saddr)) == 0x7f000001;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		__u32 w[4];

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			goto drop;
		proto = ip6.nexthdr;   /* extension headers: dropped below */
		off = sizeof(ip6);
		__builtin_memcpy(w, egress ? &ip6.daddr : &ip6.saddr, 16);
		peer_lo = w[0] == 0 && w[1] == 0 && w[2] == 0 && w[3] == bpf_htonl(1);
	} else {
		goto drop;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		goto drop;
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)))
		goto drop;
	/* ports[0] source, ports[1] destination; the peer's port matters; and
	 * the device: a packet for 127.0.0.1 leaving by another one (a socket
	 * bound to eth0, IP_UNICAST_IF, IP_PKTINFO) goes to the gateway */
	if (peer_lo && enforcer_port(g, proto, bpf_ntohs(egress ? ports[1] : ports[0])) &&
	    skb->ifindex == AG_LOOPBACK_IFINDEX)
		return 1;
drop:
	count(egress ? AG_CNT_SKB_EGRESS_DROP : AG_CNT_SKB_INGRESS_DROP);
	return 0;
}

SEC("cgroup_skb/egress")
int ag_skb_egress(struct __sk_buff *skb)
{
	return backstop(skb, true);
}

SEC("cgroup_skb/ingress")
int ag_skb_ingress(struct __sk_buff *skb)
{
	return backstop(skb, false);
}

/* ---- sock_ops: hand the enforcer what it needs to know at accept() ----- */

/* The pair key of this socket: its own address and port, the listener's. */
static __always_inline void pair_key(struct bpf_sock_ops *ops, struct ag_pair_key *k)
{
	k->netns_cookie = bpf_get_netns_cookie(ops);
	if (ops->family == AF_INET) {
		map_v4(k->client_addr, ops->local_ip4);
		map_v4(k->listen_addr, ops->remote_ip4);
	} else {
		__u32 w[4];

		w[0] = ops->local_ip6[0];
		w[1] = ops->local_ip6[1];
		w[2] = ops->local_ip6[2];
		w[3] = ops->local_ip6[3];
		__builtin_memcpy(k->client_addr, w, 16);
		w[0] = ops->remote_ip6[0];
		w[1] = ops->remote_ip6[1];
		w[2] = ops->remote_ip6[2];
		w[3] = ops->remote_ip6[3];
		__builtin_memcpy(k->listen_addr, w, 16);
	}
	k->client_port = (__u16)ops->local_port;
	k->listen_port = (__u16)(bpf_ntohl(ops->remote_port) & 0xffff);
}

/*
 * The enforcer's ports belong to the enforcer. Its listeners are ordinary
 * sockets on 127.0.0.1 and ::1, and while it is down (a restart, a crash,
 * SIGTERM's last seconds) any local user could bind the same ports and be
 * handed every agent's redirected connections, credentials included; even
 * while it runs, a UDP socket with SO_REUSEADDR can take datagrams from
 * another. This program, on the host's network namespace, runs at each
 * socket lookup the kernel makes for a new TCP connection or an unconnected
 * UDP datagram: one addressed to an enforcer port on loopback goes to the
 * enforcer's own socket (ag_listen, which the enforcer fills and the kernel
 * empties as those sockets close), or nowhere (TCP answers with a reset:
 * the agent sees ECONNREFUSED, as before). Anything else is untouched.
 */
SEC("sk_lookup")
int ag_guard(struct bpf_sk_lookup *ctx)
{
	__u32 zero = 0, key, port = ctx->local_port;
	struct ag_global *g = bpf_map_lookup_elem(&ag_global, &zero);
	bool v6 = ctx->family == AF_INET6;
	struct bpf_sock *sk;
	long err;

	if (!g || !(g->flags & AG_GF_GUARD))
		return SK_PASS;
	if (v6 ? !(ctx->local_ip6[0] == 0 && ctx->local_ip6[1] == 0 && ctx->local_ip6[2] == 0 &&
		   ctx->local_ip6[3] == bpf_htonl(1))
	       : ctx->local_ip4 != bpf_htonl(0x7f000001))
		return SK_PASS;
	if (ctx->protocol == IPPROTO_TCP && port == g->tcp_port)
		key = v6 ? AG_LISTEN_TCP6 : AG_LISTEN_TCP4;
	else if (ctx->protocol == IPPROTO_UDP && port >= g->dns_port_base &&
		 port < (__u32)g->dns_port_base + g->dns_port_count && port - g->dns_port_base < AG_MAX_AGENTS)
		key = AG_LISTEN_DNS + 2 * (port - g->dns_port_base) + v6;
	else
		return SK_PASS;
	sk = bpf_map_lookup_elem(&ag_listen, &key);
	if (!sk) {
		count(AG_CNT_GUARD_DROP);
		return SK_DROP;
	}
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		count(AG_CNT_GUARD_DROP);
		return SK_DROP;
	}
	return SK_PASS;
}

/*
 * And only the enforcer may bind them: attached to the root of the cgroup
 * tree, so every process on the host runs it, at bind(). A port of the
 * enforcer's on 127.0.0.1, ::1 or a wildcard address (what could receive
 * what is sent to 127.0.0.1 or ::1) is refused (EPERM) to every process but the
 * enforcer's (ag_owner), whether or not an enforcer runs: otherwise, while
 * none ran, another user's UDP socket bound to an agent's DNS port and
 * connected to the agent's source port got its queries (a connected socket
 * is found before ag_guard runs), and a TCP one made the next start fail.
 * Other addresses at those ports (a service on 10.0.0.5:15001 or
 * 127.0.0.2:15001) are left be.
 */
static __always_inline int bind_guard(struct bpf_sock_addr *ctx, bool v6)
{
	__u32 zero = 0, port = bpf_ntohs(ctx->user_port), *owner;
	struct ag_global *g = bpf_map_lookup_elem(&ag_global, &zero);
	bool here;

	if (!g || !(g->flags & AG_GF_GUARD) || port == 0)
		return ALLOW;
	if (port != g->tcp_port && !(port >= g->dns_port_base && port < (__u32)g->dns_port_base + g->dns_port_count))
		return ALLOW;
	if (v6) {
		__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1], a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];

		here = a0 == 0 && a1 == 0 &&
		       ((a2 == 0 && (a3 == 0 || a3 == bpf_htonl(1))) ||             /* ::, ::1 */
			(a2 == bpf_htonl(0xffff) && (a3 == 0 || a3 == bpf_htonl(0x7f000001))));
	} else {
		__u32 a = bpf_ntohl(ctx->user_ip4);

		here = a == 0 || a == 0x7f000001;
	}
	if (!here)
		return ALLOW;
	owner = bpf_map_lookup_elem(&ag_owner, &zero);
	if (owner && *owner && *owner == (__u32)(bpf_get_current_pid_tgid() >> 32)) {
		struct task_struct *task = bpf_get_current_task_btf();
		__u64 *start = bpf_map_lookup_elem(&ag_owner_start, &zero);
		__u64 st = task->group_leader->start_time;

		/* The enforcer binds its listeners right after it names
		 * itself owner (enforcer.c), so the first bind under that PID
		 * is its own: it takes the start time, and a later process
		 * with the same PID (pid_max wrapped after a crash) has
		 * another. A clean stop clears the owner. */
		if (start && st && (*start == 0 || *start == st)) {
			*start = st;
			return ALLOW;
		}
	}
	count(AG_CNT_DENY_BIND);
	return DENY;
}

SEC("cgroup/bind4")
int ag_bind_guard4(struct bpf_sock_addr *ctx)
{
	return bind_guard(ctx, false);
}

SEC("cgroup/bind6")
int ag_bind_guard6(struct bpf_sock_addr *ctx)
{
	return bind_guard(ctx, true);
}

/* A socket leaving FIN_WAIT1, FIN_WAIT2, CLOSING or LAST_ACK for CLOSE: an
 * abort (a reset sent or received, close() with SO_LINGER 0 or unread data,
 * connect(AF_UNSPEC), SOCK_DESTROY), which leaves it in the established hash
 * until tcp_set_state() (after this callback), or its hand-over to a
 * time-wait socket (a graceful close), which tcp_time_wait() unhashed
 * before tcp_done(). Not knowing counts as an abort: the entry goes, and a
 * connection still queued is refused (fail closed). */
static __always_inline bool closed_abortively(struct bpf_sock_ops *ops)
{
	struct bpf_sock *sk = ops->sk;
	struct tcp_sock *tp;

	if (!sk)
		return true;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return true;
	return tp->inet_conn.icsk_inet.sk.__sk_common.skc_nulls_node.pprev != NULL;
}

SEC("sockops")
int ag_sock_ops(struct bpf_sock_ops *ops)
{
	struct ag_pair_key k = {};
	struct ag_pair_val v = {};
	struct ag_sk_state *st;
	struct bpf_sock *sk;
	__u32 slot;
	__s64 *n;

	/*
	 * A redirected socket that closes takes its entry with it. The enforcer
	 * takes (deletes) the entry when it accepts; one never accepted (a
	 * reset: the enforcer down, its backlog full) stayed until the 30 s
	 * sweep, filling the map every agent shares, and a process outside the
	 * agents' cgroups that bound the same source port and dialled the
	 * enforcer was taken for the agent (review, stop 27). Only an abortive
	 * end counts (from SYN_SENT: refused, timed out; from ESTABLISHED: a
	 * reset): a socket closed gracefully right after its connect (send,
	 * close) becomes a FIN_WAIT2 mini-socket at once, and its connection,
	 * in the enforcer's accept queue, is still served with its entry. A
	 * socket half-closed first (shutdown: FIN_WAIT2) and then aborted left
	 * its entry, and with its port free an outside process was taken for
	 * the agent again (review, stop 42): from the closing states, an abort
	 * is told from that hand-over (closed_abortively()). At CLOSE the
	 * addresses and ports are still the socket's: the callback runs before
	 * tcp_set_state() unhashes it.
	 */
	if (ops->op == BPF_SOCK_OPS_STATE_CB) {
		__u32 from = ops->args[0];

		if (ops->args[1] == BPF_TCP_CLOSE &&
		    (from == BPF_TCP_SYN_SENT || from == BPF_TCP_ESTABLISHED ||
		     ((from == BPF_TCP_FIN_WAIT1 || from == BPF_TCP_FIN_WAIT2 || from == BPF_TCP_CLOSING ||
		       from == BPF_TCP_LAST_ACK || from == BPF_TCP_CLOSE_WAIT) && closed_abortively(ops)))) {
			pair_key(ops, &k);
			pair_delete(&k);
		}
		return 1;
	}
	if (ops->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	sk = ops->sk;
	if (!sk)
		return 1;
	st = bpf_sk_storage_get(&ag_sk, sk, 0, 0);
	if (!st || !(st->flags & AG_SK_REDIRECTED))
		return 1;

	pair_key(ops, &k);

	__builtin_memcpy(v.orig_addr, st->orig_addr, 16);
	v.orig_port = st->orig_port;
	v.orig_family = st->orig_family;
	v.proto = IPPROTO_TCP;
	v.slot = slot = st->slot;
	v.tgid = st->tgid;
	v.pid = st->pid;
	v.uid = st->uid;
	v.cgroup_id = st->cgroup_id;
	v.sock_cookie = bpf_get_socket_cookie(ops);
	v.ts_ns = bpf_ktime_get_boot_ns();
	__builtin_memcpy(v.comm, st->comm, sizeof(v.comm));
	/* An entry left with this very key (its socket gone without
	 * taking it) is replaced, and its agent's share given back. */
	if (bpf_map_update_elem(&ag_pairs, &k, &v, BPF_NOEXIST)) {
		pair_delete(&k);
		if (bpf_map_update_elem(&ag_pairs, &k, &v, BPF_NOEXIST)) {
			/* the enforcer finds no entry and refuses: fail closed */
			count(AG_CNT_PAIR_FAIL);
			return 1;
		}
	}
	n = bpf_map_lookup_elem(&ag_pending, &slot);
	if (n)
		__sync_fetch_and_add(n, 1);
	bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
