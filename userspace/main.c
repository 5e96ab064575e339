/* SPDX-License-Identifier: Apache-2.0 */
/*
 * agentgate command line: a command table in the bpftool style. Global
 * options come first: --state-dir DIR (default /var/lib/agentgate, or
 * $AGENTGATE_STATE_DIR), -v. Exit codes: 0 ok, 1 failure, 2 usage,
 * 3 no enforcer running (status and commands that need one).
 */
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "cli.h"
#include "cli_audit.h"
#include "cli_token.h"
#include "enforcer.h"
#include "http_explain.h"
#include "loader.h"
#include "pg_explain.h"
#include "policy.h"
#include "util.h"

static const char *state_dir = AG_DEFAULT_STATE_DIR;

static int usage(FILE *f)
{
	fprintf(f,
		"usage: agentgate [--state-dir DIR] [-v] COMMAND [ARGS]\n"
		"\n"
		"  run [--policy FILE]                      the enforcer, in the foreground\n"
		"  exec --agent NAME [--user U] -- CMD...   run CMD inside the agent's cgroup\n"
		"  attach --agent NAME --cgroup PATH        enforce on an existing cgroup\n"
		"  detach --agent NAME | --all              remove pins (works without an enforcer)\n"
		"  status [--json]                          agents, targets, counters, limits (exit 3: not running)\n"
		"  reload                                   re-read the policy without dropping sessions\n"
		"  policy check FILE...                     validate; file:line:col errors, exit 1\n"
		"  policy explain [--policy FILE] --agent NAME --target T [REQUEST]\n"
		"  audit tail [-f] [--json] [-n N]          recent audit events\n"
		"  audit verify FILE [--pubkey FILE] [--strict]   check the hash chain and signed checkpoints\n"
		"  replay SESSION [--dir DIR] [--raw]       a recorded session, in order, with timestamps\n"
		"  token verify --agent NAME [--policy FILE] TOKEN|-   verify a token as the enforcer would\n"
		"  version\n"
		"\n"
		"  approvals (list, approve, deny) comes with the approval mechanism: not in this build\n");
	return f == stderr ? 2 : 0;
}

/* Exit 3 only when no enforcer runs; a socket we may not open is an error. */
static int not_running(void)
{
	if (errno == EACCES || errno == EPERM) {
		fprintf(stderr, "agentgate: cannot reach the enforcer of '%s': %s (run as root, and not from an "
			"agent cgroup: the kernel refuses agents AF_UNIX addresses their unix_sockets does not "
			"name)\n", state_dir, strerror(errno));
		return 1;
	}
	fprintf(stderr, "agentgate: no enforcer is running for state directory '%s'\n", state_dir);
	return 3;
}

static int cmd_run(int argc, char **argv)
{
	const char *policy = NULL;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--policy") == 0 && i + 1 < argc)
			policy = argv[++i];
		else if (strcmp(argv[i], "--state-dir") == 0 && i + 1 < argc)
			state_dir = argv[++i];
		else
			return usage(stderr);
	}
	return enforcer_run(policy, state_dir);
}

