/* SPDX-License-Identifier: Apache-2.0 */
/*
 * audit_bench: sustained audit events per second through the real pipeline
 * (event builder -> spool -> sink thread -> destination, acknowledged).
 *
 *   build/audit_bench file [N]      into the file sink
 *   build/audit_bench spool [N]     into the spool alone (no sink): the cost
 *                                   of building and spooling an event
 *   build/audit_bench rsyslog [N]   into rsyslogd over plain TCP (started
 *                                   here on a free loopback port, writing
 *                                   to a file in a temp dir)
 *
 * Build and run (from the repository root, after `make`):
 *   cc -O2 -g -D_GNU_SOURCE -Iuserspace -Ibuild -Ibpf bench/audit_bench.c \
 *      $(ls build/*.o | grep -v -e main.o -e bpf.o) -o build/audit_bench \
 *      -lbpf -lelf -lz -lyaml -ljansson -lcurl -lssl -lcrypto -lresolv -lcap \
 *      -lpthread -lpg_query -lpcre2-8 -lrelp
 *   taskset -c 0 build/audit_bench file 500000      # one core
 * AUDIT_BENCH_KEEP=1 keeps the temp dir (spool, sink output) and prints it.
 * The temp dir is made in $TMPDIR (default /tmp): TMPDIR=/dev/shm puts the
 * spool and the sink's file on tmpfs, which shows what the filesystem's
 * write path costs.
 *
 * Each event is a Network Activity "Open" with the same agent context,
 * endpoints and verdict the enforcer writes (about 1.3 KiB of JSON),
 * committed the way an enforcer worker commits: deferred during a pass and
 * handed on after it, with the worker loop's periodic audit work (the
 * checkpoint timer and the urgency check that gives the spool and sink
 * threads their share of a busy CPU) every 4,096 events. The
 * clock stops when the sink's cursor (spool/cursor-*) has passed the last
 * event, i.e. when the destination acknowledged everything. The CPU time
 * each thread spent meanwhile is printed per event (main = building and
 * committing; then the spool thread, the chain-head saver, the sink): on a
 * shared machine it moves less than events/s.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "policy.h"
#include "util.h"

#define PASS 32   /* events a worker commits in one pass (see the emit loop) */

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st, (void)type, (void)ftw;
	remove(path);
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The path of the sink's cursor file (spool/<prefix>-<id>), found once:
 * the polling loop below then reads one small file, not the directory. */
static int cursor_path(const char *spool, const char *prefix, char *out, size_t len)
{
	DIR *d = opendir(spool);
	struct dirent *de;
	int found = -1;

	while (d && found && (de = readdir(d)))
		if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
			found = (size_t)snprintf(out, len, "%s/%s", spool, de->d_name) < len ? 0 : -1;
	if (d)
		closedir(d);
	return found;
}

static uint64_t cursor_at(const char *path)
{
	char txt[32] = "";
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? pread(fd, txt, sizeof(txt) - 1, 0) : -1;

	if (fd >= 0)
		close(fd);
	return n > 0 ? strtoull(txt, NULL, 10) : 0;
}

/* CPU time of each of our threads (ns, /proc/self/task/<tid>/schedstat),
 * in tid order: main, then the threads audit_open() started (the spool
 * thread, the chain-head saver, one per sink). */
#define MAX_THREADS 16
struct cpu_snap {
	int n;
	pid_t tid[MAX_THREADS];
	uint64_t ns[MAX_THREADS];
};

static int cmp_pid(const void *a, const void *b)
{
	pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;

	return x < y ? -1 : x > y;
}

static void cpu_snap(struct cpu_snap *c)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;

	c->n = 0;
	while (d && c->n < MAX_THREADS && (de = readdir(d)))
		if (de->d_name[0] != '.')
			c->tid[c->n++] = atoi(de->d_name);
	if (d)
		closedir(d);
	qsort(c->tid, c->n, sizeof(c->tid[0]), cmp_pid);
	for (int i = 0; i < c->n; i++) {
		char p[64];
		FILE *f;

		snprintf(p, sizeof(p), "/proc/self/task/%d/schedstat", c->tid[i]);
		c->ns[i] = 0;
		if ((f = fopen(p, "r"))) {
			if (fscanf(f, "%" SCNu64, &c->ns[i]) != 1)
				c->ns[i] = 0;
			fclose(f);
		}
	}
}

/* The core's idle and iowait time (ns) from /proc/stat: on one core, the
 * wall clock the threads did not use was either idle (the pipeline waited,
 * on the disk or a tick) or taken by other processes. */
static uint64_t core_idle_ns(int cpu)
{
	char want[16], line[256];
	uint64_t v[8] = { 0 };
	FILE *f = fopen("/proc/stat", "r");

	snprintf(want, sizeof(want), "cpu%d ", cpu);
	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, want, strlen(want)) == 0) {
			sscanf(line + strlen(want), "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
			       " %" SCNu64, &v[0], &v[1], &v[2], &v[3], &v[4]);
			break;
		}
	if (f)
		fclose(f);
	return (v[3] + v[4]) * (1000000000ull / sysconf(_SC_CLK_TCK));
}

