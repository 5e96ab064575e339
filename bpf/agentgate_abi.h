/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The kernel/user contract of agentgate: every map key and value, event and
 * counter that crosses the boundary is defined here and only here. Included by
 * bpf/agentgate.bpf.c (with vmlinux.h) and by userspace (with <linux/types.h>).
 *
 * Rules: fixed-width __u types only, explicit padding, pinned enum values.
 * Bump AG_ABI_VERSION whenever a layout or a meaning changes: pins live under
 * <bpffs>/agentgate/v<AG_ABI_VERSION>/, so an enforcer never reuses maps of
 * another layout.
 *
 * Addresses are always 16 bytes; IPv4 is stored IPv4-mapped (::ffff:a.b.c.d),
 * so one code path and one policy entry cover AF_INET and v4-mapped AF_INET6.
 * Ports are in host byte order everywhere in this header.
 */
#ifndef AGENTGATE_ABI_H
#define AGENTGATE_ABI_H

#ifndef __VMLINUX_H__
#include <linux/types.h>   /* userspace and balance.bpf.c; agentgate.bpf.c has vmlinux.h */
#endif

#define AG_ABI_VERSION 1

#define AG_MAX_AGENTS   256     /* slots; slot 0 means "no agent" and is denied */
#define AG_PAIR_MAX     65536   /* concurrent connects awaiting accept() */
#define AG_PAIR_MAX_AGE_S 30    /* an older ag_pairs entry is refused and swept (enforcer.c pair_max_age_ns()) */
#define AG_ALLOW_MAX    16384   /* kernel allow-set entries, all agents */
#define AG_RINGBUF_DEFAULT (1u << 20)
#define AG_COMM_LEN     16
#define AG_BAL_MAX      64      /* worker threads balance.bpf.c can choose among (MAX_WORKERS) */
#define AG_BAL_CPUS     1024    /* CPUs balance.bpf.c knows a pinned worker of */
/* Map ag_listen (SOCKMAP): the enforcer's own sockets, which alone may get
 * what is sent to its loopback ports (ag_guard). */
#define AG_LISTEN_TCP4  0
#define AG_LISTEN_TCP6  1
#define AG_LISTEN_DNS   2       /* + 2 * slot (IPv4), + 2 * slot + 1 (IPv6) */
#define AG_LISTEN_MAX   (AG_LISTEN_DNS + 2 * AG_MAX_AGENTS)
/* Map ag_owner: ARRAY, one __u32: the enforcer's process id, the one
 * process ag_bind_guard4/6 let bind the enforcer's ports. */

/* Per-CPU counters (map ag_counters, PERCPU_ARRAY of __u64). */
enum ag_counter {
	AG_CNT_RB_DROP          = 0,  /* bpf_ringbuf_reserve failed: event lost */
	AG_CNT_PAIR_FAIL        = 1,  /* pair map update failed: connect denied */
	AG_CNT_SK_STORAGE_FAIL  = 2,  /* sk storage could not be created: denied */
	AG_CNT_NO_STAMP         = 3,  /* socket without identity stamp: denied */
	AG_CNT_NO_AGENT         = 4,  /* cgroup without agent slot: denied */
	AG_CNT_REDIRECT         = 5,  /* TCP connects redirected */
	AG_CNT_DNS_REDIRECT     = 6,  /* UDP datagrams/connects to :53 redirected */
	AG_CNT_DENY_CONNECT     = 7,  /* connects/sendmsgs denied */
	AG_CNT_DENY_SOCK        = 8,  /* socket() refused (family/protocol) */
	AG_CNT_DENY_BIND        = 9,  /* bind() to an enforcer port refused */
	AG_CNT_CFG_MISSING      = 10, /* ag_global not written yet: denied */
	AG_CNT_SKB_EGRESS_DROP  = 11, /* backstop: packets to anything but the enforcer dropped */
	AG_CNT_SKB_INGRESS_DROP = 12, /* backstop: packets from anything but the enforcer dropped */
	AG_CNT_GUARD_DROP       = 13, /* sk_lookup: a connection or datagram to an enforcer port with no enforcer socket */
	AG_CNT_DENY_SOCKOPT     = 14, /* setsockopt(): a source route or TCP_LINGER2 refused, SO_REUSEADDR/PORT on TCP set to 0 */
	AG_CNT_PAIR_QUOTA       = 15, /* connect refused: the agent holds its share of ag_pairs */
	AG_CNT_DENY_UNIX        = 16, /* AF_UNIX connect/sendmsg to an address not in the agent's unix_sockets */
	AG_CNT__MAX             = 17,
};

/* Ring buffer event kinds and reasons (struct ag_event). */
enum ag_ev_kind {
	AG_EV_REDIRECT     = 1,
	AG_EV_DENY         = 2,
	AG_EV_DNS_REDIRECT = 3,
	AG_EV_SOCK_DENY    = 4,
	AG_EV_BIND_DENY    = 5,
	AG_EV_UNIX         = 6,   /* struct ag_unix_event: refused, or would be (observe) */
};