static void print_status(json_t *st)
{
	json_t *a, *t;
	size_t i;

	printf("agentgate %s: running (pid %lld, up %llds)\n", json_string_value(json_object_get(st, "version")),
	       json_integer_value(json_object_get(st, "pid")),
	       json_integer_value(json_object_get(st, "uptime_s")));
	json_t *pol = json_object_get(st, "policy");
	printf("policy: %s (%s mode, sha256 %.12s)\n", json_string_value(json_object_get(pol, "path")),
	       json_string_value(json_object_get(pol, "mode")),
	       json_string_value(json_object_get(pol, "hash")));
	printf("state: %s  pins: %s  cgroup2: %s\n", json_string_value(json_object_get(st, "state_dir")),
	       json_string_value(json_object_get(st, "pin_root")),
	       json_string_value(json_object_get(st, "cgroup2")));
	printf("\nagents:\n");
	json_array_foreach(json_object_get(st, "agents"), i, a)
		printf("  %-20s %-40s %s, %lld programs, %lld/%lld connections, %lld refused, %lld denied in kernel\n",
		       json_string_value(json_object_get(a, "name")),
		       json_string_value(json_object_get(a, "cgroup")),
		       json_is_true(json_object_get(a, "attached")) ? "attached" : "NOT ATTACHED",
		       json_integer_value(json_object_get(a, "programs")),
		       json_integer_value(json_object_get(a, "connections")),
		       json_integer_value(json_object_get(a, "max_connections")),
		       json_integer_value(json_object_get(a, "refused")),
		       json_integer_value(json_object_get(a, "denied_in_kernel")));
	printf("\ntargets:\n");
	json_array_foreach(json_object_get(st, "targets"), i, t)
		printf("  %-20s %-10s %-30s %s\n", json_string_value(json_object_get(t, "name")),
		       json_string_value(json_object_get(t, "protocol")),
		       json_string_value(json_object_get(t, "address")),
		       json_string_value(json_object_get(t, "module")));
	json_t *x = json_object_get(st, "secret_files_exposed");

	if (json_array_size(x))
		printf("\nsecret files group or others may access (still used; make them 0600):\n");
	json_array_foreach(x, i, t) {
		if (json_is_string(json_object_get(t, "target")))
			printf("  target '%s'", json_string_value(json_object_get(t, "target")));
		else
			printf("  audit sink %lld (%s)", json_integer_value(json_object_get(t, "sink")),
			       json_string_value(json_object_get(t, "type")));
		printf(": %s '%s' (mode %s)\n", json_string_value(json_object_get(t, "field")),
		       json_string_value(json_object_get(t, "path")), json_string_value(json_object_get(t, "mode")));
	}
	printf("\ncounters:");
	const char *k;
	json_t *v;
	json_object_foreach(json_object_get(st, "counters"), k, v)
		printf(" %s=%lld", k, json_integer_value(v));
	json_t *f = json_object_get(st, "kernel_features");
	printf("\nkernel features: set_retval=%s connect_unix=%s lsm=%s\n",
	       json_is_true(json_object_get(f, "set_retval")) ? "yes" : "no",
	       json_is_true(json_object_get(f, "connect_unix")) ? "yes" : "no",
	       json_is_true(json_object_get(f, "lsm")) ? "yes" : "no");
	json_t *bal = json_object_get(st, "balance");
	printf("workers: %lld, new connections to the least busy (",
	       json_integer_value(json_object_get(json_object_get(st, "listeners"), "workers")));
	if (json_is_string(json_object_get(bal, "reason")))
		printf("not in use: %s; the kernel's hash instead", json_string_value(json_object_get(bal, "reason")));
	else
		printf("in use");
	printf("), connections per worker:");
	json_array_foreach(json_object_get(bal, "worker_connections"), i, t)
		printf(" %lld", json_integer_value(t));
	printf("\n");
	json_t *bp = json_object_get(st, "busy_poll");
	if (json_integer_value(json_object_get(bp, "us")))
		printf("busy polling: %lld us before a worker sleeps (AGENTGATE_BUSY_POLL_US), %lld events caught\n",
		       json_integer_value(json_object_get(bp, "us")), json_integer_value(json_object_get(bp, "caught")));
	printf("\nknown limits:\n");
	json_array_foreach(json_object_get(st, "known_limits"), i, t)
		printf("  - %s\n", json_string_value(t));
}

