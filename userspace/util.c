/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

int ag_log_level = LOG_LVL_INFO;

void ag_log(int level, const char *fmt, ...)
{
	static const char *names[] = { "error", "warning", "info", "debug" };
	char line[1024];
	va_list ap;
	int n;

	if (level > ag_log_level)
		return;
	n = snprintf(line, sizeof(line), "agentgate: %s: ", names[level]);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	/* One write per line so lines from worker threads never interleave. */
	n = strlen(line);
	if (n < (int)sizeof(line) - 1)
		line[n++] = '\n';
	(void)!write(STDERR_FILENO, line, n);
}

/*
 * mountinfo lines: "id parent maj:min root mountpoint opts [optional...] - fstype source superopts".
 * Mount points escape spaces as \040; our paths never contain them, so an
 * escaped mount point is skipped rather than decoded.
 */
int find_mount(const char *fstype, char *out, size_t outlen)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096];
	int ret = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char *sep = strstr(line, " - ");
		char mnt[PATH_MAX], type[64];

		if (!sep || sscanf(sep + 3, "%63s", type) != 1 || strcmp(type, fstype) != 0)
			continue;
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1 || strchr(mnt, '\\'))
			continue;
		if (strlen(mnt) >= outlen) {
			ret = -ENAMETOOLONG;
			break;
		}
		snprintf(out, outlen, "%s", mnt);
		ret = 0;
		break;
	}
	fclose(f);
	return ret;
}