enum ag_reason {
	AG_R_NONE         = 0,
	AG_R_NO_STAMP     = 1,  /* socket created outside an agent cgroup's hooks */
	AG_R_NOT_ALLOWED  = 2,  /* destination not in the agent's allow set */
	AG_R_METADATA     = 3,  /* cloud metadata address not named by a target */
	AG_R_UDP_NOT_DNS  = 4,  /* UDP to anything but port 53 */
	AG_R_FAMILY       = 5,  /* address family other than AF_INET/AF_INET6 */
	AG_R_PROTOCOL     = 6,  /* raw, ICMP, MPTCP, SCTP, UDPLITE ... */
	AG_R_MAP_FAIL     = 7,  /* a map operation failed */
	AG_R_RESERVED_PORT= 8,  /* bind to an enforcer port */
	AG_R_NO_AGENT     = 9,  /* cgroup has no agent slot configured */
	AG_R_NETNS        = 10, /* network namespace not served by the enforcer */
	AG_R_NO_CONFIG    = 11, /* enforcer never configured the kernel side */
	AG_R_BOUND_DEVICE = 12, /* socket bound to a device other than loopback */
	AG_R_PAIR_QUOTA   = 13, /* the agent holds its share of ag_pairs */
	AG_R_UNATTACHED   = 14, /* a cgroup under the agents' parent without programs (ag_unattached) */
	AG_R_UNIX_PATH    = 15, /* AF_UNIX address not in the agent's unix_sockets */
	AG_R_UNIX_USERNS  = 16, /* AF_UNIX path from a task in a user namespace of its own */
};

/* The loopback device's ifindex, the same in every network namespace: the
 * enforcer's 127.0.0.1 is reached only through it. */
#define AG_LOOPBACK_IFINDEX 1

/* ag_agent_cfg.flags */
#define AG_AF_ACTIVE   (1u << 0)  /* slot in use */
#define AG_AF_OBSERVE  (1u << 1)  /* redirect every TCP destination; the enforcer decides */

/* ag_global.flags */
#define AG_GF_READY    (1u << 0)
#define AG_GF_GUARD    (1u << 1)  /* ag_guard and ag_bind_guard4/6 act (set once their links are up) */

/* Map ag_global: ARRAY, one entry, written by the enforcer. */
struct ag_global {
	__u32 abi_version;
	__u32 flags;
	__u16 tcp_port;        /* the enforcer's TCP listener (127.0.0.1, ::1) */
	__u16 dns_port_base;   /* agent slot s has its DNS listener at base + s */
	__u16 dns_port_count;  /* ports [base, base+count) are reserved */
	__u16 pair_quota;      /* ag_pairs entries one agent may hold (ag_pending); 0: no limit */
	__u64 netns_cookie;    /* network namespace the listeners live in */
};

/* Map ag_cgrp: CGROUP_STORAGE keyed by struct bpf_cgroup_storage_key
 * {cgroup inode, BPF_CGROUP_INET_SOCK_CREATE}; zero (slot 0) until written. */
struct ag_cgrp_cfg {
	__u32 slot;
	__u32 epoch;
};

/* Map ag_agents: ARRAY[AG_MAX_AGENTS], indexed by slot. */
struct ag_agent_cfg {
	__u32 flags;
	__u32 epoch;
};

/*
 * Map ag_allow: LPM_TRIE. All of slot, port, proto and pad always lie inside
 * the prefix: prefixlen = AG_ALLOW_FIXED_BITS + address bits (IPv4 /n is
 * 96 + n on the mapped form). port 0 matches any port (second lookup).
 */
#define AG_ALLOW_FIXED_BITS 64
struct ag_allow_key {
	__u32 prefixlen;
	__u32 slot;
	__u16 port;
	__u8  proto;          /* IPPROTO_TCP */
	__u8  pad;
	__u8  addr[16];
};

#define AG_ALLOW_METADATA (1u << 0) /* entry names a cloud metadata address */
struct ag_allow_val {
	__u32 target_id;
	__u32 flags;
};

/* Map ag_sk: SK_STORAGE, stamped at sock_create, completed at connect. */
#define AG_SK_STAMPED    (1u << 0)
#define AG_SK_REDIRECTED (1u << 1)  /* TCP/UDP connect rewritten to the enforcer */
#define AG_SK_DNS        (1u << 2)  /* DNS datagrams redirected; dns_* valid */
struct ag_sk_state {
	__u32 slot;
	__u32 flags;
	__u64 cgroup_id;      /* creating task's cgroup at socket() */
	__u32 tgid;
	__u32 pid;
	__u32 uid;
	__u32 pad0;
	char  comm[AG_COMM_LEN];
	__u8  orig_addr[16];
	__u16 orig_port;
	__u8  orig_family;    /* AF_INET or AF_INET6, as the agent dialled */
	__u8  pad1[5];
	__u8  dns_addr[16];   /* resolver the agent addressed (for recvmsg) */
	__u16 dns_port;
	__u8  dns_family;
	__u8  pad2[5];
};