static int cmd_status(int argc, char **argv)
{
	bool as_json = argc > 0 && strcmp(argv[0], "--json") == 0;
	json_t *req = json_pack("{s:s}", "cmd", "status");
	json_t *st = admin_call(state_dir, req);

	json_decref(req);
	if (!st)
		return not_running();
	if (!json_is_true(json_object_get(st, "ok"))) {
		fprintf(stderr, "agentgate: status: %s\n", json_string_value(json_object_get(st, "error")));
		json_decref(st);
		return 1;
	}
	json_object_del(st, "ok");
	if (as_json) {
		/* ASCII: principals carry claims that users choose (a CI
		 * branch in sub), which must not reach a terminal as controls */
		json_dumpf(st, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
		printf("\n");
	} else {
		print_status(st);
	}
	json_decref(st);
	return 0;
}

/* agentgate reload: the running enforcer re-reads its policy file. Exit 0
 * when the new policy (or the unchanged one) is in force, 1 when it was
 * refused (errors on stderr; the running policy stays), 3 with no enforcer. */
static int cmd_reload(int argc, char **argv)
{
	json_t *req, *ans, *e;
	size_t i;

	if (argc > 0)
		return usage(stderr);
	req = json_pack("{s:s}", "cmd", "reload");
	ans = admin_call(state_dir, req);
	json_decref(req);
	if (!ans)
		return not_running();
	if (!json_is_true(json_object_get(ans, "ok"))) {
		json_array_foreach(json_object_get(ans, "errors"), i, e)
			fprintf(stderr, "%s\n", json_string_value(e));
		fprintf(stderr, "agentgate: %s\n", json_string_value(json_object_get(ans, "error")));
		json_decref(ans);
		return 1;
	}
	printf("%s\n", json_string_value(json_object_get(ans, "message")));
	json_decref(ans);
	return 0;
}

static void print_policy_warning(void *file, const char *msg)
{
	fprintf(stderr, "%s: warning: %s\n", (const char *)file, msg);
}

static int cmd_policy_check(int argc, char **argv)
{
	int bad = 0;

	if (argc < 1)
		return usage(stderr);
	for (int i = 0; i < argc; i++) {
		struct policy_errors errs = { 0 };
		struct policy *p = policy_load_file(argv[i], &errs);

		if (!p) {
			char line[600];

			for (int e = 0; e < errs.n; e++) {
				policy_error_format(&errs.e[e], line, sizeof(line));
				fprintf(stderr, "%s\n", line);
			}
			if (errs.total > errs.n)
				fprintf(stderr, "%s: %d more errors\n", argv[i], errs.total - errs.n);
			bad = 1;
			continue;
		}
		printf("%s: ok (%zu agents, %zu targets, %zu roles, sha256 %.12s)\n", argv[i], p->nagents,
		       p->ntargets, p->nroles, p->hash);
		policy_warnings(p, print_policy_warning, argv[i]);
		policy_free(p);
	}
	return bad;
}

static int cmd_policy_explain(int argc, char **argv)
{
	const char *file = NULL, *agent = NULL, *target = NULL, *request = NULL;
	struct policy_errors errs = { 0 };
	struct policy *p;
	int ai, ti, ret;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--policy") == 0 && i + 1 < argc)
			file = argv[++i];
		else if (strcmp(argv[i], "--agent") == 0 && i + 1 < argc)
			agent = argv[++i];
		else if (strcmp(argv[i], "--target") == 0 && i + 1 < argc)
			target = argv[++i];
		else if (!request)
			request = argv[i];
		else
			return usage(stderr);
	}
	if (!agent || !target)
		return usage(stderr);
	if (!file)
		file = access("/etc/agentgate/policy.yaml", F_OK) == 0 ? "/etc/agentgate/policy.yaml" : NULL;
	if (!file) {
		fprintf(stderr, "agentgate: policy explain: give --policy FILE\n");
		return 2;
	}
	p = policy_load_file(file, &errs);
	if (!p) {
		char line[600];

		policy_error_format(&errs.e[0], line, sizeof(line));
		fprintf(stderr, "%s\n", line);
		return 1;
	}
	ai = policy_agent_index(p, agent);
	ti = policy_target_index(p, target);
	if (ai < 0 || ti < 0) {
		fprintf(stderr, "agentgate: policy explain: no %s '%s' in %s\n", ai < 0 ? "agent" : "target",
			ai < 0 ? agent : target, file);
		policy_free(p);
		return 1;
	}
	if (p->agents[ai].may_target[ti]) {
		const struct policy_rule *r = p->agents[ai].target_rule[ti];

		printf("allow: connect to target '%s' (role '%s', rule %d, line %d)\n", target, r->role,
		       r->index + 1, r->line);
		ret = 0;
		if ((p->targets[ti].proto == PROTO_HTTP || p->targets[ti].proto == PROTO_KUBERNETES) && request)
			ret = http_explain(p, ai, ti, request, stdout);
		else if (p->targets[ti].proto == PROTO_POSTGRES && request)
			ret = pg_explain(p, ai, ti, request, stdout) < 0 ? 2 : 0;
	} else {
		bool by_claims = false;

		/* A binding by claims may still grant it, depending on the token. */
		for (size_t b = 0; b < p->nbindings; b++) {
			const struct policy_role *role = &p->roles[p->bindings[b].role_idx];

			for (size_t r = 0; p->agents[ai].identity.source != IDENT_LOCAL &&
					   p->bindings[b].nclaims && r < role->nrules; r++) {
				if (role->rules[r].target_idx != ti)
					continue;
				printf("%s: role '%s' (binding on line %d) allows target '%s' if the agent's "
				       "verified identity has", by_claims ? "or" : "depends on identity", role->name,
				       p->bindings[b].line, target);
				for (size_t k = 0; k < p->bindings[b].nclaims; k++)
					for (size_t v = 0; v < p->bindings[b].claim_values[k].n; v++)
						printf("%s %s=%s", k || v ? (v ? " or" : " and") : "",
						       p->bindings[b].claim_names[k], p->bindings[b].claim_values[k].v[v]);
				printf("\n");
				by_claims = true;
				break;
			}
		}
		if (!by_claims)
			printf("deny: no role bound to agent '%s' has a rule for target '%s'%s\n", agent, target,
			       p->mode == POLICY_OBSERVE ? " (observe mode: recorded, not enforced)" : "");
		ret = 0;
	}
	policy_free(p);
	return ret;
}

