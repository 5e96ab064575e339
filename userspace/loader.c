/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "agentgate.skel.h"
#include "loader.h"
#include "util.h"

/* Order matters only for messages; every program is attached to every agent
 * cgroup. The last NPROGS_UNIX only where the kernel has their hooks. */
const char *const loader_prog_names[] = {
	"ag_sock_create", "ag_connect4", "ag_connect6", "ag_sendmsg4", "ag_sendmsg6",
	"ag_recvmsg4", "ag_recvmsg6", "ag_getpeername4", "ag_getpeername6",
	"ag_bind4", "ag_bind6", "ag_sock_ops", "ag_skb_egress", "ag_skb_ingress", "ag_setsockopt",
	"ag_connect_unix", "ag_sendmsg_unix",
};
#define NPROGS_ALL ((int)(sizeof(loader_prog_names) / sizeof(loader_prog_names[0])))
#define NPROGS_UNIX 2

/* Attach types newer than Debian's 6.1 <linux/bpf.h> (Linux >= 6.7). */
#define AG_BPF_CGROUP_UNIX_CONNECT 49
#define AG_BPF_CGROUP_UNIX_SENDMSG 50

#define MAX_LINKS 4096

struct loader {
	struct agentgate_bpf *skel;
	struct loader_features feat;
	char root[PATH_MAX];
	struct bpf_link *links[MAX_LINKS];
	int nlinks;
	int64_t *pending;   /* ag_pending, mapped: each agent's ag_pairs entries */
	size_t pending_len;
};

int loader_pin_root(char *out, size_t outlen)
{
	char bpffs[PATH_MAX];
	int err = ensure_bpffs(bpffs, sizeof(bpffs));

	if (err)
		return err;
	if ((size_t)snprintf(out, outlen, "%s/agentgate/v%d", bpffs, AG_ABI_VERSION) >= outlen)
		return -ENAMETOOLONG;
	return 0;
}

static int libbpf_quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_WARN || ag_log_level >= LOG_LVL_DEBUG)
		return vfprintf(stderr, fmt, ap);
	return 0;
}

/* Whether the kernel loads a sock_addr program for attach type t: 1 yes,
 * 0 no, -1 unknown (this process may not load programs: `exec` run without
 * CAP_BPF; a seccomp filter; no memory). Only EINVAL is a no: the kernel
 * refuses an attach type that is not a sock_addr one (or that it does not
 * know) with it, and uapi numbers are never reused, so 49 and 50 load
 * exactly where they are connect_unix and sendmsg_unix. A load of two
 * instructions, where reading vmlinux BTF for the enum's names took 65-70
 * ms of every start and every `exec` on the 2-CPU VMs (libbpf reads it
 * once more for CO-RE at the enforcer's load). The bpf(2) call itself, not
 * libbpf's bpf_prog_load(): that one may raise RLIMIT_MEMLOCK to infinity
 * when its own probe fails, and `exec` would pass that on to the agent. */
static int sock_addr_type_loads(int t)
{
	const struct bpf_insn prog[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 1 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	static const char license[] = "Dual BSD/GPL";
	union bpf_attr a;
	int fd;

	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_CGROUP_SOCK_ADDR;
	a.expected_attach_type = (__u32)t;
	a.insns = (__u64)(uintptr_t)prog;
	a.insn_cnt = 2;
	a.license = (__u64)(uintptr_t)license;
	fd = (int)syscall(__NR_bpf, BPF_PROG_LOAD, &a, sizeof(a));
	if (fd < 0)
		return errno == EINVAL ? 0 : -1;
	close(fd);
	return 1;
}

/* Whether the kernel's BTF has every one of the n enum values in names
 * (one read of vmlinux BTF: 65-70 ms on the 2-CPU VMs). */
static bool btf_has_enum_values(const char *const *names, int n)
{
	struct btf *btf = btf__load_vmlinux_btf();
	int found = 0;
	uint64_t seen = 0;

	if (!btf)
		return false;
	for (unsigned int i = 1; i < btf__type_cnt(btf) && found < n; i++) {
		const struct btf_type *t = btf__type_by_id(btf, i);
		const struct btf_enum *e;

		if (!btf_is_enum(t))
			continue;
		e = btf_enum(t);
		for (int j = 0; j < btf_vlen(t); j++) {
			const char *name = btf__name_by_offset(btf, e[j].name_off);

			for (int k = 0; k < n && k < 64; k++)
				if (!(seen & (1ULL << k)) && strcmp(name, names[k]) == 0) {
					seen |= 1ULL << k;
					found++;
				}
		}
	}
	btf__free(btf);
	return found == n;
}

/* cgroup/connect_unix and sendmsg_unix exist (probed once per process; by
 * the BTF's enum names where the probe cannot tell). */
static bool has_unix_hooks(void)
{
	static const char *const names[] = { "BPF_CGROUP_UNIX_CONNECT", "BPF_CGROUP_UNIX_SENDMSG" };
	static int has = -1;
	int c, m;

	if (has < 0) {
		c = sock_addr_type_loads(AG_BPF_CGROUP_UNIX_CONNECT);
		m = c == 1 ? sock_addr_type_loads(AG_BPF_CGROUP_UNIX_SENDMSG) : c;
		has = c < 0 || m < 0 ? btf_has_enum_values(names, 2) : c == 1 && m == 1;
	}
	return has;
}

int loader_nprogs(void)
{
	return NPROGS_ALL - (has_unix_hooks() ? 0 : NPROGS_UNIX);
}

static void probe_features(struct loader_features *f)
{
	char *lsm = read_file("/sys/kernel/security/lsm", 4096, NULL);

	f->set_retval = libbpf_probe_bpf_helper(BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
						BPF_FUNC_set_retval, NULL) == 1;
	f->connect_unix = has_unix_hooks();
	/* LSM programs refuse to load on some hosts even with "bpf" in the LSM
	 * list (the development VMs do): both must hold. */
	f->lsm = lsm && strstr(lsm, "bpf") &&
		 libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_LSM, NULL) == 1;
	free(lsm);
}