int ensure_bpffs(char *out, size_t outlen)
{
	int err = find_mount("bpf", out, outlen);

	if (err != -ENOENT)
		return err;
	if (mkdir_p("/sys/fs/bpf", 0700) && errno != EEXIST)
		return -errno;
	if (mount("bpf", "/sys/fs/bpf", "bpf", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700"))
		return -errno;
	snprintf(out, outlen, "/sys/fs/bpf");
	return 0;
}

bool addr_is_v4mapped(const uint8_t a[16])
{
	static const uint8_t pfx[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	return memcmp(a, pfx, 12) == 0;
}

bool addr_is_loopback(const uint8_t a[16])
{
	static const uint8_t v6lo[16] = { [15] = 1 };

	return addr_is_v4mapped(a) ? a[12] == 127 : memcmp(a, v6lo, 16) == 0;
}

void addr_from_sockaddr(const struct sockaddr_storage *ss, uint8_t a[16], uint16_t *port)
{
	memset(a, 0, 16);
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

		a[10] = a[11] = 0xff;
		memcpy(a + 12, &s4->sin_addr, 4);
		if (port)
			*port = ntohs(s4->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

		memcpy(a, &s6->sin6_addr, 16);
		if (port)
			*port = ntohs(s6->sin6_port);
	} else if (port) {
		*port = 0;
	}
}

socklen_t addr_to_sockaddr(const uint8_t a[16], uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (addr_is_v4mapped(a)) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		memcpy(&s4->sin_addr, a + 12, 4);
		return sizeof(*s4);
	}
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

	s6->sin6_family = AF_INET6;
	s6->sin6_port = htons(port);
	memcpy(&s6->sin6_addr, a, 16);
	return sizeof(*s6);
}

/* IPv4 by hand: glibc's inet_ntop() formats it through sprintf, 1% of the
 * workers' time on small HTTP answers (one audit event each names the
 * destination). The same text: dotted decimal, no leading zeros. */
void addr_str(const uint8_t a[16], char *out, size_t outlen)
{
	if (addr_is_v4mapped(a)) {
		char b[16];
		size_t n = 0;

		for (int i = 12; i < 16; i++) {
			unsigned v = a[i];

			if (v >= 100)
				b[n++] = (char)('0' + v / 100);
			if (v >= 10)
				b[n++] = (char)('0' + v / 10 % 10);
			b[n++] = (char)('0' + v % 10);
			b[n++] = i < 15 ? '.' : 0;
		}
		if (outlen >= n)
			memcpy(out, b, n);
		else if (outlen)
			out[0] = 0;   /* as inet_ntop leaves nothing usable (ENOSPC) */
	} else if (!inet_ntop(AF_INET6, a, out, outlen) && outlen) {
		out[0] = 0;
	}
}

void addr_loopback(int family, uint8_t a[16])
{
	memset(a, 0, 16);
	if (family == AF_INET) {
		a[10] = a[11] = 0xff;
		a[12] = 127;
	}
	a[15] = 1;
}

int loopback_socket(int family, int type, uint16_t port, bool reuseport)
{
	struct sockaddr_storage ss;
	uint8_t a[16];
	int one = 1, fd;
	socklen_t len;

	addr_loopback(family, a);
	len = addr_to_sockaddr(a, port, &ss);
	fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* TCP: rebinding over a previous run's TIME_WAIT. Never UDP, where it
	 * would let another user's socket with it share the port. */
	if (type == SOCK_STREAM)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len)) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

uint64_t now_ms_realtime(void) { return clock_ns(CLOCK_REALTIME) / 1000000ull; }
uint64_t now_ns_mono(void) { return clock_ns(CLOCK_MONOTONIC); }
uint64_t now_ns_boot(void) { return clock_ns(CLOCK_BOOTTIME); }
uint64_t thread_cpu_ns(void) { return clock_ns(CLOCK_THREAD_CPUTIME_ID); }

int cond_wait_ms(pthread_cond_t *c, pthread_mutex_t *m, uint64_t ms)
{
	uint64_t at = now_ns_mono() + ms * 1000000ull;
	struct timespec ts = { .tv_sec = (time_t)(at / 1000000000ull), .tv_nsec = (long)(at % 1000000000ull) };

	return pthread_cond_clockwait(c, m, CLOCK_MONOTONIC, &ts);
}

void ag_thread_setup(const char *name, enum ag_sched sched)
{
	struct sched_param sp = { .sched_priority = 0 };
	char n[16];

	snprintf(n, sizeof(n), "%s", name);
	pthread_setname_np(pthread_self(), n);
	if (sched != AG_SCHED_NORMAL)
		pthread_setschedparam(pthread_self(), sched == AG_SCHED_IDLE ? SCHED_IDLE : SCHED_BATCH, &sp);
}

/* struct sched_attr of sched_setattr(2), its first version (48 bytes):
 * glibc 2.36 has no wrapper. */
struct ag_sched_attr {
	uint32_t size, policy;
	uint64_t flags;
	int32_t nice;
	uint32_t priority;
	uint64_t runtime, deadline, period;
};

/* How long an urgent thread may run before a woken worker takes its CPU. */
#define URGENT_SLICE_NS 100000ull

void ag_thread_urgent(pid_t tid, bool urgent)
{
	struct sched_param sp = { .sched_priority = 0 };
	/*
	 * An urgent thread gets its fair share, but in short turns. The
	 * scheduler (EEVDF, Linux >= 6.6) lets a running thread finish its
	 * slice before a woken one of the same class takes the CPU: 0.75 ms
	 * times 1 + log2(CPUs), 1.5 ms on 2 CPUs. The spool thread is urgent
	 * most of the time under a sustained load (96% of samples in the
	 * http bench), and perf sched timehist showed it holding a CPU for
	 * 0.3-1.9 ms while a worker and wrk waited on it. sched_runtime sets
	 * a fair task's own slice (Linux >= 6.12; older kernels ignore it).
	 * Set with the policy every time: sched_setscheduler() resets it.
	 * Measured (wrk, 16 connections, small answers, 2 CPUs): p99 median
	 * 1.17 ms over 10 runs, against 1.61 ms over 5 without.
	 */
	struct ag_sched_attr a = { .size = sizeof(a), .policy = SCHED_BATCH, .runtime = URGENT_SLICE_NS };

	if (urgent && syscall(SYS_sched_setattr, tid, &a, 0) == 0)
		return;
	sched_setscheduler(tid, urgent ? SCHED_BATCH : SCHED_IDLE, &sp);
}

static uint64_t fnv_mix(uint64_t h, uint64_t v)
{
	for (int i = 0; i < 8; i++, v >>= 8)
		h = (h ^ (v & 0xff)) * 0x100000001b3ull;
	return h;
}

uint64_t files_stamp(const char *const *paths, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	struct stat st;

	for (size_t i = 0; i < n; i++) {
		if (!paths[i])
			continue;
		if (stat(paths[i], &st)) {
			h = fnv_mix(h, (uint64_t)errno | 1ull << 63);
			continue;
		}
		h = fnv_mix(h, st.st_dev);
		h = fnv_mix(h, st.st_ino);
		h = fnv_mix(h, (uint64_t)st.st_size);
		h = fnv_mix(h, (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec);
		h = fnv_mix(h, (uint64_t)st.st_ctim.tv_sec * 1000000000ull + (uint64_t)st.st_ctim.tv_nsec);
	}
	return h;
}

int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, mode) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) && errno != EEXIST)
		return -errno;
	return 0;
}