static int cmd_policy(int argc, char **argv)
{
	if (argc >= 1 && strcmp(argv[0], "check") == 0)
		return cmd_policy_check(argc - 1, argv + 1);
	if (argc >= 1 && strcmp(argv[0], "explain") == 0)
		return cmd_policy_explain(argc - 1, argv + 1);
	return usage(stderr);
}

/*
 * A string of an event, for a terminal: agents choose much of what events
 * quote (database, table, statement and portal names, host names), and a
 * carriage return, an escape sequence or a bidirectional override in them
 * would erase, forge or reorder lines on the operator's screen. Every byte
 * outside printable ASCII becomes \xNN, and \ and " are escaped.
 */
static void put_text(const char *s)
{
	if (!s) {
		fputs("-", stdout);
		return;
	}
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '\\' || *p == '"')
			printf("\\%c", *p);
		else if (*p >= 0x20 && *p < 0x7f)
			putchar(*p);
		else
			printf("\\x%02x", *p);
	}
}

static void print_event(const char *line, bool as_json)
{
	json_t *ev;

	if (as_json) {
		/* The line is valid JSON whose strings hold what agents sent,
		 * only U+0000-U+001F escaped: on a terminal, C1 controls (an
		 * 8-bit CSI is U+009B) and bidi overrides would act. There it
		 * is written again with every non-ASCII character as \uXXXX,
		 * the same JSON; into a pipe or file, the spooled bytes as they
		 * are (they are what the chain hashes). */
		bool tty = isatty(STDOUT_FILENO);
		char *ascii = NULL;

		if (tty && (ev = json_loads(line, 0, NULL))) {
			ascii = json_dumps(ev, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
			json_decref(ev);
		}
		printf("%s\n", ascii ? ascii : tty ? "{\"error\":\"unreadable line\"}" : line);
		free(ascii);
		return;
	}
	ev = json_loads(line, 0, NULL);
	if (!ev)
		return;
	json_t *um = json_object_get(ev, "unmapped");
	json_t *dst = json_object_get(ev, "dst_endpoint");
	json_t *q = json_object_get(ev, "query");
	printf("%lld #%lld ", json_integer_value(json_object_get(ev, "time")),
	       json_integer_value(json_object_get(json_object_get(ev, "metadata"), "sequence")));
	put_text(json_string_value(json_object_get(ev, "class_name")));
	fputs("/", stdout);
	put_text(json_string_value(json_object_get(ev, "activity_name")));
	fputs(" agent=", stdout);
	put_text(json_string_value(json_object_get(json_object_get(um, "agent"), "name")));
	fputs(" verdict=", stdout);
	put_text(json_string_value(json_object_get(um, "verdict")));
	if (dst) {
		fputs(" dst=", stdout);
		put_text(json_string_value(json_object_get(dst, "ip")));
		printf(":%lld", json_integer_value(json_object_get(dst, "port")));
	}
	if (q) {
		fputs(" query=", stdout);
		put_text(json_string_value(json_object_get(q, "hostname")));
	}
	if (json_object_get(um, "target")) {
		fputs(" target=", stdout);
		put_text(json_string_value(json_object_get(um, "target")));
	}
	if (json_object_get(um, "reason")) {
		fputs(" reason=\"", stdout);
		put_text(json_string_value(json_object_get(um, "reason")));
		fputs("\"", stdout);
	}
	if (json_object_get(ev, "message")) {
		fputs(" \"", stdout);
		put_text(json_string_value(json_object_get(ev, "message")));
		fputs("\"", stdout);
	}
	printf("\n");
	json_decref(ev);
}

static int cmd_audit(int argc, char **argv)
{
	bool follow = false, as_json = false;
	uint64_t n = 20;

	if (argc < 1 || strcmp(argv[0], "tail") != 0)
		return usage(stderr);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-f") == 0)
			follow = true;
		else if (strcmp(argv[i], "--json") == 0)
			as_json = true;
		else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc && !parse_u64(argv[i + 1], 1, 1024, &n))
			i++;
		else
			return usage(stderr);
	}
	int fd = admin_connect(state_dir);
	if (fd < 0) {
		errno = -fd;
		return not_running();
	}
	json_t *req = json_pack("{s:s, s:I, s:b}", "cmd", "audit_tail", "n", (json_int_t)n, "follow", follow);
	char *s = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (!s || write_all(fd, s, strlen(s)) || write_all(fd, "\n", 1)) {
		free(s);
		return 1;
	}
	free(s);
	setvbuf(stdout, NULL, _IOLBF, 0);
	FILE *in = fdopen(fd, "r");
	char *line = NULL;
	size_t cap = 0;
	bool first = true;
	while (in && getline(&line, &cap, in) > 0) {
		line[strcspn(line, "\n")] = 0;
		if (first) {
			json_t *ans = json_loads(line, 0, NULL), *e;
			size_t i;

			first = false;
			if (!ans || !json_is_true(json_object_get(ans, "ok"))) {
				fprintf(stderr, "agentgate: audit tail: %s\n",
					ans ? json_string_value(json_object_get(ans, "error")) : "bad answer");
				json_decref(ans);
				return 1;
			}
			json_array_foreach(json_object_get(ans, "events"), i, e)
				print_event(json_string_value(e), as_json);
			json_decref(ans);
			if (!follow)
				break;
			continue;
		}
		print_event(line, as_json);
	}
	free(line);
	if (in)
		fclose(in);
	return 0;
}