/*
 * A map pinned by an earlier build whose layout this one changed would make
 * the load fail (libbpf reuses pins by name). The counters only count: such
 * a pin is dropped and made again. Any other map holds state the running
 * programs share, and the error says what to do.
 */
static int drop_incompatible_pins(struct bpf_object *obj, const char *dir)
{
	struct bpf_map *m;

	bpf_object__for_each_map(m, obj) {
		struct bpf_map_info info = {};
		__u32 len = sizeof(info);
		char path[PATH_MAX + 64];
		int fd;

		snprintf(path, sizeof(path), "%s/%s", dir, bpf_map__name(m));
		if ((fd = bpf_obj_get(path)) < 0)
			continue;
		bool same = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 &&
			    info.type == bpf_map__type(m) && info.key_size == bpf_map__key_size(m) &&
			    info.value_size == bpf_map__value_size(m) &&
			    info.max_entries == bpf_map__max_entries(m) &&
			    info.map_flags == bpf_map__map_flags(m);
		close(fd);
		if (same)
			continue;
		if (strcmp(bpf_map__name(m), "ag_counters") != 0) {
			log_err("pinned map %s was made by another agentgate build with another layout: "
				"run 'agentgate detach --all' (agents' connections are refused until the "
				"enforcer runs again) and start it again", path);
			return -EEXIST;
		}
		log_warn("pinned map %s has another layout (an earlier build): made again", path);
		if (unlink(path))
			return -errno;
	}
	return 0;
}

int loader_open(struct loader **out, uint32_t ringbuf_bytes)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts);
	char maps[PATH_MAX + 8];
	struct loader *l;
	int err;

	libbpf_set_print(libbpf_quiet);
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	err = loader_pin_root(l->root, sizeof(l->root));
	if (err)
		goto fail;
	snprintf(maps, sizeof(maps), "%s/maps", l->root);
	err = mkdir_p(maps, 0700);
	if (err)
		goto fail;
	probe_features(&l->feat);

	opts.pin_root_path = maps;
	l->skel = agentgate_bpf__open_opts(&opts);
	if (!l->skel) {
		err = -errno;
		goto fail;
	}
	l->skel->rodata->has_set_retval = l->feat.set_retval;
	if (l->feat.connect_unix) {
		bpf_program__set_expected_attach_type(l->skel->progs.ag_connect_unix,
						      (enum bpf_attach_type)AG_BPF_CGROUP_UNIX_CONNECT);
		bpf_program__set_expected_attach_type(l->skel->progs.ag_sendmsg_unix,
						      (enum bpf_attach_type)AG_BPF_CGROUP_UNIX_SENDMSG);
	} else {
		bpf_program__set_autoload(l->skel->progs.ag_connect_unix, false);
		bpf_program__set_autoload(l->skel->progs.ag_sendmsg_unix, false);
	}
	if (ringbuf_bytes) {
		err = bpf_map__set_max_entries(l->skel->maps.ag_events, ringbuf_bytes);
		if (err)
			goto fail;
	}
	/* after every size is set: a pin is compared with what loads */
	if ((err = drop_incompatible_pins(l->skel->obj, maps)))
		goto fail;
	err = agentgate_bpf__load(l->skel);
	if (err)
		goto fail;
	/* Shared with the programs, which count with atomic adds: the
	 * enforcer's subtractions must be atomic too, which a map update
	 * through bpf() is not. */
	l->pending_len = ((size_t)AG_MAX_AGENTS * sizeof(int64_t) + 4095) & ~(size_t)4095;
	l->pending = mmap(NULL, l->pending_len, PROT_READ | PROT_WRITE, MAP_SHARED,
			  bpf_map__fd(l->skel->maps.ag_pending), 0);
	if (l->pending == MAP_FAILED) {
		l->pending = NULL;
		err = -errno;
		goto fail;
	}
	*out = l;
	return 0;