int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len < IO_CHUNK ? len : IO_CHUNK);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= n;
	}
	return 0;
}

char *read_file(const char *path, size_t max, size_t *len_out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t cap = 4096, len = 0;
	char *buf;

	if (fd < 0)
		return NULL;
	buf = malloc(cap + 1);
	while (buf) {
		ssize_t n;

		if (len == cap) {
			char *nb;

			if (cap >= max) {
				free(buf);
				buf = NULL;
				errno = EFBIG;
				break;
			}
			cap = cap * 2 > max ? max : cap * 2;
			nb = realloc(buf, cap + 1);
			if (!nb) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			free(buf);
			buf = NULL;
			break;
		}
		if (n == 0) {
			buf[len] = 0;
			if (len_out)
				*len_out = len;
			break;
		}
		len += n;
	}
	close(fd);
	return buf;
}

uint64_t env_u64(const char *name, uint64_t min, uint64_t max, uint64_t def, _Atomic uint64_t *cache)
{
	uint64_t v = atomic_load(cache);
	const char *e;

	if (v)
		return v;
	e = getenv(name);
	if (!e || parse_u64(e, min, max, &v))
		v = def;
	atomic_store(cache, v);
	return v;
}

uint64_t env_ms(const char *name, uint64_t def, _Atomic uint64_t *cache)
{
	return env_u64(name, 100, 86400000, def, cache);
}

int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || !*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int proc_cgroup2_path(int pid, char *out, size_t outlen)
{
	char path[64], line[4096];
	FILE *f;
	int ret = -ENOENT;

	snprintf(path, sizeof(path), "/proc/%d/cgroup", pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "0::", 3) != 0)
			continue;
		line[strcspn(line, "\n")] = 0;
		if (strlen(line + 3) >= outlen) {
			ret = -ENAMETOOLONG;
			break;
		}
		snprintf(out, outlen, "%s", line + 3);
		ret = 0;
		break;
	}
	fclose(f);
	return ret;
}

int ag_no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf, (void)size, (void)rwflag, (void)u;
	return -1;
}

bool owner_ok(uid_t uid)
{
	return uid == 0 || uid == geteuid();
}

