/* SPDX-License-Identifier: Apache-2.0 */
/*
 * agentgate exec: run CMD as an agent. In order: find the agent's cgroup and
 * check its programs are attached (else refuse), move into the cgroup, take
 * a private mount namespace in which cgroupfs and /proc/sys are read-only and
 * bpffs, the state directory and /etc/agentgate are hidden, switch user when --user is given, set
 * drop every capability, set no_new_privs, close inherited descriptors, and
 * execvp(CMD): CMD's exit status and output are its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <limits.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/keyctl.h>
#include <linux/seccomp.h>
#include <sys/capability.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cli.h"
#include "loader.h"
#include "util.h"


static int find_agent(const char *state_dir, const char *agent, char *path, size_t pathlen,
		      uint64_t *cgid)
{
	char file[PATH_MAX + 16];
	json_error_t jerr;
	json_t *arr, *it;
	size_t i;
	int ret = -ENOENT;

	snprintf(file, sizeof(file), "%s/agents.json", state_dir);
	arr = json_load_file(file, JSON_REJECT_DUPLICATES, &jerr);
	if (!arr)
		return -ENOENT;
	json_array_foreach(arr, i, it) {
		const char *name = json_string_value(json_object_get(it, "name"));
		const char *p = json_string_value(json_object_get(it, "path"));

		if (name && p && strcmp(name, agent) == 0) {
			snprintf(path, pathlen, "%s", p);
			*cgid = json_integer_value(json_object_get(it, "cgroup_id"));
			ret = 0;
			break;
		}
	}
	json_decref(arr);
	return ret;
}

/* Joins the cgroup open at cgfd: the one whose programs were checked. By
 * path, a cgroup deleted and made again between the check and the join
 * (a new cgroup, without programs) was joined instead; through the
 * directory, the write fails once that one is gone. */
static int join_cgroup(int cgfd)
{
	char pid[32];
	int fd, err = 0;

	fd = openat(cgfd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	snprintf(pid, sizeof(pid), "%d\n", getpid());
	if (write(fd, pid, strlen(pid)) < 0)
		err = -errno;
	close(fd);
	return err;
}

/* Covers path with an empty read-only tmpfs. */
static int hide(const char *path)
{
	if (mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0500"))
		return -errno;
	return 0;
}

static int remount_ro(const char *path)
{
	if (mount(path, path, NULL, MS_BIND | MS_REC, NULL))
		return -errno;
	if (mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL))
		return -errno;
	return 0;
}

/* Every cgroup and cgroup2 mount point in the new namespace becomes
 * read-only, and every bpffs is hidden: opening a pin is a read, and a uid-0
 * agent (CAP_DAC_OVERRIDE) could otherwise open our pinned links and detach
 * them with BPF_LINK_DETACH, which needs no capability. The list is read
 * first: each mount adds a mountinfo line. */
static int lock_mounts(const char *state_dir)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096], (*mnts)[PATH_MAX] = NULL;
	bool is_bpf[64] = { false };
	int n = 0, err = 0;

	if (!f)
		return -errno;
	mnts = calloc(64, PATH_MAX);
	while (mnts && !err && fgets(line, sizeof(line), f)) {
		char *sep = strstr(line, " - ");
		char type[64];
		bool dup = false;

		if (!sep || sscanf(sep + 3, "%63s", type) != 1)
			continue;
		if (strcmp(type, "cgroup2") && strcmp(type, "bpf") && strcmp(type, "cgroup"))
			continue;
		if (n == 64 || sscanf(line, "%*s %*s %*s %*s %4095s", mnts[n]) != 1 ||
		    strchr(mnts[n], '\\')) {
			/* A mount we cannot name or hold would stay writable: refuse. */
			fprintf(stderr, "agentgate: exec: cannot process a %s mount in mountinfo\n", type);
			err = -EINVAL;
			break;
		}
		for (int i = 0; i < n; i++)
			dup |= strcmp(mnts[i], mnts[n]) == 0;
		if (!dup)
			is_bpf[n++] = strcmp(type, "bpf") == 0;
	}
	fclose(f);
	if (!mnts)
		return -ENOMEM;
	if (err) {
		free(mnts);
		return err;
	}
	for (int i = 0; i < n && !err; i++) {
		err = is_bpf[i] ? hide(mnts[i]) : remount_ro(mnts[i]);
		if (err)
			fprintf(stderr, "agentgate: exec: %s '%s': %s\n", is_bpf[i] ? "hide" : "make read-only",
				mnts[i], strerror(-err));
	}
	free(mnts);
	if (err)
		return err;
	/* Hide the state directory (admin socket, keys, spool) and the
	 * configuration (policy, secret files) behind empty read-only tmpfs. */
	if ((err = hide(state_dir))) {
		fprintf(stderr, "agentgate: exec: hide '%s': %s\n", state_dir, strerror(-err));
		return err;
	}
	if (access("/etc/agentgate", F_OK) == 0 && (err = hide("/etc/agentgate"))) {
		fprintf(stderr, "agentgate: exec: hide /etc/agentgate: %s\n", strerror(-err));
		return err;
	}
	/* uid 0 could otherwise write e.g. kernel.core_pattern and run code
	 * outside the cgroup. */
	if ((err = remount_ro("/proc/sys")))
		fprintf(stderr, "agentgate: exec: make /proc/sys read-only: %s\n", strerror(-err));
	return err;
}