fail:
	loader_close(l);
	return err < 0 ? err : -EINVAL;
}

void loader_close(struct loader *l)
{
	if (!l)
		return;
	for (int i = 0; i < l->nlinks; i++)
		bpf_link__destroy(l->links[i]);   /* pinned: the kernel link lives on */
	if (l->pending)
		munmap(l->pending, l->pending_len);
	agentgate_bpf__destroy(l->skel);
	free(l);
}

const struct loader_features *loader_features(const struct loader *l)
{
	return &l->feat;
}

static struct bpf_program *prog_by_name(struct loader *l, const char *name)
{
	return bpf_object__find_program_by_name(l->skel->obj, name);
}

static int link_dir(const char *root, const char *agent, uint64_t cgid, char *out, size_t outlen)
{
	if ((size_t)snprintf(out, outlen, "%s/links/%s/%llu", root, agent,
			     (unsigned long long)cgid) >= outlen)
		return -ENAMETOOLONG;
	return 0;
}

static int rm_link_dir(const char *dir, int *removed, int *ndead);

/* A cgroup belongs to one agent: links pinned for it under another agent's
 * name (the agent was renamed) are removed once the new ones are attached,
 * or the two copies would keep running in sequence. */
static void drop_other_owners(const char *root, const char *agent, uint64_t cgid)
{
	char path[PATH_MAX + 64];
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/links", root);
	d = opendir(path);
	if (!d)
		return;
	while ((de = readdir(d))) {
		char dir[PATH_MAX + 128];
		struct stat st;

		if (de->d_name[0] == '.' || strcmp(de->d_name, agent) == 0)
			continue;
		snprintf(dir, sizeof(dir), "%s/%s/%llu", path, de->d_name, (unsigned long long)cgid);
		if (stat(dir, &st) == 0) {
			log_warn("cgroup %llu was attached for agent '%s'; moving it to '%s'",
				 (unsigned long long)cgid, de->d_name, agent);
			rm_link_dir(dir, NULL, NULL);
		}
	}
	closedir(d);
}

/* prog attached by a link pinned at path: the pinned link, with prog
 * swapped in, when a previous run left one; else attached to fd (a network
 * namespace, or a cgroup) and pinned. */
static int attach_pinned(struct loader *l, struct bpf_program *prog, const char *path, int fd, bool netns)
{
	struct bpf_link *link;
	int err;

	link = access(path, F_OK) == 0 ? bpf_link__open(path) : NULL;
	if (link) {
		err = bpf_link__update_program(link, prog);
		if (!err)
			goto keep;
		/* ENOLINK: the link's cgroup is gone (recreated with the same
		 * name); replace the defunct pin. */
		log_warn("pinned link '%s' unusable (%s); re-attaching", path, strerror(-err));
		bpf_link__destroy(link);
		unlink(path);
	}
	link = netns ? bpf_program__attach_netns(prog, fd) : bpf_program__attach_cgroup(prog, fd);
	if (!link)
		return -errno;
	if ((err = bpf_link__pin(link, path))) {
		bpf_link__destroy(link);   /* unpinned: detaches, so nothing half-done stays */
		return err;
	}
keep:
	if (l->nlinks < MAX_LINKS)
		l->links[l->nlinks++] = link;
	else
		bpf_link__destroy(link);
	return 0;
}

/* The cgroup's storage (its agent slot) exists once per attach type of the
 * programs that read it: sock_create, and the AF_UNIX hooks. */
static int set_slot(struct loader *l, uint64_t cgid, struct ag_cgrp_cfg cc, __u64 flags)
{
	static const int types[] = { BPF_CGROUP_INET_SOCK_CREATE, AG_BPF_CGROUP_UNIX_CONNECT,
				     AG_BPF_CGROUP_UNIX_SENDMSG };
	int n = l->feat.connect_unix ? 3 : 1;

	for (int i = 0; i < n; i++) {
		struct bpf_cgroup_storage_key key = { .cgroup_inode_id = cgid,
						      .attach_type = (__u32)types[i] };

		/* a cgroup an earlier build attached has no AF_UNIX storage */
		if (bpf_map_update_elem(bpf_map__fd(l->skel->maps.ag_cgrp), &key, &cc, flags) &&
		    !(i > 0 && flags == BPF_EXIST && errno == ENOENT))
			return -errno;
	}
	return 0;
}

