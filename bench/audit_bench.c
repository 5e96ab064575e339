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
 *
 * Each event is a Network Activity "Open" with the same agent context,
 * endpoints and verdict the enforcer writes (about 1 KiB of JSON). The
 * clock stops when the sink's cursor (spool/cursor-*) has passed the last
 * event, i.e. when the destination acknowledged everything.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "policy.h"
#include "util.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t cursor_of(const char *spool, const char *prefix)
{
	DIR *d = opendir(spool);
	struct dirent *de;
	uint64_t c = 0;

	while (d && (de = readdir(d))) {
		if (strncmp(de->d_name, prefix, strlen(prefix)))
			continue;
		char p[4400], txt[32] = "";
		snprintf(p, sizeof(p), "%s/%s", spool, de->d_name);
		FILE *f = fopen(p, "r");
		if (f) {
			if (fgets(txt, sizeof(txt), f))
				c = strtoull(txt, NULL, 10);
			fclose(f);
		}
	}
	if (d)
		closedir(d);
	return c;
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
	char dir[] = "/tmp/agentgate-audit-bench-XXXXXX", path[4200], spool[4200], addr[64];
	struct policy_sink sink = { 0 };
	struct policy p = { .path = "bench.yaml" };
	pid_t rs = 0;
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	if (!mkdtemp(dir))
		return 1;
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
	double t0 = now_s();
	for (uint64_t i = 0; i < n; i++) {
		audit_commit(sample_event(i));
		if ((i & 4095) == 0)
			audit_flush();
	}
	double t_emit = now_s();
	uint64_t last = audit_sequence();
	while (p.audit.nsinks && cursor_of(spool, strcmp(mode, "file") == 0 ? "cursor-file" : "cursor-syslog") < last) {
		if (now_s() - t0 > 300) {
			fprintf(stderr, "sink did not catch up\n");
			break;
		}
		usleep(2000);
	}
	double t_done = now_s();
	printf("audit_bench %s: %" PRIu64 " events (checkpoints included: %" PRIu64 ")\n", mode, n,
	       last - base);
	printf("  building one event (the caller's share): %.1f us\n", build_us);
	printf("  emitted into the spool: %.0f events/s\n", n / (t_emit - t0));
	printf("  acknowledged by the %s sink: %.0f events/s (%.2f s)\n", mode,
	       n / (t_done - t0), t_done - t0);
	audit_close();
	if (rs > 0) {
		kill(rs, SIGTERM);
		waitpid(rs, NULL, 0);
	}
	if (getenv("AUDIT_BENCH_KEEP")) {   /* to look at the spool and the sink's output */
		printf("  kept: %s\n", dir);
		return 0;
	}
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);
	return 0;
}