/*
 * Every capability goes, from the bounding set too, so nothing exec'd later
 * gets one back: CAP_SYS_ADMIN, CAP_BPF, CAP_NET_ADMIN (detach or re-attach
 * programs), CAP_NET_RAW (AF_PACKET), CAP_SYS_PTRACE (steal fds), but also
 * CAP_DAC_OVERRIDE (read secrets), CAP_KILL (stop the enforcer), CAP_SYS_RAWIO
 * and the rest. An agent needs none of them to make outbound connections.
 */
static int drop_bounding_set(void)
{
	for (int c = 0; c <= CAP_LAST_CAP; c++)
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) && errno != EINVAL)
			return -errno;
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	return 0;
}

/* After switch_user (which needs CAP_SETUID/CAP_SETGID): clear the rest. */
static int clear_caps(void)
{
	cap_t caps = cap_init();   /* all clear */
	int err = 0;

	if (!caps)
		return -errno;
	if (cap_set_proc(caps))
		err = -errno;
	cap_free(caps);
	return err;
}

/*
 * The user is looked up before the process joins the agent's cgroup: there
 * the kernel refuses AF_UNIX addresses the agent's unix_sockets does not
 * list, and glibc's lookups may ask nscd or systemd (nss_systemd) over one
 * (users and groups known only to sssd, LDAP or DynamicUser would be
 * missed, and each lookup audited as the agent's; review).
 */
struct exec_user {
	uid_t uid;
	gid_t gid;
	gid_t *groups;
	int ngroups;
	char *name, *dir;
};

static int resolve_user(const char *user, struct exec_user *u)
{
	struct passwd *pw = getpwnam(user);
	uint64_t uid;
	int n = 64;

	if (!pw && parse_u64(user, 0, UINT32_MAX - 1, &uid) == 0)
		pw = getpwuid(uid);
	if (!pw) {
		fprintf(stderr, "agentgate: exec: unknown user '%s'\n", user);
		return -ENOENT;
	}
	u->uid = pw->pw_uid;
	u->gid = pw->pw_gid;
	if (!(u->name = strdup(pw->pw_name)) || !(u->dir = strdup(pw->pw_dir)))
		return -ENOMEM;
	for (;;) {
		gid_t *g = realloc(u->groups, (size_t)n * sizeof(*g));
		int got = n;

		if (!g)
			return -ENOMEM;
		u->groups = g;
		if (getgrouplist(u->name, u->gid, u->groups, &got) >= 0) {
			u->ngroups = got;
			return 0;
		}
		if (got <= n || got > 65536)
			return -EINVAL;
		n = got;
	}
}

static int switch_user(const struct exec_user *u)
{
	if (setgroups((size_t)u->ngroups, u->groups) || setgid(u->gid) || setuid(u->uid))
		return -errno;
	/* Leaving uid 0 must be final. */
	if (u->uid != 0 && setuid(0) == 0) {
		fprintf(stderr, "agentgate: exec: could not drop root\n");
		return -EPERM;
	}
	setenv("HOME", u->dir, 1);
	setenv("USER", u->name, 1);
	setenv("LOGNAME", u->name, 1);
	return 0;
}