int loader_attach(struct loader *l, const char *agent, const char *cgroup_path, uint32_t slot,
		  uint64_t *cgid)
{
	struct ag_cgrp_cfg cc = { .slot = slot };
	char dir[PATH_MAX];
	struct stat st;
	int cgfd, err = 0;

	cgfd = open(cgroup_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cgfd < 0)
		return -errno;
	if (fstat(cgfd, &st)) {
		err = -errno;
		goto out;
	}
	*cgid = st.st_ino;
	err = link_dir(l->root, agent, st.st_ino, dir, sizeof(dir));
	if (err)
		goto out;
	err = mkdir_p(dir, 0700);
	if (err)
		goto out;

	for (int i = 0; i < loader_nprogs(); i++) {
		struct bpf_program *prog = prog_by_name(l, loader_prog_names[i]);
		char path[PATH_MAX + 64];

		if (!prog) {
			err = -ENOENT;
			goto out;
		}
		snprintf(path, sizeof(path), "%s/%s", dir, loader_prog_names[i]);
		if ((err = attach_pinned(l, prog, path, cgfd, false))) {
			log_err("attach %s to '%s': %s", loader_prog_names[i], cgroup_path, strerror(-err));
			goto out;
		}
	}

	err = set_slot(l, st.st_ino, cc, BPF_ANY);
	/* Only now the previous owner's links go: taken off first, they left
	 * the cgroup without programs while these were attached (review, stop
	 * 29). Meanwhile both copies run in turn; a socket one redirected is
	 * the enforcer's to the other. */
	if (!err)
		drop_other_owners(l->root, agent, st.st_ino);
out:
	close(cgfd);
	return err;
}

int loader_listen_set(struct loader *l, uint32_t key, int fd)
{
	uint64_t v = (uint64_t)fd;

	if (key >= AG_LISTEN_MAX)
		return -EINVAL;
	return bpf_map_update_elem(bpf_map__fd(l->skel->maps.ag_listen), &key, &v, BPF_ANY) ? -errno : 0;
}

bool loader_has_guard(const struct loader *l)
{
	return bpf_program__fd(l->skel->progs.ag_guard) >= 0;
}

int loader_guard(struct loader *l, const char *cgroup_root)
{
	char path[3][PATH_MAX + 16];
	int nsfd, cgfd, err;

	snprintf(path[0], sizeof(path[0]), "%s/guard", l->root);
	snprintf(path[1], sizeof(path[1]), "%s/bindguard4", l->root);
	snprintf(path[2], sizeof(path[2]), "%s/bindguard6", l->root);
	nsfd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (nsfd < 0)
		return -errno;
	err = attach_pinned(l, l->skel->progs.ag_guard, path[0], nsfd, true);
	close(nsfd);
	if (err)
		return err;
	cgfd = open(cgroup_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cgfd < 0)
		return -errno;
	err = attach_pinned(l, l->skel->progs.ag_bind_guard4, path[1], cgfd, false);
	if (!err)
		err = attach_pinned(l, l->skel->progs.ag_bind_guard6, path[2], cgfd, false);
	close(cgfd);
	return err;
}

int loader_guard_unattached(struct loader *l, const char *parent)
{
	int cgfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC), err = 0;

	if (cgfd < 0)
		return -errno;
	/* A legacy attachment, not a link: links are always "multi", and
	 * the children's links would then run it too. In override mode
	 * attaching again replaces the previous run's program. */
	if (bpf_prog_attach(bpf_program__fd(l->skel->progs.ag_unattached), cgfd, BPF_CGROUP_INET_SOCK_CREATE,
			    BPF_F_ALLOW_OVERRIDE))
		err = -errno;
	/* The AF_UNIX programs themselves: such a cgroup has no agent slot,
	 * so they refuse every address (AG_R_NO_AGENT). Not fatal: the
	 * inet guard stands without them (logged). */
	if (!err && l->feat.connect_unix &&
	    (bpf_prog_attach(bpf_program__fd(l->skel->progs.ag_connect_unix), cgfd,
			     (enum bpf_attach_type)AG_BPF_CGROUP_UNIX_CONNECT, BPF_F_ALLOW_OVERRIDE) ||
	     bpf_prog_attach(bpf_program__fd(l->skel->progs.ag_sendmsg_unix), cgfd,
			     (enum bpf_attach_type)AG_BPF_CGROUP_UNIX_SENDMSG, BPF_F_ALLOW_OVERRIDE)))
		log_warn("'%s': the AF_UNIX guard for cgroups without their programs could not be attached: %s "
			 "(a policy cgroup made again may reach AF_UNIX addresses until it is attached)",
			 parent, strerror(errno));
	close(cgfd);
	return err;
}

int loader_unguard_unattached(const char *parent)
{
	int cgfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC), err = 0;
	__u32 ids[1], cnt = 1, flags = 0;

	if (cgfd < 0)
		return errno == ENOENT ? 0 : -errno;
	/* only an override-mode program: what ag_unattached (and the AF_UNIX
	 * programs beside it) are attached as */
	static const int types[] = { BPF_CGROUP_INET_SOCK_CREATE, AG_BPF_CGROUP_UNIX_CONNECT,
				     AG_BPF_CGROUP_UNIX_SENDMSG };
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		cnt = 1;
		flags = 0;
		if (bpf_prog_query(cgfd, (enum bpf_attach_type)types[i], 0, &flags, ids, &cnt) == 0 &&
		    cnt == 1 && (flags & BPF_F_ALLOW_OVERRIDE) &&
		    bpf_prog_detach(cgfd, (enum bpf_attach_type)types[i]) && !err)
			err = -errno;
	}
	close(cgfd);
	return err;
}