static int cmd_attach(int argc, char **argv)
{
	const char *agent = NULL, *cg = NULL;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--agent") == 0 && i + 1 < argc)
			agent = argv[++i];
		else if (strcmp(argv[i], "--cgroup") == 0 && i + 1 < argc)
			cg = argv[++i];
		else
			return usage(stderr);
	}
	if (!agent || !cg)
		return usage(stderr);
	json_t *req = json_pack("{s:s, s:s, s:s}", "cmd", "attach", "agent", agent, "cgroup", cg);
	json_t *ans = admin_call(state_dir, req);
	json_decref(req);
	if (!ans)
		return not_running();
	int ret = json_is_true(json_object_get(ans, "ok")) ? 0 : 1;
	if (ret)
		fprintf(stderr, "agentgate: attach: %s\n", json_string_value(json_object_get(ans, "error")));
	else
		printf("agent '%s' now enforced on cgroup '%s'\n", agent, cg);
	json_decref(ans);
	return ret;
}

/* A detached agent's `attach`ments are not restored at the next start. */
static void forget_attachments(const char *agent)
{
	char path[4096 + 32];
	json_t *arr, *keep, *it;
	size_t i;

	snprintf(path, sizeof(path), "%s/attachments.json", state_dir);
	arr = json_load_file(path, 0, NULL);
	if (!arr)
		return;
	keep = json_array();
	json_array_foreach(arr, i, it) {
		const char *a = json_string_value(json_object_get(it, "agent"));

		if (agent && a && strcmp(a, agent) != 0)
			json_array_append(keep, it);
	}
	if (json_dump_file(keep, path, JSON_INDENT(2)))
		fprintf(stderr, "agentgate: warning: could not update %s\n", path);
	json_decref(keep);
	json_decref(arr);
}

static int cmd_detach(int argc, char **argv)
{
	const char *agent = NULL;
	bool all = false;
	int removed = 0, err;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--agent") == 0 && i + 1 < argc)
			agent = argv[++i];
		else if (strcmp(argv[i], "--all") == 0)
			all = true;
		else
			return usage(stderr);
	}
	if (!!agent == all)
		return usage(stderr);
	err = loader_detach_pins(all ? NULL : agent, &removed);
	if (err == -ENOENT && agent) {
		fprintf(stderr, "agentgate: detach: no pins for agent '%s'\n", agent);
		return 1;
	}
	if (err) {
		fprintf(stderr, "agentgate: detach: %s\n", strerror(-err));
		return 1;
	}
	if (all) {
		char cg[PATH_MAX], parent[PATH_MAX + 16];

		if (find_mount("cgroup2", cg, sizeof(cg)) == 0) {
			snprintf(parent, sizeof(parent), "%s/" AG_CGROUP_PARENT, cg);
			if ((err = loader_unguard_unattached(parent)))
				fprintf(stderr, "agentgate: detach: %s: %s\n", parent, strerror(-err));
		}
	}
	printf("detached %d links%s\n", removed, all ? "; all agentgate pins removed" : "");
	forget_attachments(all ? NULL : agent);
	if (admin_connect(state_dir) >= 0)
		fprintf(stderr, "agentgate: warning: an enforcer is still running; agents%s are no longer "
			"redirected until it restarts\n", all ? "" : " of this name");
	return 0;
}

