/* SPDX-License-Identifier: Apache-2.0 */
/* Small helpers shared by the enforcer and the CLI: logging, mount discovery,
 * address formatting, time. Library code returns -errno and does not log;
 * ag_log is for the outer layers that decide what to do. */
#ifndef AGENTGATE_UTIL_H
#define AGENTGATE_UTIL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define AG_VERSION "0.1.0"
#define AG_DEFAULT_STATE_DIR "/var/lib/agentgate"

enum ag_log_level { LOG_LVL_ERR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };
extern int ag_log_level;
void ag_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_err(...)   ag_log(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...)  ag_log(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...)  ag_log(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) ag_log(LOG_LVL_DEBUG, __VA_ARGS__)

/* src into dst[cap] (cap > 0), cut to cap - 1 bytes and NUL-terminated:
 * snprintf(dst, cap, "%s", src) without the format machinery, for copies
 * made on every request. Returns dst. */
char *str_copy(char *dst, size_t cap, const char *src);

/* v in decimal, written backwards so that it ends just before end (at most
 * 20 digits); returns its first digit. No snprintf: events and answers
 * carry numbers by the hundreds of thousands a second. */
char *u64_dec(char *end, uint64_t v);

/* Mount point of the first filesystem of type fstype ("cgroup2", "bpf") in
 * /proc/self/mountinfo, into out. 0, -ENOENT, or -errno. */
int find_mount(const char *fstype, char *out, size_t outlen);

/* Mounts bpffs at /sys/fs/bpf if no bpffs is mounted; returns its path. */
int ensure_bpffs(char *out, size_t outlen);

/* 16-byte (v4-mapped) address helpers. */
bool addr_is_v4mapped(const uint8_t a[16]);
/* 127.0.0.0/8 (v4-mapped) or ::1. */
bool addr_is_loopback(const uint8_t a[16]);
void addr_from_sockaddr(const struct sockaddr_storage *ss, uint8_t a[16], uint16_t *port);
/* Fills ss for connect(): AF_INET for v4-mapped, AF_INET6 otherwise. */
socklen_t addr_to_sockaddr(const uint8_t a[16], uint16_t port, struct sockaddr_storage *ss);
/* "1.2.3.4" or "2001:db8::1" (v4-mapped printed as IPv4). */
void addr_str(const uint8_t a[16], char *out, size_t outlen);

/* The enforcer's loopback address for family (127.0.0.1 as v4-mapped, or ::1). */
void addr_loopback(int family, uint8_t a[16]);
/* A non-blocking socket of type bound to the loopback address of family at
 * port (IPv6 sockets IPv6-only, SO_REUSEADDR; SO_REUSEPORT when reuseport).
 * Returns the fd or -errno; the caller listens. */
int loopback_socket(int family, int type, uint16_t port, bool reuseport);

uint64_t now_ms_realtime(void);
uint64_t now_ns_mono(void);
uint64_t now_ns_boot(void);
/* The calling thread's CPU time (ns): what work done for an agent costs it. */
uint64_t thread_cpu_ns(void);

/* pthread_cond_timedwait for at most ms, timed on CLOCK_MONOTONIC: a step
 * of the wall clock neither stretches nor cuts the wait. The caller holds
 * m; returns what pthread_cond_clockwait() returns (0, ETIMEDOUT). */
int cond_wait_ms(pthread_cond_t *c, pthread_mutex_t *m, uint64_t ms);

/* How a thread is scheduled (ag_thread_setup). */
enum ag_sched {
	AG_SCHED_NORMAL,   /* a worker: relays traffic someone waits for */
	AG_SCHED_BATCH,    /* its fair share, but its wake-ups do not preempt */
	AG_SCHED_IDLE,     /* only CPU time nothing else wants, until made urgent */
};

/* Names the calling thread ("ag-spool"; at most 15 bytes are kept) so that
 * top -H and perf tell the enforcer's threads apart, and sets its
 * scheduling class. Failures are ignored: both are hints. */
void ag_thread_setup(const char *name, enum ag_sched sched);

/* An AG_SCHED_IDLE thread (tid; 0: the caller) made urgent runs as
 * AG_SCHED_BATCH, with its fair share, until made calm again. */
void ag_thread_urgent(pid_t tid, bool urgent);

/*
 * A stamp of the files paths names (NULL entries skipped): each one's
 * device, inode, size and modification and change times, or that it could
 * not be stat()ed and why, hashed together. It changes when a file is
 * rewritten, replaced (a renamed-over file, a re-pointed symbolic link, as
 * cert-manager and Kubernetes secret volumes rotate them), appears or goes:
 * what was loaded from them (a TLS context) is then loaded again.
 */