/*
 * System calls that reach past what the mounts and capabilities hold:
 * - clone3 with CLONE_INTO_CGROUP starts the child in any cgroup whose
 *   cgroup.procs the caller may write, and the kernel checks the file's
 *   permissions, not the mount's read-only flag: a uid-0 agent left its
 *   cgroup (no programs, no enforcer) or took another agent's. clone3 fails
 *   with ENOSYS; glibc then uses clone, which cannot choose a cgroup.
 * - ioctl TIOCSTI pushes bytes into the input of a terminal the agent shares
 *   with whoever ran exec (an operator's root shell runs them when the agent
 *   exits). Refused with EPERM; the kernel reads the request as 32 bits,
 *   and so does this check.
 * - socket and socketpair in a family the cgroup hooks do not see: AF_VSOCK
 *   to the hypervisor, AF_RDS and AF_TIPC (sent by kernel threads of the
 *   root cgroup), AF_CAN, AF_BLUETOOTH, AF_ALG, ... pass no hook at all.
 *   Only AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK may be created; any other
 *   fails with EAFNOSUPPORT, as on a kernel without that family, which
 *   programs are written to handle.
 * - unshare and clone with CLONE_NEWUSER, and setns: in a user namespace
 *   of its own the agent holds every capability over the mounts it makes
 *   there, and could mount over the directory of a path its unix_sockets
 *   lists and put a symlink to another socket there (review). EPERM, as
 *   where user namespaces are turned off; setns would let it join one a
 *   process outside made.
 * - io_uring_setup: a ring's IORING_OP_SOCKET creates sockets without the
 *   socket system call, so without this filter. It fails with ENOSYS, as on
 *   a kernel without io_uring; libraries that use it then fall back to
 *   system calls (the cgroup hooks see a ring's connect and sendmsg all the
 *   same).
 * Other ABIs are killed (i386 through int 0x80 numbers its calls
 * otherwise); x32 calls fail. Classic BPF by hand: four rules do not need
 * libseccomp.
 */
#if defined(__x86_64__)
#define AG_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define AG_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "agentgate exec: no seccomp architecture for this target"
#endif

static int install_seccomp(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AG_AUDIT_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#ifdef __x86_64__
		BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u /* __X32_SYSCALL_BIT */, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
#endif
		/* the kernel keyrings: request_key("dns_resolver", ...) makes a
		 * root helper in the root cgroup resolve a name for the agent,
		 * past every hook (found by review; Docker's default profile
		 * refuses these three too) */
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 4, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 3, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_add_key, 2, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_request_key, 1, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_keyctl, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		/* user namespaces (above) */
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_setns, 4, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_unshare, 1, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 4),
		/* the flags: the low 32 bits of args[0] */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
		BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_NEWUSER, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, 1, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socketpair, 0, 7),
		/* the family: the low 32 bits of args[0], an int to the kernel */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, 4, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_INET, 3, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_INET6, 2, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_NETLINK, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAFNOSUPPORT),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 0, 3),
		/* the low 32 bits of args[1] (little-endian) */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TIOCSTI, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog))
		return -errno;
	return 0;
}

/*
 * A process's working directory, and a directory open on stdin, stdout or
 * stderr, refer to a directory itself, not to its path: when the caller
 * stands in a tree lock_mounts() then hides or makes read-only (bpffs, the
 * cgroup mounts, /proc/sys, the state directory, /etc/agentgate), relative
 * paths still reach the tree underneath (./links/... of the pinned
 * programs, ./cgroup.procs, ./core_pattern, the keys). So a directory on
 * 0-2 is refused, and the working directory is looked up again by its path
 * once the mounts are in place: it lands on what the agent may see, or on
 * "/" where that path is gone (said on stderr).
 */
static int no_directory_fds(void)
{
	struct stat st;

	for (int fd = 0; fd <= 2; fd++)
		if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
			fprintf(stderr, "agentgate: exec: descriptor %d is a directory; refusing to "
				"pass it to the agent (it would reach past the hidden mounts)\n", fd);
			return -EISDIR;
		}
	return 0;
}

static int reenter_cwd(const char *cwd)
{
	if (cwd[0] && chdir(cwd) == 0)
		return 0;
	if (cwd[0])
		fprintf(stderr, "agentgate: exec: working directory '%s' is not reachable for the "
			"agent (%s): the command runs in /\n", cwd, strerror(errno));
	else
		fprintf(stderr, "agentgate: exec: working directory unknown: the command runs in /\n");
	if (chdir("/")) {
		fprintf(stderr, "agentgate: exec: chdir /: %s\n", strerror(errno));
		return -errno;
	}
	return 0;
}

