/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ident_driver: drives one agent's identity (userspace/ident.c) the way the
 * enforcer's main loop does, for tests/integration/test_ident.py.
 *
 *   ident_driver POLICY AGENT STATE_DIR SECONDS [TICK_MS]
 *
 * Loads POLICY, creates the ident_agent for AGENT, ticks it on the real
 * monotonic clock every TICK_MS (default 1000) for SECONDS, and prints the
 * principal as one JSON line at start and on every change. The token itself
 * is never printed: "token" is only whether one is held. Exit 0, or 1 when
 * the policy or the identity cannot be loaded (reason on stderr).
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ident.h"
#include "policy.h"
#include "util.h"

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void print_principal(const struct ident_agent *a, const char *agent, uint64_t t0)
{
	struct ident_principal p;
	json_t *o, *g;
	char *text;

	ident_agent_principal(a, &p);
	g = json_array();
	for (size_t i = 0; i < p.ngroups; i++)
		json_array_append_new(g, json_string(p.groups[i]));
	o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:b, s:o, s:b, s:s, s:s, s:b, s:b, s:I}",
		      "agent", agent, "source", p.source, "iss", p.iss, "sub", p.sub,
		      "client_id", p.client_id, "exp", (json_int_t)p.exp, "verified", p.verified,
		      "groups", g, "groups_truncated", p.groups_truncated, "reason", p.reason,
		      "warning", p.warning, "secret_file_exposed", p.secret_file_exposed,
		      "token", ident_agent_token(a) != NULL, "t_ms", (json_int_t)(mono_ms() - t0));
	text = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(o);
	if (text) {
		printf("%s\n", text);
		fflush(stdout);
		free(text);
	}
}

int main(int argc, char **argv)
{
	struct policy_errors errs = { 0 };
	struct ident_agent *a;
	struct policy *p;
	uint64_t secs, tick_ms = 1000, t0, end;
	char why[512], line[600];
	int idx;

	if (argc < 5 || argc > 6 || parse_u64(argv[4], 0, 3600, &secs) < 0 ||
	    (argc == 6 && parse_u64(argv[5], 10, 60000, &tick_ms) < 0)) {
		fprintf(stderr, "usage: ident_driver POLICY AGENT STATE_DIR SECONDS [TICK_MS]\n");
		return 2;
	}
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	p = policy_load_file(argv[1], &errs);
	if (!p) {
		for (int i = 0; i < errs.n; i++) {
			policy_error_format(&errs.e[i], line, sizeof(line));
			fprintf(stderr, "ident_driver: %s\n", line);
		}
		return 1;
	}
	idx = policy_agent_index(p, argv[2]);
	if (idx < 0) {
		fprintf(stderr, "ident_driver: no agent '%s'\n", argv[2]);
		policy_free(p);
		return 1;
	}
	a = ident_agent_new(argv[2], &p->agents[idx].identity, argv[3], why, sizeof(why));
	/* The agent keeps its own copies: the policy may go (a reload). */
	policy_free(p);
	if (!a) {
		fprintf(stderr, "ident_driver: agent '%s': %s\n", argv[2], why);
		return 1;
	}
	t0 = mono_ms();
	end = t0 + secs * 1000;
	print_principal(a, argv[2], t0);
	while (!stop) {
		uint64_t now = mono_ms();
		struct timespec ts;

		if (ident_agent_tick(a, now) > 0)
			print_principal(a, argv[2], t0);
		now = mono_ms();
		if (now >= end)
			break;
		ts.tv_sec = (time_t)(tick_ms / 1000);
		ts.tv_nsec = (long)(tick_ms % 1000) * 1000000;
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !stop)
			;
	}
	ident_agent_free(a);
	return 0;
}