int loader_set_owner(struct loader *l, uint32_t pid)
{
	__u32 zero = 0, none = 0;
	__u64 start = 0;

	/* no owner while the start time is reset: the old one's PID with a
	 * reset start would let the next process under that PID take it */
	if (bpf_map_update_elem(bpf_map__fd(l->skel->maps.ag_owner), &zero, &none, BPF_ANY) ||
	    bpf_map_update_elem(bpf_map__fd(l->skel->maps.ag_owner_start), &zero, &start, BPF_ANY) ||
	    (pid && bpf_map_update_elem(bpf_map__fd(l->skel->maps.ag_owner), &zero, &pid, BPF_ANY)))
		return -errno;
	return 0;
}

int loader_owner_start(struct loader *l, uint64_t *start)
{
	__u32 zero = 0;
	__u64 v = 0;

	if (bpf_map_lookup_elem(bpf_map__fd(l->skel->maps.ag_owner_start), &zero, &v))
		return -errno;
	*start = v;
	return 0;
}

int loader_set_cgroup_slot(struct loader *l, uint64_t cgid, uint32_t slot)
{
	return set_slot(l, cgid, (struct ag_cgrp_cfg){ .slot = slot }, BPF_EXIST);
}

int loader_set_global(struct loader *l, const struct ag_global *g)
{
	__u32 zero = 0;

	return bpf_map_update_elem(bpf_map__fd(l->skel->maps.ag_global), &zero, g, BPF_ANY) ? -errno : 0;
}

int loader_set_agent(struct loader *l, uint32_t slot, const struct ag_agent_cfg *cfg)
{
	if (slot >= AG_MAX_AGENTS)
		return -EINVAL;
	return bpf_map_update_elem(bpf_map__fd(l->skel->maps.ag_agents), &slot, cfg, BPF_ANY) ? -errno : 0;
}

int loader_allow(struct loader *l, uint32_t slot, const uint8_t addr[16], uint8_t prefixlen,
		 uint16_t port, uint32_t target_id, uint32_t flags, bool add)
{
	struct ag_allow_key k = {
		.prefixlen = AG_ALLOW_FIXED_BITS + prefixlen,
		.slot = slot,
		.port = port,
		.proto = 6,
	};
	struct ag_allow_val v = { .target_id = target_id, .flags = flags };
	int fd = bpf_map__fd(l->skel->maps.ag_allow);

	if (prefixlen > 128)
		return -EINVAL;
	memcpy(k.addr, addr, 16);
	if (add)
		return bpf_map_update_elem(fd, &k, &v, BPF_ANY) ? -errno : 0;
	return bpf_map_delete_elem(fd, &k) && errno != ENOENT ? -errno : 0;
}

int loader_unix_add(struct loader *l, uint32_t slot, const char *addr, size_t len)
{
	struct ag_unix_key k = { .slot = slot, .len = (__u32)len };
	__u32 one = 1;

	if (len == 0 || len > sizeof(k.path))
		return -EINVAL;
	memcpy(k.path, addr, len);
	return bpf_map_update_elem(bpf_map__fd(l->skel->maps.ag_unix), &k, &one, BPF_ANY) ? -errno : 0;
}

int loader_unix_prune(struct loader *l, bool (*keep)(void *ctx, const struct ag_unix_key *k), void *ctx)
{
	int fd = bpf_map__fd(l->skel->maps.ag_unix), n = 0, err = 0;
	struct ag_unix_key k, next, *gone;
	size_t ngone = 0;
	bool first = true;

	gone = calloc(AG_UNIX_MAX, sizeof(*gone));
	if (!gone)
		return -ENOMEM;
	/* collect, then delete: deleting while walking restarts the walk */
	while (ngone < AG_UNIX_MAX && bpf_map_get_next_key(fd, first ? NULL : &k, &next) == 0) {
		first = false;
		k = next;
		if (!keep(ctx, &k))
			gone[ngone++] = k;
	}
	for (size_t i = 0; i < ngone; i++) {
		if (bpf_map_delete_elem(fd, &gone[i]) == 0)
			n++;
		else if (errno != ENOENT)
			err = -errno;   /* that address stays allowed: the caller says so */
	}
	free(gone);
	return err ? err : n;
}

int loader_allow_clear(struct loader *l)
{
	int fd = bpf_map__fd(l->skel->maps.ag_allow);
	struct ag_allow_key k;

	/* Deleting while iterating restarts from the first key each time. */
	while (bpf_map_get_next_key(fd, NULL, &k) == 0)
		if (bpf_map_delete_elem(fd, &k))
			return -errno;
	return 0;
}

