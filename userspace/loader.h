/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loader: the only libbpf-heavy code. Loads the skeleton with every map
 * pinned (and reused when a pin exists) under <bpffs>/agentgate/v<ABI>/maps,
 * attaches the programs to agent cgroups through bpf_links pinned under
 * <bpffs>/agentgate/v<ABI>/links/<agent>/<cgroup-id>/<program>, and updates
 * maps. An existing pinned link is updated in place
 * (bpf_link__update_program), never attached twice.
 */
#ifndef AGENTGATE_LOADER_H
#define AGENTGATE_LOADER_H

#include <stdbool.h>
#include <stdint.h>
#include "agentgate_abi.h"

struct loader;
struct ring_buffer;

struct loader_features {
	bool set_retval;        /* bpf_set_retval: denials are ECONNREFUSED (else EPERM) */
	bool connect_unix;      /* cgroup/connect_unix attach type exists (>= 6.7) */
	bool lsm;               /* BPF LSM programs load */
};

/* Pin root for this ABI: "<bpffs>/agentgate/v<N>" into out. Mounts bpffs if needed. */
int loader_pin_root(char *out, size_t outlen);

/* Loads programs; maps reuse existing pins. ringbuf_bytes 0 = default. */
int loader_open(struct loader **out, uint32_t ringbuf_bytes);
void loader_close(struct loader *l);   /* NULL-safe; pins stay (fail closed) */
const struct loader_features *loader_features(const struct loader *l);

/*
 * Attaches every program to the cgroup at cgroup_path for agent 'agent',
 * reusing and updating pinned links. Writes the cgroup's slot into the
 * cgroup storage afterwards. *cgid gets the cgroup id (inode). 0 or -errno.
 */
int loader_attach(struct loader *l, const char *agent, const char *cgroup_path, uint32_t slot,
		  uint64_t *cgid);

/* Writes the agent slot of an attached cgroup (0: its sockets are refused). */
int loader_set_cgroup_slot(struct loader *l, uint64_t cgid, uint32_t slot);
/* The enforcer's socket for ag_listen key (AG_LISTEN_*); the kernel drops
 * it from the map when the socket closes. */
int loader_listen_set(struct loader *l, uint32_t key, int fd);
/* Attaches ag_guard (sk_lookup) to this network namespace and
 * ag_bind_guard4/6 to the root of the cgroup tree, or swaps the programs of
 * the links a previous run pinned (<pin root>/guard, bindguard4,
 * bindguard6). They act once ag_global has AG_GF_GUARD: only the sockets in
 * ag_listen get what is sent to the enforcer's loopback ports, and only the
 * process in ag_owner may bind them, also while no enforcer runs. */
int loader_guard(struct loader *l, const char *cgroup_root);
/* The directory under the cgroup2 mount that holds the policy cgroups by
 * default (agentgate/NAME). */
#define AG_CGROUP_PARENT "agentgate"
/* ag_unattached on parent, the cgroup holding the policy cgroups (override
 * mode: a child with programs of its own runs only those), and off again
 * (no error when there is none, or no such cgroup). */
int loader_guard_unattached(struct loader *l, const char *parent);
int loader_unguard_unattached(const char *parent);
/* The process allowed to bind the enforcer's ports (ag_owner). */
int loader_set_owner(struct loader *l, uint32_t pid);   /* 0: no owner (a clean stop) */
int loader_owner_start(struct loader *l, uint64_t *start);   /* 0: not taken yet */
bool loader_has_guard(const struct loader *l);

int loader_set_global(struct loader *l, const struct ag_global *g);
int loader_set_agent(struct loader *l, uint32_t slot, const struct ag_agent_cfg *cfg);
/* Adds/removes an allow-set entry for slot: addr/prefixlen (128-bit form), port (0 = any). */
int loader_allow(struct loader *l, uint32_t slot, const uint8_t addr[16], uint8_t prefixlen,
		 uint16_t port, uint32_t target_id, uint32_t flags, bool add);
/* Removes every allow-set entry. */
int loader_allow_clear(struct loader *l);
/* Removes the allow-set entries for which keep() returns false; the others
 * stay in place (no moment without them). Returns the count removed, or
 * -errno. */
typedef bool (*loader_allow_keep_fn)(void *ctx, const struct ag_allow_key *k, const struct ag_allow_val *v);
int loader_allow_prune(struct loader *l, loader_allow_keep_fn keep, void *ctx);

/* Looks up and deletes a pair entry. 0, -ENOENT, or -errno. */
int loader_pair_take(struct loader *l, const struct ag_pair_key *k, struct ag_pair_val *v);
/* Deletes pair entries older than max_age_ns (connections never accepted),
 * and puts agents' counts of entries (ag_pending) that fell below zero
 * back to zero. */
int loader_pair_sweep(struct loader *l, uint64_t max_age_ns, uint64_t *removed);
/* Each agent's count of pair entries: zeroed (at start, once every entry
 * is gone), read. */
void loader_pending_reset(struct loader *l);
int64_t loader_pending(struct loader *l, uint32_t slot);

/* Sum of each per-CPU counter. */
int loader_counters(struct loader *l, uint64_t out[AG_CNT__MAX]);

int loader_ringbuf_fd(struct loader *l);
struct ring_buffer *loader_ringbuf(struct loader *l,
				   int (*cb)(void *ctx, void *data, size_t size), void *ctx);

/*
 * Removes pinned links (detaching them, even while an enforcer holds them)
 * for one agent, or for all when agent is NULL; with agent NULL also removes
 * the map pins. Works with no enforcer running. *removed = links detached.
 */
/* The host's table of agent slots (enforcer.c assign_slots()): it lasts as
 * long as the pins; detaching them all removes it. */
#define LOADER_HOST_SLOTS "/run/agentgate/slots.json"
int loader_detach_pins(const char *agent, int *removed);
/* Detaches agent's pinned links on one cgroup (by id). */
int loader_detach_cgroup(const char *agent, uint64_t cgid);

/* Removes an agent's link directories whose links no longer point at a live
 * cgroup (the cgroup was deleted and released). Returns how many were removed. */
int loader_prune_dead(const char *agent);
/* Removes the pins of agent's links on cgroup cgid once the kernel has
 * released that cgroup (every pin readable and naming no cgroup), with l's
 * own descriptors of released links (l may be NULL). 1: gone (or there was
 * nothing), 0: not yet (the cgroup lives, or a pin could not be read), or
 * -errno. Never touches the links of a live cgroup. */
int loader_prune_released(struct loader *l, const char *agent, uint64_t cgid);

/* For each pinned agent link directory: agent name, cgroup id, links count. */
typedef void (*loader_pin_cb)(void *ctx, const char *agent, uint64_t cgid, int nlinks, int ndead);
int loader_list_pins(loader_pin_cb cb, void *ctx);

/* True when every program is attached to cgroup cgid for agent through a live pinned link. */
bool loader_agent_attached(const char *agent, uint64_t cgid);

/* Number of programs of each attach type on a cgroup (for status and tests). */
int loader_prog_count(const char *cgroup_path, int *total);

extern const char *const loader_prog_names[];
/* agents[].unix_sockets: addr is the key's bytes (an abstract name with its
 * leading 0), len of them. Prune deletes the entries keep() refuses and
 * returns how many. */
int loader_unix_add(struct loader *l, uint32_t slot, const char *addr, size_t len);
int loader_unix_prune(struct loader *l, bool (*keep)(void *ctx, const struct ag_unix_key *k), void *ctx);

/* Programs attached to each agent cgroup: the AF_UNIX ones only where the kernel has their hooks. */
int loader_nprogs(void);

#endif