static int not_yet(const char *what, const char *issue)
{
	fprintf(stderr, "agentgate: %s is not implemented in this build (%s)\n", what, issue);
	return 2;
}

int main(int argc, char **argv)
{
	const char *env = getenv("AGENTGATE_STATE_DIR");
	int i = 1;

	if (env && *env)
		state_dir = env;
	signal(SIGPIPE, SIG_IGN);   /* a closed admin socket is an error return, not a death */
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--state-dir") == 0 && i + 1 < argc)
			state_dir = argv[++i];
		else if (strcmp(argv[i], "-v") == 0)
			ag_log_level = LOG_LVL_DEBUG;
		else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return usage(stdout);
		else
			return usage(stderr);
	}
	if (i >= argc)
		return usage(stderr);
	const char *cmd = argv[i];
	int sub_argc = argc - i - 1;
	char **sub_argv = argv + i + 1;

	/* A --state-dir after the command is accepted too (except for exec's CMD). */
	if (strcmp(cmd, "exec") != 0 && strcmp(cmd, "run") != 0) {
		for (int k = 0; k + 1 < sub_argc; k++) {
			if (strcmp(sub_argv[k], "--state-dir") == 0) {
				state_dir = sub_argv[k + 1];
				memmove(sub_argv + k, sub_argv + k + 2, (sub_argc - k - 2) * sizeof(char *));
				sub_argc -= 2;
				sub_argv[sub_argc] = NULL;   /* exec hands CMD's argv on as it is */
				break;
			}
		}
	} else if (strcmp(cmd, "exec") == 0) {
		for (int k = 0; k + 1 < sub_argc && strcmp(sub_argv[k], "--"); k++) {
			if (strcmp(sub_argv[k], "--state-dir") == 0) {
				state_dir = sub_argv[k + 1];
				memmove(sub_argv + k, sub_argv + k + 2, (sub_argc - k - 2) * sizeof(char *));
				sub_argc -= 2;
				sub_argv[sub_argc] = NULL;   /* exec hands CMD's argv on as it is */
				break;
			}
		}
	}

	if (strcmp(cmd, "run") == 0)
		return cmd_run(sub_argc, sub_argv);
	if (strcmp(cmd, "exec") == 0)
		return cmd_exec(sub_argc, sub_argv, state_dir);
	if (strcmp(cmd, "attach") == 0)
		return cmd_attach(sub_argc, sub_argv);
	if (strcmp(cmd, "detach") == 0)
		return cmd_detach(sub_argc, sub_argv);
	if (strcmp(cmd, "status") == 0)
		return cmd_status(sub_argc, sub_argv);
	if (strcmp(cmd, "policy") == 0)
		return cmd_policy(sub_argc, sub_argv);
	if (strcmp(cmd, "audit") == 0 && sub_argc > 0 && strcmp(sub_argv[0], "verify") == 0)
		return cmd_audit_verify(sub_argc - 1, sub_argv + 1, state_dir);
	if (strcmp(cmd, "audit") == 0)
		return cmd_audit(sub_argc, sub_argv);
	if (strcmp(cmd, "reload") == 0)
		return cmd_reload(sub_argc, sub_argv);
	if (strcmp(cmd, "approvals") == 0)
		return not_yet("approvals", "approval issue");
	if (strcmp(cmd, "replay") == 0)
		return cmd_replay(sub_argc, sub_argv, state_dir);
	if (strcmp(cmd, "token") == 0)
		return cmd_token(sub_argc, sub_argv, state_dir);
	if (strcmp(cmd, "version") == 0) {
		printf("agentgate %s (kernel ABI v%d)\n", AG_VERSION, AG_ABI_VERSION);
		return 0;
	}
	return usage(stderr);
}