int loader_allow_prune(struct loader *l, loader_allow_keep_fn keep, void *ctx)
{
	int fd = bpf_map__fd(l->skel->maps.ag_allow), n = 0;
	struct ag_allow_key k, next, *gone;
	struct ag_allow_val v;
	size_t ngone = 0;
	bool first = true;

	/* Collect first, delete after: deleting while walking makes
	 * get_next_key restart from the first key. */
	gone = calloc(AG_ALLOW_MAX, sizeof(*gone));
	if (!gone)
		return -ENOMEM;
	while (ngone < AG_ALLOW_MAX && bpf_map_get_next_key(fd, first ? NULL : &k, &next) == 0) {
		first = false;
		k = next;
		if (bpf_map_lookup_elem(fd, &k, &v) == 0 && !keep(ctx, &k, &v))
			gone[ngone++] = k;
	}
	for (size_t i = 0; i < ngone; i++)
		if (bpf_map_delete_elem(fd, &gone[i]) == 0)
			n++;
	free(gone);
	return n;
}

/* An entry this process removed: its agent's share gets it back. */
static void pending_put(struct loader *l, uint32_t slot)
{
	if (slot < AG_MAX_AGENTS)
		__atomic_fetch_sub(&l->pending[slot], 1, __ATOMIC_RELAXED);
}

int loader_pair_take(struct loader *l, const struct ag_pair_key *k, struct ag_pair_val *v)
{
	int fd = bpf_map__fd(l->skel->maps.ag_pairs);

	if (bpf_map_lookup_and_delete_elem(fd, k, v))
		return -errno;
	pending_put(l, v->slot);
	return 0;
}

void loader_pending_reset(struct loader *l)
{
	for (int i = 0; i < AG_MAX_AGENTS; i++)
		__atomic_store_n(&l->pending[i], 0, __ATOMIC_RELAXED);
}

int64_t loader_pending(struct loader *l, uint32_t slot)
{
	return slot < AG_MAX_AGENTS ? __atomic_load_n(&l->pending[slot], __ATOMIC_RELAXED) : 0;
}

int loader_pair_sweep(struct loader *l, uint64_t max_age_ns, uint64_t *removed)
{
	int fd = bpf_map__fd(l->skel->maps.ag_pairs);
	struct ag_pair_key k, next, *stale;
	struct ag_pair_val v;
	uint64_t now = now_ns_boot(), n = 0, nstale = 0;
	bool first = true;

	/* Collect first, delete after: deleting while walking makes
	 * get_next_key restart from the first key. */
	stale = calloc(AG_PAIR_MAX, sizeof(*stale));
	if (!stale)
		return -ENOMEM;
	while (nstale < AG_PAIR_MAX && bpf_map_get_next_key(fd, first ? NULL : &k, &next) == 0) {
		first = false;
		k = next;
		if (bpf_map_lookup_elem(fd, &k, &v) == 0 && now > v.ts_ns && now - v.ts_ns > max_age_ns)
			stale[nstale++] = k;
	}
	/* Taken with its value: the slot given back is the one of the entry
	 * removed, even if the key was filled again since the walk. */
	for (uint64_t i = 0; i < nstale; i++)
		if (bpf_map_lookup_and_delete_elem(fd, &stale[i], &v) == 0) {
			pending_put(l, v.slot);
			n++;
		}
	free(stale);
	/* Below zero is a count the previous run's programs left short
	 * (agentgate_abi.h, ag_pending): it would let the agent past its
	 * share. Compare-and-swap, so a change made meanwhile stands. */
	for (int s = 0; s < AG_MAX_AGENTS; s++) {
		int64_t c = __atomic_load_n(&l->pending[s], __ATOMIC_RELAXED);

		if (c < 0)
			__atomic_compare_exchange_n(&l->pending[s], &c, 0, false, __ATOMIC_RELAXED,
						    __ATOMIC_RELAXED);
	}
	if (removed)
		*removed = n;
	return 0;
}

int loader_counters(struct loader *l, uint64_t out[AG_CNT__MAX])
{
	int ncpu = libbpf_num_possible_cpus(), fd = bpf_map__fd(l->skel->maps.ag_counters);
	uint64_t *vals;

	if (ncpu <= 0)
		return -EINVAL;
	vals = calloc(ncpu, sizeof(*vals));
	if (!vals)
		return -ENOMEM;
	for (__u32 i = 0; i < AG_CNT__MAX; i++) {
		out[i] = 0;
		if (bpf_map_lookup_elem(fd, &i, vals))
			continue;
		for (int c = 0; c < ncpu; c++)
			out[i] += vals[c];
	}
	free(vals);
	return 0;
}

int loader_ringbuf_fd(struct loader *l)
{
	return bpf_map__fd(l->skel->maps.ag_events);
}

struct ring_buffer *loader_ringbuf(struct loader *l, int (*cb)(void *, void *, size_t), void *ctx)
{
	return ring_buffer__new(loader_ringbuf_fd(l), cb, ctx, NULL);
}

/* ---- pins, usable without a loaded skeleton ------------------------------- */