/*
 * Map ag_pairs: HASH, written by sock_ops at TCP_CONNECT_CB, looked up and
 * deleted by the enforcer after accept(). The netns cookie is part of the key
 * so listeners in agent network namespaces can be added without a new ABI.
 */
struct ag_pair_key {
	__u64 netns_cookie;
	__u8  client_addr[16];
	__u8  listen_addr[16];
	__u16 client_port;
	__u16 listen_port;
	__u32 pad;
};

struct ag_pair_val {
	__u8  orig_addr[16];
	__u16 orig_port;
	__u8  orig_family;
	__u8  proto;
	__u32 slot;
	__u32 tgid;
	__u32 pid;
	__u32 uid;
	__u32 pad0;
	__u64 cgroup_id;
	__u64 sock_cookie;
	__u64 ts_ns;
	char  comm[AG_COMM_LEN];
};

/*
 * Map ag_pending: ARRAY[AG_MAX_AGENTS] of __s64, mmapable, indexed by slot:
 * how many ag_pairs entries the agent holds. Whoever deletes an entry (the
 * enforcer taking it at accept or sweeping it, sock_ops at an abortive
 * close) and succeeds subtracts one from the entry's slot; sock_ops adds
 * one for each entry it inserts. The enforcer zeroes it at start, after
 * removing every entry. Signed: a connect made while an enforcer restarts
 * (the previous run's programs, which do not count, still attached) can
 * leave a count below the truth, which the periodic sweep puts back to 0
 * when negative; one above it needs the enforcer killed between taking an
 * entry and subtracting, and lasts until the next start.
 */

/* Map ag_events: RINGBUF. */
struct ag_event {
	__u64 ts_ns;
	__u64 cgroup_id;
	__u64 sock_cookie;
	__u32 kind;           /* enum ag_ev_kind */
	__u32 reason;         /* enum ag_reason */
	__u32 slot;
	__u32 tgid;
	__u32 pid;
	__u32 uid;
	char  comm[AG_COMM_LEN];
	__u8  addr[16];
	__u16 port;
	__u8  family;
	__u8  proto;
	__u32 pad0;
};

/*
 * Map ag_unix: HASH, the AF_UNIX addresses each agent may connect or send
 * to (agents[].unix_sockets), matched exactly: a path as the agent spells
 * it (up to its first NUL, as the kernel reads it), or an abstract name
 * (path[0] == 0, then its bytes; len counts the leading 0). Unused bytes of
 * path are 0.
 */
#define AG_UNIX_PATH_MAX 108   /* sizeof(sun_path) */
#define AG_UNIX_MAX      4096  /* entries, all agents */
struct ag_unix_key {
	__u32 slot;
	__u32 len;
	char  path[AG_UNIX_PATH_MAX];
};

/* ag_unix_event.op */
#define AG_UNIX_CONNECT 1
#define AG_UNIX_SENDMSG 2
/* An ag_event (kind AG_EV_UNIX, addr and port unused) and the address. */
struct ag_unix_event {
	struct ag_event h;
	__u32 len;            /* bytes of path used (abstract: with the leading 0) */
	__u8  op;             /* AG_UNIX_CONNECT / AG_UNIX_SENDMSG */
	__u8  observed;       /* observe mode: let through, would be refused */
	__u8  type;           /* SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET */
	__u8  pad;
	char  path[AG_UNIX_PATH_MAX];
	__u32 pad1;
};

#ifndef __VMLINUX_H__
/* Userspace twins of the BPF layouts: a size change without an ABI bump fails the build. */
_Static_assert(sizeof(struct ag_global) == 24, "ag_global layout");
_Static_assert(sizeof(struct ag_cgrp_cfg) == 8, "ag_cgrp_cfg layout");
_Static_assert(sizeof(struct ag_agent_cfg) == 8, "ag_agent_cfg layout");
_Static_assert(sizeof(struct ag_allow_key) == 28, "ag_allow_key layout");
_Static_assert(sizeof(struct ag_allow_val) == 8, "ag_allow_val layout");
_Static_assert(sizeof(struct ag_sk_state) == 96, "ag_sk_state layout");
_Static_assert(sizeof(struct ag_pair_key) == 48, "ag_pair_key layout");
_Static_assert(sizeof(struct ag_pair_val) == 80, "ag_pair_val layout");
_Static_assert(sizeof(struct ag_event) == 88, "ag_event layout");
_Static_assert(sizeof(struct ag_unix_key) == 116, "ag_unix_key layout");
_Static_assert(sizeof(struct ag_unix_event) == 208, "ag_unix_event layout");
#endif

#endif /* AGENTGATE_ABI_H */
