/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps shared by every agentgate program. All are pinned by name under the
 * versioned pin root the loader gives libbpf, so a restarted enforcer (and a
 * program swapped in with bpf_link__update_program) keeps reading the same
 * maps. Layouts: bpf/agentgate_abi.h.
 */
#ifndef AG_MAPS_BPF_H
#define AG_MAPS_BPF_H

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ag_global);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_global SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_STORAGE);
	__type(key, struct bpf_cgroup_storage_key);
	__type(value, struct ag_cgrp_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_cgrp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AG_MAX_AGENTS);
	__type(key, __u32);
	__type(value, struct ag_agent_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_agents SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, AG_ALLOW_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ag_allow_key);
	__type(value, struct ag_allow_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_allow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AG_UNIX_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ag_unix_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_unix SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ag_sk_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_sk SEC(".maps");

/* A plain HASH, not LRU: when full, new connects fail closed (and are
 * counted) instead of silently evicting a live entry and misattributing. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AG_PAIR_MAX);
	__type(key, struct ag_pair_key);
	__type(value, struct ag_pair_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_pairs SEC(".maps");

/* The share of ag_pairs each agent holds (agentgate_abi.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AG_MAX_AGENTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __s64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, AG_RINGBUF_DEFAULT);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AG_CNT__MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, AG_LISTEN_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_listen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_owner SEC(".maps");

/* The owner's start time (task->group_leader->start_time), taken by its
 * first bind: with the PID alone, a process that got the PID of an
 * enforcer gone (killed, crashed) could bind its ports. 0: not taken yet. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ag_owner_start SEC(".maps");

#endif