static int rm_link_dir(const char *dir, int *removed, int *ndead)
{
	struct dirent *de;
	DIR *d = opendir(dir);

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		char path[PATH_MAX + 300];
		int fd;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		fd = bpf_obj_get(path);
		if (fd >= 0) {
			/* Detach explicitly: unpinning alone leaves the link alive
			 * while any process (a running enforcer) holds its fd. */
			if (bpf_link_detach(fd) == 0 && removed)
				(*removed)++;
			else if (ndead)
				(*ndead)++;
			close(fd);
		}
		unlink(path);
	}
	closedir(d);
	return rmdir(dir) ? -errno : 0;
}

static int for_each_subdir(const char *dir, int (*fn)(const char *path, const char *name, void *ctx),
			   void *ctx)
{
	struct dirent *de;
	DIR *d = opendir(dir);
	int err = 0;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		char path[PATH_MAX + 300];

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		err = fn(path, de->d_name, ctx);
		if (err)
			break;
	}
	closedir(d);
	return err;
}

struct detach_ctx { int removed; };

static int detach_cg(const char *path, const char *name, void *ctx)
{
	struct detach_ctx *dc = ctx;

	rm_link_dir(path, &dc->removed, NULL);
	return 0;
}

static int detach_agent(const char *path, const char *name, void *ctx)
{
	for_each_subdir(path, detach_cg, ctx);
	rmdir(path);
	return 0;
}

static int unlink_entry(const char *path, const char *name, void *ctx)
{
	unlink(path);
	return 0;
}

int loader_detach_pins(const char *agent, int *removed)
{
	char root[PATH_MAX], dir[PATH_MAX + 64];
	struct detach_ctx dc = { 0 };
	int err = loader_pin_root(root, sizeof(root));

	if (err)
		return err;
	if (agent) {
		snprintf(dir, sizeof(dir), "%s/links/%s", root, agent);
		if (access(dir, F_OK))
			return -ENOENT;
		detach_agent(dir, agent, &dc);
	} else {
		snprintf(dir, sizeof(dir), "%s/links", root);
		for_each_subdir(dir, detach_agent, &dc);
		rmdir(dir);
		/* the last references: the enforcer's ports are unguarded from here on */
		snprintf(dir, sizeof(dir), "%s/guard", root);
		unlink(dir);
		snprintf(dir, sizeof(dir), "%s/bindguard4", root);
		unlink(dir);
		snprintf(dir, sizeof(dir), "%s/bindguard6", root);
		unlink(dir);
		snprintf(dir, sizeof(dir), "%s/maps", root);
		for_each_subdir(dir, unlink_entry, NULL);
		/* the sockets' stamps went with the maps: slots may be numbered afresh */
		unlink(LOADER_HOST_SLOTS);
		rmdir(dir);
		rmdir(root);
		/* The parent "agentgate" directory: only when no other ABI version is pinned. */
		char *slash = strrchr(root, '/');
		if (slash) {
			*slash = 0;
			rmdir(root);
		}
	}
	if (removed)
		*removed = dc.removed;
	return 0;
}

struct list_ctx {
	loader_pin_cb cb;
	void *ctx;
	const char *agent;
};

static int list_cg(const char *path, const char *name, void *ctx)
{
	struct list_ctx *lc = ctx;
	uint64_t cgid = 0;
	int nlinks = 0, ndead = 0;
	struct dirent *de;
	DIR *d;

	if (parse_u64(name, 1, UINT64_MAX, &cgid))
		return 0;
	d = opendir(path);
	if (!d)
		return 0;
	while ((de = readdir(d))) {
		char p[PATH_MAX + 300];
		struct bpf_link_info info = {};
		__u32 len = sizeof(info);
		int fd;

		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
		fd = bpf_obj_get(p);
		if (fd < 0) {
			ndead++;
			continue;
		}
		if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.type == BPF_LINK_TYPE_CGROUP &&
		    info.cgroup.cgroup_id == cgid)
			nlinks++;
		else
			ndead++;
		close(fd);
	}
	closedir(d);
	lc->cb(lc->ctx, lc->agent, cgid, nlinks, ndead);
	return 0;
}

static int list_agent(const char *path, const char *name, void *ctx)
{
	struct list_ctx *lc = ctx;

	lc->agent = name;
	return for_each_subdir(path, list_cg, lc);
}

int loader_detach_cgroup(const char *agent, uint64_t cgid)
{
	char root[PATH_MAX], dir[PATH_MAX + 64];
	int err = loader_pin_root(root, sizeof(root));

	if (err || (err = link_dir(root, agent, cgid, dir, sizeof(dir))))
		return err;
	return rm_link_dir(dir, NULL, NULL);
}

int loader_list_pins(loader_pin_cb cb, void *ctx)
{
	char root[PATH_MAX], dir[PATH_MAX + 16];
	struct list_ctx lc = { .cb = cb, .ctx = ctx };
	int err = loader_pin_root(root, sizeof(root));

	if (err)
		return err;
	snprintf(dir, sizeof(dir), "%s/links", root);
	return for_each_subdir(dir, list_agent, &lc);
}