int cmd_exec(int argc, char **argv, const char *state_dir)
{
	const char *agent = NULL, *user = NULL;
	char cgpath[PATH_MAX], cwd[PATH_MAX];
	uint64_t cgid = 0;
	struct exec_user eu = { 0 };
	struct stat st;
	int i, err, cgfd;

	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		} else if (strcmp(argv[i], "--agent") == 0 && i + 1 < argc) {
			agent = argv[++i];
		} else if (strcmp(argv[i], "--user") == 0 && i + 1 < argc) {
			user = argv[++i];
		} else {
			break;
		}
	}
	if (!agent || i >= argc) {
		fprintf(stderr, "usage: agentgate exec --agent NAME [--user U] -- CMD [ARG...]\n");
		return 2;
	}
	if (find_agent(state_dir, agent, cgpath, sizeof(cgpath), &cgid)) {
		fprintf(stderr, "agentgate: exec: agent '%s' is not known to the enforcer of '%s' "
			"(is 'agentgate run' running with a policy that names it?)\n", agent, state_dir);
		return 1;
	}
	if (no_directory_fds())   /* first: with 0, 1 or 2 closed, cgfd would take its number */
		return 1;
	cgfd = open(cgpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cgfd < 0 || fstat(cgfd, &st) || st.st_ino != cgid || !loader_agent_attached(agent, cgid)) {
		fprintf(stderr, "agentgate: exec: agent '%s': programs are not attached to '%s'; "
			"refusing to run the command unenforced\n", agent, cgpath);
		return 1;
	}
	if (!getcwd(cwd, sizeof(cwd)))
		cwd[0] = 0;   /* removed, or too long: "/" below */
	if (user && (err = resolve_user(user, &eu))) {
		if (err != -ENOENT)
			fprintf(stderr, "agentgate: exec: user '%s': %s\n", user, strerror(-err));
		return 1;
	}
	err = join_cgroup(cgfd);
	close(cgfd);
	if (err) {
		fprintf(stderr, "agentgate: exec: join cgroup '%s': %s\n", cgpath, strerror(-err));
		return 1;
	}
	if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) {
		fprintf(stderr, "agentgate: exec: private mount namespace: %s\n", strerror(errno));
		return 1;
	}
	if (lock_mounts(state_dir))
		return 1;
	if ((err = drop_bounding_set())) {
		fprintf(stderr, "agentgate: exec: drop capabilities: %s\n", strerror(-err));
		return 1;
	}
	if (user && (err = switch_user(&eu))) {
		fprintf(stderr, "agentgate: exec: switch to user '%s': %s\n", user, strerror(-err));
		return 1;
	}
	if ((err = clear_caps())) {
		fprintf(stderr, "agentgate: exec: drop capabilities: %s\n", strerror(-err));
		return 1;
	}
	if (reenter_cwd(cwd))   /* through the new mounts, as the agent's user */
		return 1;
	/* a session keyring of its own: the caller's (a root login's, with
	 * root's user keyring linked in) is possessed by whoever shares it
	 * (no keys support in the kernel: nothing to leave behind) */
	if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) < 0 && errno != ENOSYS) {
		fprintf(stderr, "agentgate: exec: new session keyring: %s\n", strerror(errno));
		return 1;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) {
		fprintf(stderr, "agentgate: exec: no_new_privs: %s\n", strerror(errno));
		return 1;
	}
	if ((err = install_seccomp())) {
		fprintf(stderr, "agentgate: exec: seccomp filter: %s\n", strerror(-err));
		return 1;
	}
	/* Descriptors inherited from outside the cgroup (a socket opened before
	 * exec) would not be enforced: only stdin, stdout and stderr pass. */
	if (close_range(3, ~0u, 0)) {
		fprintf(stderr, "agentgate: exec: close inherited descriptors: %s\n", strerror(errno));
		return 1;
	}
	signal(SIGPIPE, SIG_DFL);   /* main() ignores it for the CLI; CMD gets the default */
	execvp(argv[i], argv + i);
	fprintf(stderr, "agentgate: exec: %s: %s\n", argv[i], strerror(errno));
	return errno == ENOENT ? 127 : 126;
}