static uint64_t cpu_of(const struct cpu_snap *c, pid_t tid)
{
	for (int i = 0; i < c->n; i++)
		if (c->tid[i] == tid)
			return c->ns[i];
	return 0;
}

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	bind(fd, (struct sockaddr *)&a, sizeof(a));
	getsockname(fd, (struct sockaddr *)&a, &l);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static pid_t start_rsyslog(const char *dir, int port)
{
	char conf[4200], pid[4200], work[4200];
	FILE *f;
	pid_t p;

	snprintf(work, sizeof(work), "%s/rs-work", dir);
	mkdir_p(work, 0700);
	snprintf(conf, sizeof(conf), "%s/rsyslog.conf", dir);
	snprintf(pid, sizeof(pid), "%s/rsyslogd.pid", dir);
	if (!(f = fopen(conf, "w")))
		return -1;
	fprintf(f, "global(workDirectory=\"%s\" maxMessageSize=\"64k\")\n"
		"module(load=\"imtcp\")\n"
		"template(name=\"raw\" type=\"string\" string=\"%%rawmsg%%\\n\")\n"
		"input(type=\"imtcp\" port=\"%d\" address=\"127.0.0.1\" ruleset=\"r\")\n"
		"ruleset(name=\"r\") { action(type=\"omfile\" file=\"%s/rsyslog.out\" template=\"raw\") }\n",
		work, port, dir);
	fclose(f);
	if ((p = fork()) == 0) {
		execl("/usr/sbin/rsyslogd", "rsyslogd", "-n", "-f", conf, "-i", pid, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100; i++) {   /* wait for the port */
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		int ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;

		close(fd);
		if (ok)
			break;
		usleep(50000);
	}
	return p;
}

/* The event the enforcer writes most: a connection's Open, built the way
 * enforcer_conn_event() builds it (audit_begin and the writer). */
static struct audit_w *sample_event(uint64_t i)
{
	static const uint8_t dst[16] = { [10] = 0xff, [11] = 0xff, 127, 0, 0, 1 };
	struct audit_agent a = { .name = "agent-a", .cgroup = "/agentgate/agent-a", .pid = 4242,
				 .tid = 4243, .uid = 1000, .comm = "python3", .cgroup_id = 8834 };
	struct audit_w *w = audit_begin(4001, 1, "Open");
	char ip[64], cookie[24];

	audit_w_agent(w, &a);
	addr_str(dst, ip, sizeof(ip));
	aobj_open(&w->top, "src_endpoint");
	aobj_str(&w->top, "ip", ip);
	aobj_int(&w->top, "port", (int)(30000 + i % 30000));
	aobj_close(&w->top);
	aobj_open(&w->top, "dst_endpoint");
	aobj_str(&w->top, "ip", ip);
	aobj_int(&w->top, "port", 5432);
	aobj_close(&w->top);
	snprintf(cookie, sizeof(cookie), "%llu", (unsigned long long)i);
	aobj_open(&w->top, "connection_info");
	aobj_str(&w->top, "protocol_name", "tcp");
	aobj_int(&w->top, "protocol_num", 6);
	aobj_int(&w->top, "direction_id", 2);
	aobj_str(&w->top, "direction", "Outbound");
	aobj_str(&w->top, "uid", cookie);
	aobj_close(&w->top);
	aobj_str(&w->um, "target", "db");
	aobj_str(&w->um, "module", "postgres");
	audit_w_verdict(w, true, false, "role 'r' rule 1 (line 12)", NULL);
	return w;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "file";
	uint64_t n = argc > 2 ? strtoull(argv[2], NULL, 10) : 300000;
	const char *tmp = getenv("TMPDIR");
	char dir[4096], path[4200], spool[4200], addr[64];
	struct policy_sink sink = { 0 };
	struct policy p = { .path = "bench.yaml" };
	pid_t rs = 0;
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	snprintf(dir, sizeof(dir), "%s/agentgate-audit-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		fprintf(stderr, "audit_bench: mkdtemp %s: %s\n", dir, strerror(errno));
		return 1;
	}
	snprintf(p.hash, sizeof(p.hash), "%064d", 0);
	snprintf(spool, sizeof(spool), "%s/spool", dir);
	if (strcmp(mode, "file") == 0) {
		snprintf(path, sizeof(path), "%s/audit.jsonl", dir);
		sink.type = SINK_FILE;
		sink.path = path;
	} else if (strcmp(mode, "rsyslog") == 0) {
		int port = free_port();

		if ((rs = start_rsyslog(dir, port)) <= 0)
			return 1;
		snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
		sink.type = SINK_SYSLOG;
		sink.address = addr;
		sink.transport = "tcp";
	} else if (strcmp(mode, "spool") == 0) {
		sink.type = SINK_FILE;   /* unused: no sink, the spool alone */
	} else {
		fprintf(stderr, "usage: audit_bench file|rsyslog|spool [N]\n");
		return 2;
	}
	p.audit.sinks = &sink;
	p.audit.nsinks = strcmp(mode, "spool") ? 1 : 0;
	p.audit.spool_max_bytes = 8ull << 30;
	ag_log_level = LOG_LVL_WARN;
	if (audit_set_state_dir(dir) || audit_open(&p)) {
		fprintf(stderr, "audit_open failed\n");
		return 1;
	}
	/* the caller's share: building the event alone */
	double tb = now_s();
	for (uint64_t i = 0; i < n / 10; i++)
		audit_discard(sample_event(i));
	double build_us = (now_s() - tb) / (n / 10) * 1e6;
	uint64_t base = audit_sequence();
	struct cpu_snap cpu0, cpu1;

	int core = sched_getcpu();
	uint64_t idle0 = core_idle_ns(core);

	cpu_snap(&cpu0);
	double t0 = now_s();
	/* As an enforcer worker commits: its events are deferred while it
	 * serves a pass over its ready sockets and handed on after the pass
	 * (here, a pass of PASS events), and every so often its loop runs the
	 * enforcer's periodic work: checkpoints, and the urgency check that
	 * gives the spool and sink threads their share of a busy CPU. */
	audit_defer_begin();
	for (uint64_t i = 0; i < n; i++) {
		audit_commit(sample_event(i));
		if ((i + 1) % PASS == 0)
			audit_defer_flush();
		if ((i & 4095) == 0) {
			audit_flush();
			audit_urgency_tick();
		}
	}
	audit_defer_end();
	double t_emit = now_s(), t_done = t_emit, t_seq = t_emit;
	/* Committed events wait in the writer's queue until the spool thread's
	 * next tick stamps them: the last sequence is known once it stops
	 * moving (for more than two ticks), and the clock stops when the
	 * cursor first reached it. */
	uint64_t last = audit_sequence();
	char cpath[4400] = "";
	bool caught = false;

	for (;;) {
		uint64_t seq = audit_sequence(), c;
		double t = now_s();

		if (seq != last) {
			last = seq;
			t_seq = t;
			caught = false;
		}
		if (p.audit.nsinks && !cpath[0] &&
		    cursor_path(spool, strcmp(mode, "file") == 0 ? "cursor-file" : "cursor-syslog",
				cpath, sizeof(cpath)))
			cpath[0] = 0;
		/* spool mode: stamped and spooled is the end */
		c = !p.audit.nsinks ? seq : cpath[0] ? cursor_at(cpath) : 0;
		if (c >= last && !caught) {
			caught = true;
			t_done = t;
		}
		if (caught && last - base >= n && t - t_seq > 0.03)
			break;
		if (t - t0 > 300) {
			fprintf(stderr, "sink did not catch up\n");
			t_done = t;
			break;
		}
		usleep(2000);
	}
	cpu_snap(&cpu1);
	uint64_t idle = core_idle_ns(core) - idle0;
	double t_end = now_s();
	printf("audit_bench %s: %" PRIu64 " events (checkpoints included: %" PRIu64 ")\n", mode, n,
	       last - base);
	printf("  building one event (the caller's share): %.1f us\n", build_us);
	printf("  emitted into the spool: %.0f events/s\n", n / (t_emit - t0));
	if (p.audit.nsinks)
		printf("  acknowledged by the %s sink: %.0f events/s (%.2f s)\n", mode,
		       n / (t_done - t0), t_done - t0);
	else
		printf("  stamped and spooled: %.0f events/s (%.2f s)\n", n / (t_done - t0),
		       t_done - t0);
	/* CPU per event, noise-proof where wall clock is not (others share
	 * the core): the emitting loop, then the spool thread, ... */
	uint64_t total = 0;
	printf("  CPU per event (ns), by thread in start order:");
	for (int i = 0; i < cpu1.n; i++) {
		uint64_t d = cpu1.ns[i] - cpu_of(&cpu0, cpu1.tid[i]);

		total += d;
		printf(" %.0f", (double)d / n);
	}
	printf(" = %.0f ns (%.0f events per CPU second)\n", (double)total / n, n / (total / 1e9));
	if (sched_getcpu() == core)   /* pinned: the rest of the core's time */
		printf("  core %d meanwhile: idle %.0f ns per event, other processes %.0f ns\n", core,
		       (double)idle / n, ((t_end - t0) * 1e9 - (double)idle - (double)total) / n);
	audit_close();
	if (rs > 0) {
		kill(rs, SIGTERM);
		waitpid(rs, NULL, 0);
	}
	if (getenv("AUDIT_BENCH_KEEP")) {   /* to look at the spool and the sink's output */
		printf("  kept: %s\n", dir);
		return 0;
	}
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);   /* no shell: TMPDIR may hold anything */
	return 0;
}