int fsync_parent(const char *path)
{
	char d[4200];
	const char *slash = strrchr(path, '/');
	size_t n = slash ? (size_t)(slash - path) : 0;
	int fd, err = 0;

	if (n >= sizeof(d))
		return -ENAMETOOLONG;
	if (!slash)
		snprintf(d, sizeof(d), ".");
	else if (!n)
		snprintf(d, sizeof(d), "/");
	else {
		memcpy(d, path, n);
		d[n] = 0;
	}
	if ((fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return -errno;
	if (fsync(fd))
		err = -errno;
	close(fd);
	return err;
}

int path_trusted(const char *path, char *why, size_t whylen)
{
	char dir[PATH_MAX] = "/", rest[2 * PATH_MAX], child[PATH_MAX + NAME_MAX + 2];
	int links = 0;

	if (!path || path[0] != '/') {
		snprintf(why, whylen, "'%s' is not an absolute path", path ? path : "");
		return -EINVAL;
	}
	if (snprintf(rest, sizeof(rest), "%s", path) >= (int)sizeof(rest)) {
		snprintf(why, whylen, "path too long");
		return -ENAMETOOLONG;
	}
	for (;;) {
		char *p = rest, name[NAME_MAX + 1];
		struct stat ds, cs;
		size_t n;

		while (*p == '/')
			p++;
		if (!*p)
			return 0;   /* the path names a directory: the open will say so */
		n = strcspn(p, "/");
		if (n > NAME_MAX) {
			snprintf(why, whylen, "a name in '%s' is too long", path);
			return -ENAMETOOLONG;
		}
		memcpy(name, p, n);
		name[n] = 0;
		memmove(rest, p + n, strlen(p + n) + 1);
		if (strcmp(name, ".") == 0)
			continue;
		if (strcmp(name, "..") == 0) {
			char *slash = strrchr(dir, '/');

			if (slash && slash != dir)
				*slash = 0;
			else
				snprintf(dir, sizeof(dir), "/");
			continue;
		}
		if (stat(dir, &ds) < 0) {
			int err = errno;

			snprintf(why, whylen, "'%s': %s", dir, strerror(err));
			return -err;
		}
		if (snprintf(child, sizeof(child), "%s%s%s", dir, strcmp(dir, "/") ? "/" : "", name) >=
		    (int)sizeof(child) - 1 || strlen(child) >= PATH_MAX) {
			snprintf(why, whylen, "path too long");
			return -ENAMETOOLONG;
		}
		bool dir_safe = owner_ok(ds.st_uid) && !(ds.st_mode & S_IWOTH) &&
				(!(ds.st_mode & S_IWGRP) || ds.st_gid == 0);
		if (lstat(child, &cs) < 0) {
			int err = errno;

			if (dir_safe || err != ENOENT) {
				snprintf(why, whylen, "'%s': %s", child, strerror(err));
				return -err;
			}
			snprintf(why, whylen, "'%s' does not exist, and others may create it in '%s'", child, dir);
			return -EPERM;
		}
		if (!dir_safe && !((ds.st_mode & S_ISVTX) && owner_ok(ds.st_uid) && owner_ok(cs.st_uid))) {
			snprintf(why, whylen, "directory '%s' (owner uid %u, mode %04o) may be changed by "
				 "others than root: '%s' could be swapped for another file", dir,
				 (unsigned)ds.st_uid, (unsigned)(ds.st_mode & 07777), child);
			return -EPERM;
		}
		if (S_ISLNK(cs.st_mode)) {
			char target[PATH_MAX], tmp[2 * PATH_MAX];
			ssize_t tl = readlink(child, target, sizeof(target) - 1);

			if (++links > 40) {
				snprintf(why, whylen, "'%s': too many symbolic links", path);
				return -ELOOP;
			}
			if (tl < 0) {
				int err = errno;

				snprintf(why, whylen, "'%s': %s", child, strerror(err));
				return -err;
			}
			target[tl] = 0;
			if (snprintf(tmp, sizeof(tmp), "%s%s", target, rest) >= (int)sizeof(tmp)) {
				snprintf(why, whylen, "path too long");
				return -ENAMETOOLONG;
			}
			memcpy(rest, tmp, strlen(tmp) + 1);
			if (target[0] == '/')
				snprintf(dir, sizeof(dir), "/");
			continue;
		}
		snprintf(dir, sizeof(dir), "%s", child);
	}
}

int private_dir(const char *dir, char *why, size_t whylen)
{
	struct stat st;
	int fd, err;

	if ((err = mkdir_p(dir, 0700))) {
		snprintf(why, whylen, "'%s': %s", dir, strerror(-err));
		return err;
	}
	if ((err = path_trusted(dir, why, whylen)) < 0)
		return err;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		snprintf(why, whylen, "'%s': %s", dir, err == -ELOOP || err == -ENOTDIR ?
			 "not a directory (a symbolic link?)" : strerror(-err));
		return err;
	}
	if (fstat(fd, &st) < 0) {
		err = -errno;
		snprintf(why, whylen, "'%s': %s", dir, strerror(-err));
	} else if (!owner_ok(st.st_uid) || (st.st_mode & (S_IWGRP | S_IWOTH))) {
		snprintf(why, whylen, "directory '%s' (owner uid %u, mode %04o) may be written by others "
			 "than root", dir, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
		err = -EPERM;
	} else if ((st.st_mode & 07777) != 0700 && fchmod(fd, 0700) < 0) {
		err = -errno;
		snprintf(why, whylen, "'%s': %s", dir, strerror(-err));
	}
	close(fd);
	return err;
}

int secret_open(const char *path, char *why, size_t whylen)
{
	struct stat st;
	int fd, err = path_trusted(path, why, whylen);

	if (err < 0)
		return err;
	/* O_NONBLOCK: a FIFO put in its place must not hang the caller */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		err = -errno;
		snprintf(why, whylen, "'%s': %s", path, strerror(-err));
		return err;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(why, whylen, "'%s' is not a regular file", path);
		close(fd);
		return -EINVAL;
	}
	if (!owner_ok(st.st_uid) || (st.st_mode & S_IWOTH) || ((st.st_mode & S_IWGRP) && st.st_gid != 0)) {
		snprintf(why, whylen, "'%s' (owner uid %u, mode %04o) may be written by others than root",
			 path, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
		close(fd);
		return -EPERM;
	}
	return fd;
}

char *secret_read(const char *path, size_t max, size_t *len, mode_t *mode, char *why, size_t whylen)
{
	int fd = secret_open(path, why, whylen);
	struct stat st;
	size_t n = 0;
	char *buf;

	if (fd < 0) {
		errno = -fd;
		return NULL;
	}
	if (mode)
		*mode = fstat(fd, &st) == 0 ? st.st_mode : 0;
	/* one buffer of the bound, never grown: no copy of the secret is
	 * left behind in memory a realloc gave back */
	if (!(buf = malloc(max + 1))) {
		snprintf(why, whylen, "out of memory");
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	for (;;) {
		ssize_t r = read(fd, buf + n, max + 1 - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 || n + (size_t)r > max || (r == 0 && n == 0)) {
			int err = r < 0 ? errno : r ? EFBIG : ENODATA;

			snprintf(why, whylen, "'%s': %s", path, err == EFBIG ? "larger than expected" :
				 err == ENODATA ? "empty" : strerror(err));
			explicit_bzero(buf, max + 1);
			free(buf);
			close(fd);
			errno = err;
			return NULL;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;   /* the newline an editor or echo leaves */
	buf[n] = 0;
	if (n == 0 || memchr(buf, '\0', n)) {
		snprintf(why, whylen, "'%s': %s", path, n ? "holds a NUL byte" : "empty");
		explicit_bzero(buf, max + 1);
		free(buf);
		errno = n ? EINVAL : ENODATA;
		return NULL;
	}
	*len = n;
	return buf;
}

const char *memmem_last(const char *hay, size_t len, const char *needle, size_t nlen)
{
	const char *hit = NULL;

	if (!nlen)
		return NULL;
	for (const char *q = hay; (q = memmem(q, len - (size_t)(q - hay), needle, nlen)); q += nlen)
		hit = q;
	return hit;
}

char *u64_dec(char *end, uint64_t v)
{
	do
		*--end = (char)('0' + v % 10);
	while (v /= 10);
	return end;
}

char *str_copy(char *dst, size_t cap, const char *src)
{
	size_t n = strnlen(src, cap - 1);

	memcpy(dst, src, n);
	dst[n] = 0;
	return dst;
}