struct attached_ctx { uint64_t cgid; const char *agent; bool ok; };

static void attached_cb(void *ctx, const char *agent, uint64_t cgid, int nlinks, int ndead)
{
	struct attached_ctx *ac = ctx;

	if (strcmp(agent, ac->agent) == 0 && cgid == ac->cgid && nlinks == loader_nprogs() && ndead == 0)
		ac->ok = true;
}

bool loader_agent_attached(const char *agent, uint64_t cgid)
{
	struct attached_ctx ac = { .cgid = cgid, .agent = agent };

	loader_list_pins(attached_cb, &ac);
	return ac.ok;
}

int loader_prog_count(const char *cgroup_path, int *total)
{
	static const enum bpf_attach_type types[] = {
		BPF_CGROUP_INET_SOCK_CREATE, BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET6_CONNECT,
		BPF_CGROUP_UDP4_SENDMSG, BPF_CGROUP_UDP6_SENDMSG, BPF_CGROUP_UDP4_RECVMSG,
		BPF_CGROUP_UDP6_RECVMSG, BPF_CGROUP_INET4_GETPEERNAME, BPF_CGROUP_INET6_GETPEERNAME,
		BPF_CGROUP_INET4_BIND, BPF_CGROUP_INET6_BIND, BPF_CGROUP_SOCK_OPS,
		BPF_CGROUP_INET_EGRESS, BPF_CGROUP_INET_INGRESS, BPF_CGROUP_SETSOCKOPT,
		(enum bpf_attach_type)AG_BPF_CGROUP_UNIX_CONNECT, (enum bpf_attach_type)AG_BPF_CGROUP_UNIX_SENDMSG,
	};
	int fd = open(cgroup_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	*total = 0;
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		__u32 ids[64], cnt = 64;

		if (bpf_prog_query(fd, types[i], 0, NULL, ids, &cnt) == 0)
			*total += cnt;
	}
	close(fd);
	return 0;
}

struct prune_ctx { const char *agent; uint64_t cgids[16]; int n; };

static void prune_cb(void *ctx, const char *agent, uint64_t cgid, int nlinks, int ndead)
{
	struct prune_ctx *pc = ctx;

	(void)ndead;
	if (strcmp(agent, pc->agent) != 0 || nlinks > 0 || pc->n >= 16)
		return;
	pc->cgids[pc->n++] = cgid;
}

int loader_prune_dead(const char *agent)
{
	struct prune_ctx pc = { .agent = agent };
	int n = 0;

	loader_list_pins(prune_cb, &pc);
	for (int i = 0; i < pc.n; i++)
		n += loader_prune_released(NULL, agent, pc.cgids[i]) == 1;
	return n;
}

/* The enforcer's own descriptors of links whose cgroup the kernel released:
 * closed (a cgroup link's descriptor is only that; the pin is separate). */
static void release_cached(struct loader *l)
{
	for (int i = 0; l && i < l->nlinks;) {
		struct bpf_link_info info = {};
		__u32 len = sizeof(info);

		if (bpf_obj_get_info_by_fd(bpf_link__fd(l->links[i]), &info, &len) == 0 &&
		    info.type == BPF_LINK_TYPE_CGROUP && info.cgroup.cgroup_id == 0) {
			bpf_link__destroy(l->links[i]);
			l->links[i] = l->links[--l->nlinks];
			continue;
		}
		i++;
	}
}

int loader_prune_released(struct loader *l, const char *agent, uint64_t cgid)
{
	char root[PATH_MAX], dir[PATH_MAX + 64];
	struct dirent *de;
	DIR *d;
	int err;

	if ((err = loader_pin_root(root, sizeof(root))) || (err = link_dir(root, agent, cgid, dir, sizeof(dir))))
		return err;
	if (!(d = opendir(dir)))
		return errno == ENOENT ? 1 : -errno;
	/* Every pin must be readable and name no cgroup: a pin that cannot be
	 * opened (EMFILE, ENOMEM) says nothing, and removing it, or detaching
	 * the others, would take the programs off a live cgroup (review, stop
	 * 40: the old walk took "could not open" for "dead"). */
	while ((de = readdir(d))) {
		char path[PATH_MAX + 300];
		struct bpf_link_info info = {};
		__u32 len = sizeof(info);
		bool released;
		int fd;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if ((fd = bpf_obj_get(path)) < 0) {
			closedir(d);
			return 0;
		}
		released = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.type == BPF_LINK_TYPE_CGROUP &&
			   info.cgroup.cgroup_id == 0;
		close(fd);
		if (!released) {
			closedir(d);
			return 0;
		}
	}
	closedir(d);
	release_cached(l);
	return (err = rm_link_dir(dir, NULL, NULL)) ? err : 1;
}