uint64_t files_stamp(const char *const *paths, size_t n);

/* mkdir -p with mode; 0 or -errno. */
int mkdir_p(const char *path, mode_t mode);

/*
 * The most one write_all() call, or a read of the audit spool, moves per
 * system call. The
 * kernel copies a buffer into or out of the page cache without giving up
 * the CPU (these kernels preempt only on the way back to user space): one
 * 4 MiB write by the file sink held a CPU for 1.7 ms, and the agent's
 * traffic queued behind it set wrk's p99 (measured on 2 CPUs). 128 KiB is
 * some 40 us of copying.
 */
#define IO_CHUNK (128u << 10)

/* Writes a whole buffer to fd, IO_CHUNK at a time, retrying on EINTR and
 * short writes. 0 or -errno. */
int write_all(int fd, const void *buf, size_t len);

/* Reads a whole (small) file into a NUL-terminated malloc'd buffer. */
char *read_file(const char *path, size_t max, size_t *len_out);

/* The last occurrence of needle in hay[0, len), or NULL (memmem's mirror:
 * an audit line's own key follows any copy an agent's text put before it). */
const char *memmem_last(const char *hay, size_t len, const char *needle, size_t nlen);

/*
 * Can only root (or we) change what path names? Every name on the way,
 * symlinks followed (at most 40), must be looked up in a directory that
 * belongs to root or to our euid and that no one else may write (group
 * root may), or in a sticky directory such as /tmp where the entry itself
 * belongs to root or us (others cannot replace it there). Then nobody else
 * can point path at another file, before or after this check, and a file
 * read through it with our rights is one the policy's author chose, not
 * one an agent swapped in (a symlink to a file only root may read).
 * path must be absolute. 0; -ENOENT when a name does not exist (in a
 * trusted directory); -EPERM, -ELOOP or -errno otherwise, with why.
 */
int path_trusted(const char *path, char *why, size_t whylen);
/* A file's or directory's owner the enforcer trusts: root, or its own euid. */
bool owner_ok(uid_t uid);
/* fsync()s the directory that holds path (its parent; "." for a bare name),
 * so that a rename or a new name in it survives a power cut. 0 or -errno. */
int fsync_parent(const char *path);
/* Opens a secret the enforcer reads with root's rights (an upstream
 * password, an injected token, a client secret): only through a path no one
 * but root can re-point (path_trusted), only a regular file, and only one
 * no one else may write. The fd (O_RDONLY), or -errno with why. */
/* A directory of the enforcer's own (state, spool, recordings): made if
 * missing (0700), reached through a path only root can re-point, itself
 * not a symbolic link, owned by root (or the euid) and writable by no one
 * else; then mode 0700. 0, or -errno with why (a shared directory such as
 * /tmp is refused, not changed). */
int private_dir(const char *dir, char *why, size_t whylen);
int secret_open(const char *path, char *why, size_t whylen);
/* The whole of such a file (at most max bytes, trailing CR and LF removed;
 * NUL-terminated, *len without it), or NULL with errno and why; the caller
 * wipes and frees its max + 1 bytes. An empty file (ENODATA) or one holding
 * a NUL byte (EINVAL) is an error. mode (may be NULL): the file's st_mode. */
char *secret_read(const char *path, size_t max, size_t *len, mode_t *mode, char *why, size_t whylen);

/* An OpenSSL pem_password_cb that gives no pass phrase: an encrypted key
 * fails to load, where OpenSSL's default would ask for one on the terminal
 * and stop the thread that loads it (the main loop, at a token refresh). */
int ag_no_passphrase(char *buf, int size, int rwflag, void *u);

/* Strict decimal parse of [min,max]; 0 or -EINVAL. */
int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* A test knob: the environment variable name, from min to max, or def;
 * read once into *cache (def must not be 0). The tests shorten the
 * enforcer's fixed timeouts with these, to check them in seconds. */
uint64_t env_u64(const char *name, uint64_t min, uint64_t max, uint64_t def, _Atomic uint64_t *cache);
/* env_u64 in milliseconds, 100 to 86,400,000. */
uint64_t env_ms(const char *name, uint64_t def, _Atomic uint64_t *cache);

/* The cgroup v2 path ("/agentgate/x") of a process, from /proc/PID/cgroup. */
int proc_cgroup2_path(int pid, char *out, size_t outlen);

#endif
