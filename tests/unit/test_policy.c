/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for policy_load.c and policy_match.c. Run from the repository
 * root: policy files are read from tests/unit/policies/.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>

#include <openssl/evp.h>

#include "policy.h"
#include <sys/stat.h>

#include "unit.h"

#define DATA "tests/unit/policies/"

/* ---- helpers ------------------------------------------------------------ */

static void dump_errors(const struct policy_errors *e)
{
	char line[640];

	for (int i = 0; i < e->n; i++) {
		policy_error_format(&e->e[i], line, sizeof(line));
		fprintf(stderr, "    %s\n", line);
	}
}

static struct policy *load_ok(const char *path)
{
	struct policy_errors e;
	struct policy *p = policy_load_file(path, &e);

	if (!p) {
		fprintf(stderr, "  %s did not load:\n", path);
		dump_errors(&e);
	}
	return p;
}

static struct policy *load_str(const char *name, const char *text, struct policy_errors *e)
{
	return policy_load_buffer(name, text, strlen(text), e);
}

static bool has_error(const struct policy_errors *e, int line, int col, const char *sub)
{
	for (int i = 0; i < e->n; i++)
		if (e->e[i].line == line && e->e[i].col == col && strstr(e->e[i].msg, sub))
			return true;
	return false;
}

static void addr_of(const char *s, uint8_t out[16])
{
	struct in_addr v4;

	if (inet_pton(AF_INET, s, &v4) == 1) {
		memset(out, 0, 10);
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &v4, 4);
		return;
	}
	if (inet_pton(AF_INET6, s, out) != 1) {
		fprintf(stderr, "  test bug: bad address %s\n", s);
		memset(out, 0, 16);
	}
}

static const char *strv_at(const struct policy_strv *sv, size_t i)
{
	return i < sv->n ? sv->v[i] : NULL;
}

/* ---- files that must load ---------------------------------------------- */

static void test_default_policy(void)
{
	struct policy *p = load_ok("policies/default.yaml");

	CHECK(p != NULL);
	if (!p)
		return;
	CHECK(p->version == 1);
	CHECK(p->mode == POLICY_OBSERVE);
	CHECK(p->nagents == 1);
	CHECK_STR(p->agents[0].name, "default");
	CHECK(p->agents[0].cgroup == NULL);
	CHECK(p->agents[0].identity.source == IDENT_LOCAL);
	CHECK(p->agents[0].max_connections == 1024);
	CHECK(p->ntargets == 0);
	CHECK(p->audit.nsinks == 2);
	CHECK(p->audit.sinks[0].type == SINK_STDOUT);
	CHECK(p->audit.sinks[1].type == SINK_FILE);
	CHECK_STR(p->audit.sinks[1].path, "/var/log/agentgate/audit.jsonl");
	CHECK_STR(p->audit.on_full, "drop_newest");
	CHECK(!p->has_dns);
	CHECK(policy_dns_allowed(p, "anything.example"));
	policy_free(p);
}

static void check_full_shape(const struct policy *p)
{
	const struct policy_target *t;
	const struct policy_rule *r;

	CHECK(p->version == 1);
	CHECK(p->mode == POLICY_ENFORCE);
	CHECK(p->has_dns);
	CHECK(p->dns_upstream.kind == ADDR_IP && p->dns_upstream.port == 53);
	CHECK(p->dns_allow.n == 2);
	CHECK_STR(strv_at(&p->dns_allow, 0), "*.example.com");
	CHECK_STR(strv_at(&p->dns_allow, 1), "api.openai.com");

	CHECK(p->nagents == 2);
	if (p->nagents == 2) {
		const struct policy_agent *a = &p->agents[0];

		CHECK_STR(a->name, "support-bot");
		CHECK_STR(a->cgroup, "agentgate/support-bot");
		CHECK(a->identity.source == IDENT_CLIENT_CREDENTIALS);
		CHECK_STR(a->identity.issuer, "https://idp.example.com");
		CHECK_STR(a->identity.client_id, "support-bot");
		CHECK_STR(a->identity.client_secret_file, "/etc/agentgate/secrets/support-bot");
		CHECK_STR(a->identity.audience, "urn:agentgate");
		CHECK(a->identity.private_key_file == NULL);
		CHECK(a->accept_user_tokens);
		CHECK(a->max_connections == 256);
		CHECK(a->parse_cpu == 25);   /* the default */
		CHECK(a->connect_rate == 200);   /* the default */
		CHECK(a->mask_cpu == 0);     /* the default: set by the enforcer from its workers */
		CHECK(p->agents[1].identity.source == IDENT_LOCAL);
		CHECK(!p->agents[1].accept_user_tokens);
		CHECK(p->agents[1].max_connections == 256);
	}

	CHECK(p->ntargets == 8);
	if (p->ntargets != 8)
		return;
	t = &p->targets[0];
	CHECK_STR(t->name, "orders-db");
	CHECK(t->proto == PROTO_POSTGRES);
	CHECK(t->addr.kind == ADDR_IP && t->addr.port == 5432 && t->addr.is_v4);
	CHECK(!t->names_metadata);
	CHECK_STR(t->upstream.user, "app_reader");
	CHECK_STR(t->upstream.password_file, "/etc/agentgate/secrets/orders-db");
	CHECK_STR(t->upstream.database, "orders");
	CHECK_STR(t->upstream.search_path, "public");
	CHECK(t->upstream.statement_timeout_ms == 30000);
	CHECK_STR(t->upstream.tls, "verify-full");
	CHECK_STR(t->upstream.ca_file, "/etc/ssl/certs/db-ca.pem");
	CHECK(!t->upstream.has_address);

	t = &p->targets[1];
	CHECK(t->proto == PROTO_HTTP);
	CHECK(t->addr.kind == ADDR_HOST && t->addr.port == 80);
	CHECK_STR(t->addr.host, "billing.internal");
	CHECK(t->upstream.has_address && t->upstream.address.port == 443);
	CHECK_STR(t->upstream.address.host, "billing.internal");
	CHECK_STR(t->upstream.bearer_token_file, "/etc/agentgate/secrets/billing");

	CHECK(p->targets[2].proto == PROTO_TLS);
	CHECK(p->targets[3].proto == PROTO_TCP);
	CHECK(p->targets[4].addr.kind == ADDR_CIDR && p->targets[4].addr.prefixlen == 104);
	CHECK(p->targets[5].addr.kind == ADDR_IP && !p->targets[5].addr.is_v4);
	CHECK(p->targets[6].addr.kind == ADDR_CIDR && p->targets[6].addr.prefixlen == 8);
	CHECK(p->targets[7].proto == PROTO_KUBERNETES);
	CHECK(p->targets[7].upstream.bearer_agent_token);

	CHECK(p->nroles == 2);
	if (p->nroles != 2 || p->roles[0].nrules != 4)
		return;
	r = &p->roles[0].rules[0];
	CHECK_STR(r->target, "orders-db");
	CHECK(r->target_idx == 0);
	CHECK_STR(r->role, "support-reader");
	CHECK(r->index == 0);
	CHECK(r->allow.present && r->review.present && r->mask.present);
	CHECK_STR(strv_at(&r->allow.statements, 0), "select");
	CHECK(r->allow.tables.n == 2);
	CHECK_STR(strv_at(&r->review.statements, 0), "update");
	CHECK(r->review.timeout_s == 300);
	CHECK(r->mask.columns.n == 2 && r->mask.detectors.n == 2);
	r = &p->roles[0].rules[1];
	CHECK(r->allow.http.n == 2);
	CHECK_STR(strv_at(&r->allow.http, 1), "GET /v1/invoices/*");
	CHECK_STR(strv_at(&r->mask.json, 0), "$.customer.email");
	CHECK(!r->review.present);
	r = &p->roles[0].rules[2];
	CHECK(r->target_idx == 2 && !r->allow.present && !r->mask.present);
	r = &p->roles[1].rules[0];
	CHECK_STR(strv_at(&r->allow.resources, 0), "pods");   /* scalar taken as a list */
	CHECK(r->review.timeout_s == 120);

	CHECK(p->nbindings == 3);
	if (p->nbindings == 3) {
		CHECK(p->bindings[0].role_idx == 0);
		CHECK(p->bindings[1].nclaims == 1);
		CHECK_STR(p->bindings[1].claim_names[0], "groups");
		CHECK_STR(strv_at(&p->bindings[1].claim_values[0], 0), "support");
		CHECK(p->bindings[2].role_idx == 1 && p->bindings[2].agents.n == 2);
	}

	CHECK_STR(p->audit.spool_dir, "/var/lib/agentgate/spool");
	CHECK(p->audit.spool_max_bytes == (1ull << 30));
	CHECK_STR(p->audit.on_full, "drop_newest");
	CHECK(p->audit.nsinks == 5);
	if (p->audit.nsinks == 5) {
		CHECK(p->audit.sinks[1].type == SINK_SYSLOG);
		CHECK_STR(p->audit.sinks[1].address, "siem.example.com:2514");
		CHECK_STR(p->audit.sinks[1].transport, "relp");
		CHECK(p->audit.sinks[2].type == SINK_SPLUNK_HEC);
		CHECK_STR(p->audit.sinks[2].token_file, "/etc/agentgate/secrets/hec");
		CHECK_STR(p->audit.sinks[3].index, "agentgate-audit");
		CHECK(p->audit.sinks[4].type == SINK_WEBHOOK);
	}
	CHECK_STR(p->approvals_webhook, "https://hooks.slack.com/services/T000/B000/XXXX");
}

static void test_full_yaml(void)
{
	struct policy *p = load_ok(DATA "good_full.yaml");

	CHECK(p != NULL);
	if (p)
		check_full_shape(p);
	policy_free(p);
}

static void test_full_json_twin(void)
{
	struct policy *y = load_ok(DATA "good_full.yaml");
	struct policy *j = load_ok(DATA "good_full.json");

	CHECK(y && j);
	if (j)
		check_full_shape(j);
	if (y && j)
		CHECK(strcmp(y->hash, j->hash) != 0);
	policy_free(y);
	policy_free(j);
}

static void test_hash_is_sha256_of_bytes(void)
{
	const char *text = "version: 1\nagents: [{name: a}]\n";
	unsigned char md[32];
	char hex[65];
	unsigned int len = 0;
	struct policy_errors e;
	struct policy *p = load_str("h.yaml", text, &e);

	CHECK(p != NULL);
	CHECK(EVP_Digest(text, strlen(text), md, &len, EVP_sha256(), NULL) == 1);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	if (p) {
		CHECK_STR(p->hash, hex);
		CHECK_STR(p->path, "h.yaml");
	}
	policy_free(p);
}

static void test_compile_may_target(void)
{
	struct policy *p = load_ok(DATA "good_full.yaml");
	int bot, def, db, llm, net, k8s;

	CHECK(p != NULL);
	if (!p)
		return;
	bot = policy_agent_index(p, "support-bot");
	def = policy_agent_index(p, "default");
	db = policy_target_index(p, "orders-db");
	llm = policy_target_index(p, "llm-api");
	net = policy_target_index(p, "internal-net");
	k8s = policy_target_index(p, "cluster");
	CHECK(bot == 0 && def == 1 && db == 0 && llm == 2 && net == 4 && k8s == 7);
	CHECK(p->agents[bot].may_target[db]);
	CHECK(p->agents[bot].target_rule[db] == &p->roles[0].rules[0]);
	CHECK(p->agents[bot].may_target[llm]);
	CHECK(p->agents[bot].target_rule[llm] == &p->roles[0].rules[2]);
	CHECK(!p->agents[bot].may_target[net]);
	CHECK(p->agents[bot].target_rule[net] == NULL);
	CHECK(p->agents[bot].may_target[k8s]);
	/* "default" is bound to k8s-viewer only; the claims binding is not resolved here */
	CHECK(p->agents[def].may_target[k8s]);
	CHECK(!p->agents[def].may_target[db]);
	CHECK(policy_agent_index(p, "nobody") == -1);
	CHECK(policy_target_index(p, "nothing") == -1);
	CHECK(policy_agent_index(NULL, "x") == -1);
	policy_free(p);
}

static void test_defaults_and_forms(void)
{
	static const char text[] =
		"version: 1\n"
		"agents:\n"
		"  - name: a\n"
		"    cgroup: /system.slice/agent-a.scope\n"
		"    identity: {source: token_file, token_file: /run/t, issuer: http://127.0.0.1:5556,\n"
		"               audience: x, groups_claim: groups}\n"
		"targets:\n"
		"  - name: db\n"
		"    protocol: postgres\n"
		"    address: DB.Example.COM.:5432\n"
		"    upstream: {statement_timeout: 1m30s, idle_in_transaction_session_timeout: 500ms}\n"
		"  - {name: imds, protocol: http, address: 169.254.169.254:80}\n"
		"  - {name: imds6, protocol: http, address: '[fd00:ec2::254]:80'}\n"
		"roles:\n"
		"  - name: r\n"
		"    rules:\n"
		"      - {target: db, allow: {}, review: {statements: delete}}\n"
		"bindings:\n"
		"  - {role: r, agents: a}\n"
		"audit:\n"
		"  spool: {max_bytes: 10MB}\n"
		"  sinks: [{type: syslog, address: '[::1]:514'}]\n";
	struct policy_errors e;
	struct policy *p = load_str("forms.yaml", text, &e);

	CHECK(p != NULL);
	if (!p) {
		dump_errors(&e);
		return;
	}
	CHECK(p->mode == POLICY_ENFORCE);
	CHECK_STR(p->agents[0].cgroup, "/system.slice/agent-a.scope");
	CHECK(p->agents[0].identity.source == IDENT_TOKEN_FILE);
	CHECK_STR(p->targets[0].addr.host, "db.example.com");
	CHECK(p->targets[0].upstream.statement_timeout_ms == 90000);
	CHECK(p->targets[0].upstream.idle_in_transaction_timeout_ms == 500);
	CHECK(p->targets[1].names_metadata);
	CHECK(p->targets[2].names_metadata);
	CHECK(!p->targets[0].names_metadata);
	CHECK(p->roles[0].rules[0].allow.present && p->roles[0].rules[0].allow.statements.n == 0);
	CHECK(p->roles[0].rules[0].review.timeout_s == 300);
	CHECK_STR(strv_at(&p->roles[0].rules[0].review.statements, 0), "delete");
	CHECK(p->agents[0].may_target[0] && !p->agents[0].may_target[1]);
	CHECK(p->audit.spool_max_bytes == 10000000);
	CHECK_STR(p->audit.sinks[0].transport, "tcp");
	CHECK_STR(p->audit.on_full, "drop_newest");
	policy_free(p);
}

/* ---- files that must be refused ------------------------------------------- */

struct bad_case {
	const char *file;
	int line, col;
	const char *msg;
	int total;      /* errors expected in all */
};

static const struct bad_case bad_cases[] = {
	{ "bad_unknown_key.yaml", 4, 3, "unknown key 'alow' (did you mean 'allow'?)", 1 },
	{ "bad_unknown_top.yaml", 2, 1, "unknown key 'agnets' (did you mean 'agents'?)", 2 },
	{ "bad_unknown_top.yaml", 1, 1, "missing required key 'agents'", 2 },
	{ "bad_wrong_type.yaml", 2, 9, "agents must be a list, got 'a'", 1 },
	{ "bad_limits_type.yaml", 4, 27, "connections must be an integer", 1 },
	{ "bad_limits_range.yaml", 5, 20, "connections must be in 1..1000000", 1 },
	{ "bad_limits_parse_cpu.yaml", 5, 18, "parse_cpu must be in 1..100", 1 },
	{ "bad_limits_mask_cpu.yaml", 5, 17, "mask_cpu must be in 1..25600", 1 },
	{ "bad_limits_connect_rate.yaml", 5, 21, "connect_rate must be in 1..1000000", 1 },
	{ "bad_addr_noport.yaml", 6, 14, "missing port", 1 },
	{ "bad_addr_v6_nobrackets.yaml", 4, 41, "IPv6 addresses need brackets", 1 },
	{ "bad_port.yaml", 6, 14, "bad port '70000'", 1 },
	{ "bad_port_zero.yaml", 6, 14, "bad port '0'", 1 },
	{ "bad_cidr_hostbits.yaml", 6, 14, "host bits set", 1 },
	{ "bad_cidr_prefix.yaml", 6, 14, "bad prefix length '/33'", 1 },
	{ "bad_host.yaml", 6, 14, "'10.0.0.256' is not a valid IP address or host name", 1 },
	{ "bad_protocol.yaml", 5, 15, "protocol must be one of tcp|tls|postgres|http|kubernetes", 1 },
	{ "bad_dup_agent.yaml", 5, 11, "duplicate agent name 'a' (first defined at line 3)", 1 },
	{ "bad_dup_target.yaml", 5, 12, "duplicate target name 'db' (first defined at line 4)", 1 },
	{ "bad_dup_address.yaml", 5, 46, "same address as target 'db1'", 1 },
	{ "bad_dup_key.yaml", 5, 5, "duplicate key 'name' (first at 3:5)", 1 },
	{ "bad_unknown_target.yaml", 8, 17, "unknown target 'orders-dbb' (did you mean 'orders-db'?)", 1 },
	{ "bad_unknown_role.yaml", 6, 12, "unknown role 'writer'", 1 },
	{ "bad_unknown_agent.yaml", 7, 27, "unknown agent 'support-bto' (did you mean 'support-bot'?)", 1 },
	{ "bad_inline_secret.yaml", 8, 7, "secrets must come from a file (use 'client_secret_file')", 2 },
	{ "bad_inline_password.yaml", 7, 27, "secrets must come from a file (use 'password_file')", 1 },
	{ "bad_duration.yaml", 8, 26, "bad duration '30'", 1 },
	{ "bad_version_missing.yaml", 1, 1, "missing required key 'version'", 1 },
	{ "bad_version_2.yaml", 1, 10, "unsupported version 2", 1 },
	{ "bad_mode.yaml", 2, 7, "mode must be one of enforce|observe, got 'permissive'", 1 },
	{ "bad_cgroup_dotdot.yaml", 4, 13, "'..'", 1 },
	{ "bad_json_syntax.json", 4, 18, "invalid JSON", 1 },
	{ "bad_json_dup.json", 4, 3, "duplicate key 'version' (first at 2:3)", 1 },
	{ "bad_json_type.json", 2, 14, "version must be an integer", 1 },
	{ "bad_anchor.yaml", 3, 5, "anchors are not allowed", 2 },
	{ "bad_anchor.yaml", 5, 5, "aliases are not allowed", 2 },
	{ "bad_tag.yaml", 3, 11, "tags are not allowed", 1 },
	{ "bad_two_docs.yaml", 3, 1, "single YAML document", 1 },
	{ "bad_size.yaml", 4, 42, "bad size '1 gigabyte'", 1 },
	{ "bad_identity_cc.yaml", 5, 7, "missing required key 'client_id'", 2 },
	{ "bad_identity_cc.yaml", 9, 7, "not both", 2 },
	{ "bad_local_identity.yaml", 4, 31, "'issuer' does not apply to identity source 'local'", 1 },
	{ "bad_scope.yaml", 9, 17, "'statements' does not apply to http target 'api'", 1 },
	{ "bad_binding_empty.yaml", 5, 5, "needs 'agents' or 'claims'", 1 },
	{ "bad_agents_empty.yaml", 2, 9, "at least one agent", 1 },
	{ "bad_yaml_syntax.yaml", 4, 4, "did not find expected", 1 },
	{ "bad_sink.yaml", 5, 7, "a file sink needs 'path'", 2 },
	{ "bad_sink.yaml", 6, 22, "'url' does not apply to stdout sinks", 2 },
	{ "bad_dns_upstream.yaml", 2, 17, "dns upstream must be an IP address", 1 },
	{ "bad_bool.yaml", 4, 25, "must be true or false", 1 },
	{ "bad_agent_name.yaml", 3, 11, "invalid agent name 'bad name'", 1 },
	{ "bad_review_timeout.yaml", 9, 49, "whole seconds", 1 },
};

static void test_bad_files(void)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *c = &bad_cases[i];
		struct policy_errors e;
		char path[256];
		struct policy *p;

		snprintf(path, sizeof(path), DATA "%s", c->file);
		p = policy_load_file(path, &e);
		CHECK(p == NULL);
		policy_free(p);
		if (!has_error(&e, c->line, c->col, c->msg) || e.total != c->total) {
			fprintf(stderr, "  %s: wanted %d error(s) incl. %d:%d '%s', got:\n",
				c->file, c->total, c->line, c->col, c->msg);
			dump_errors(&e);
			unit_failed_checks++;
		}
		CHECK(e.n >= 1 && strcmp(e.e[0].file, path) == 0);
	}
}

static void test_errors_sorted_and_capped(void)
{
	char text[4096];
	size_t used;
	struct policy_errors e;
	struct policy *p;

	used = (size_t)snprintf(text, sizeof(text), "version: 1\nagents:\n  - name: a\n");
	for (int i = 0; i < 40; i++)
		used += (size_t)snprintf(text + used, sizeof(text) - used, "bogus%d: 1\n", i);
	p = load_str("many.yaml", text, &e);
	CHECK(p == NULL);
	CHECK(e.n == POLICY_MAX_ERRORS);
	CHECK(e.total == 40);
	for (int i = 1; i < e.n; i++)
		CHECK(e.e[i - 1].line < e.e[i].line);
}

static void test_buffers_and_limits(void)
{
	struct policy_errors e;
	struct policy *p;
	char *big, deep[200];

	/* JSON detected by content, named without .json */
	p = load_str("inline", "  {\"version\": 1, \"agents\": [{\"name\": \"a\"}]}", &e);
	CHECK(p != NULL);
	policy_free(p);
	p = load_str("inline", "{\"version\": 1, // no comments in JSON\n}", &e);
	CHECK(p == NULL && has_error(&e, 1, 16, "invalid JSON"));
	/* .json names are JSON even when the content would pass as YAML */
	p = load_str("p.json", "version: 1\nagents: [{name: a}]\n", &e);
	CHECK(p == NULL && e.n == 1 && strstr(e.e[0].msg, "invalid JSON"));
	p = load_str("cg.yaml", "version: 1\nagents:\n  - {name: x}\n"
		     "  - {name: y, cgroup: /agentgate/x}\n", &e);
	CHECK(p == NULL && e.total == 1 && has_error(&e, 4, 23, "share cgroup 'agentgate/x'"));
	p = load_str("empty.yaml", "# nothing here\n", &e);
	CHECK(p == NULL && has_error(&e, 1, 1, "policy is empty"));
	p = load_str("list.yaml", "- a\n- b\n", &e);
	CHECK(p == NULL && has_error(&e, 1, 1, "the policy must be a mapping"));
	p = load_str("nul.yaml", "version: 1\nagents: [{name: \"a\\0b\"}]\n", &e);
	CHECK(p == NULL && has_error(&e, 2, 17, "control character"));
	p = load_str("utf8.yaml", "version: 1\nagents: [{name: \xff}]\n", &e);
	CHECK(p == NULL && e.n == 1 && e.e[0].line == 2);

	memset(deep, '[', sizeof(deep) - 1);
	deep[sizeof(deep) - 1] = '\0';
	p = load_str("deep.yaml", deep, &e);
	CHECK(p == NULL && e.n >= 1 && strstr(e.e[0].msg, "nested deeper"));

	big = malloc(POLICY_MAX_FILE + 1);
	CHECK(big != NULL);
	if (big) {
		memset(big, '#', POLICY_MAX_FILE + 1);
		p = policy_load_buffer("big.yaml", big, POLICY_MAX_FILE + 1, &e);
		CHECK(p == NULL && e.n == 1 && strstr(e.e[0].msg, "limit"));
		free(big);
	}

	p = policy_load_buffer("noerrs.yaml", "version: 2\n", 11, NULL);
	CHECK(p == NULL);
	p = policy_load_file("/dev/zero", &e);   /* endless: refused, not swallowed */
	CHECK(p == NULL && e.n == 1 && strstr(e.e[0].msg, "larger than"));
	p = policy_load_file(DATA "does-not-exist.yaml", &e);
	CHECK(p == NULL && e.n == 1 && e.e[0].line == 0 && strstr(e.e[0].msg, "cannot open"));
	policy_free(NULL);
}

static void test_error_format(void)
{
	struct policy_error e = { .file = "prod.yaml", .line = 12, .col = 7,
				  .msg = "unknown key 'alow'" };
	char out[128], tiny[8];

	policy_error_format(&e, out, sizeof(out));
	CHECK_STR(out, "prod.yaml:12:7: unknown key 'alow'");
	e.col = 0;
	policy_error_format(&e, out, sizeof(out));
	CHECK_STR(out, "prod.yaml:12: unknown key 'alow'");
	e.line = 0;
	policy_error_format(&e, out, sizeof(out));
	CHECK_STR(out, "prod.yaml: unknown key 'alow'");
	policy_error_format(&e, tiny, sizeof(tiny));
	CHECK_STR(tiny, "prod.ya");
}

/* ---- matching ------------------------------------------------------------ */

static const char match_policy[] =
	"version: 1\n"
	"agents: [{name: a}]\n"
	"targets:\n"
	"  - {name: wide, protocol: tcp, address: 10.0.0.0/8:5432}\n"       /* 0 */
	"  - {name: exact, protocol: postgres, address: 10.0.0.5:5432}\n"   /* 1 */
	"  - {name: narrow, protocol: tcp, address: 10.0.0.0/24:5432}\n"    /* 2 */
	"  - {name: byname, protocol: postgres, address: db.internal:5432}\n" /* 3 */
	"  - {name: v6, protocol: tls, address: '[2001:db8::1]:443'}\n"     /* 4 */
	"  - {name: v6net, protocol: tls, address: '[2001:db8::/32]:443'}\n" /* 5 */
	"  - {name: web, protocol: http, address: 10.0.0.0/8:80}\n"         /* 6 */
	"  - {name: all4, protocol: tls, address: 0.0.0.0/0:443}\n";        /* 7 */

static bool resolves_db(void *ctx, const char *host, const uint8_t addr[16])
{
	uint8_t want[16];

	(*(int *)ctx)++;
	addr_of("192.168.1.1", want);
	if (strcmp(host, "db.internal") == 0 && memcmp(addr, want, 16) == 0)
		return true;
	addr_of("10.0.0.7", want);
	return strcmp(host, "db.internal") == 0 && memcmp(addr, want, 16) == 0;
}

struct match_case {
	const char *addr;
	uint16_t port;
	bool with_resolver;
	int want;
};

static void test_match_target(void)
{
	static const struct match_case cases[] = {
		{ "10.0.0.5", 5432, true, 1 },        /* exact beats both prefixes */
		{ "10.0.0.6", 5432, true, 2 },        /* longest prefix */
		{ "10.1.0.1", 5432, true, 0 },
		{ "10.0.0.5", 5433, true, -1 },       /* port mismatch */
		{ "10.0.0.5", 80, true, 6 },
		{ "192.168.1.1", 5432, true, 3 },     /* by name */
		{ "192.168.1.1", 5432, false, -1 },   /* no resolver, no name match */
		{ "10.0.0.7", 5432, true, 2 },        /* a prefix beats a name */
		{ "::10.0.0.5", 5432, true, -1 },     /* v4-compatible is not v4-mapped */
		{ "::ffff:10.0.0.5", 5432, true, 1 }, /* v4-mapped is v4 */
		{ "2001:db8::1", 443, true, 4 },
		{ "2001:db8::2", 443, true, 5 },
		{ "2001:db9::1", 443, true, -1 },
		{ "8.8.8.8", 443, true, 7 },          /* 0.0.0.0/0 covers every IPv4 */
		{ "2001:db9::1", 80, true, -1 },
	};
	struct policy_errors e;
	struct policy *p = load_str("match.yaml", match_policy, &e);
	int calls = 0;

	CHECK(p != NULL);
	if (!p) {
		dump_errors(&e);
		return;
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct match_case *c = &cases[i];
		uint8_t a[16];
		int got;

		addr_of(c->addr, a);
		got = policy_match_target(p, a, c->port, c->with_resolver ? resolves_db : NULL,
					  &calls);
		if (got != c->want) {
			fprintf(stderr, "  match %s port %u: got %d, want %d\n", c->addr,
				c->port, got, c->want);
			unit_failed_checks++;
		}
	}
	CHECK(calls > 0);
	CHECK(policy_match_target(NULL, NULL, 1, NULL, NULL) == -1);
	policy_free(p);
}

static void test_metadata(void)
{
	static const struct { const char *ip; bool want; } cases[] = {
		{ "169.254.169.254", true },     /* AWS/GCP/Azure IMDS */
		{ "169.254.170.2", true },       /* ECS task credentials */
		{ "169.254.0.1", true },         /* all of 169.254.0.0/16 */
		{ "169.255.0.1", false },
		{ "169.253.255.255", false },
		{ "100.100.100.200", true },     /* Alibaba */
		{ "100.100.100.201", false },
		{ "fd00:ec2::254", true },       /* AWS IPv6 IMDS */
		{ "fd00:ec2::253", false },
		{ "fe80::1", true },             /* fe80::/10 */
		{ "febf::1", true },
		{ "fec0::1", false },
		{ "::169.254.169.254", false },  /* not v4-mapped */
		{ "10.0.0.1", false },
	};
	uint8_t a[16];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		addr_of(cases[i].ip, a);
		if (policy_is_metadata_addr(a) != cases[i].want)
			fprintf(stderr, "  metadata case %s\n", cases[i].ip);
		CHECK(policy_is_metadata_addr(a) == cases[i].want);
	}
	CHECK(!policy_is_metadata_addr(NULL));
}

/* ---- DNS ----------------------------------------------------------------- */

static void test_dns_allowed(void)
{
	static const struct { const char *name; bool want; } cases[] = {
		{ "api.openai.com", true },
		{ "API.OpenAI.com.", true },
		{ "x.api.openai.com", false },
		{ "openai.com", false },
		{ "a.example.com", true },
		{ "a.b.Example.COM", true },
		{ "example.com", false },        /* "*." means strictly below */
		{ "example.com.", false },
		{ "badexample.com", false },
		{ "xexample.com", false },
		{ "mail.example.org", true },    /* written with a trailing dot and upper case */
		{ "", false },
		{ ".", false },
		{ "a.example.com..", false },
	};
	static const char text[] =
		"version: 1\n"
		"dns: {upstream: 127.0.0.53:53, allow: ['*.example.com', api.openai.com, "
		"MAIL.example.ORG.]}\n"
		"agents: [{name: a}]\n";
	struct policy_errors e;
	struct policy *p = load_str("dns.yaml", text, &e), *open_p;

	CHECK(p != NULL);
	if (!p) {
		dump_errors(&e);
		return;
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (policy_dns_allowed(p, cases[i].name) != cases[i].want) {
			fprintf(stderr, "  dns_allowed('%s') != %d\n", cases[i].name, cases[i].want);
			unit_failed_checks++;
		}
	}
	CHECK(!policy_dns_allowed(p, NULL));
	policy_free(p);

	open_p = load_str("dns2.yaml", "version: 1\ndns: {upstream: '[::1]:53'}\nagents: [{name: a}]\n", &e);
	CHECK(open_p != NULL);
	if (open_p)
		CHECK(policy_dns_allowed(open_p, "anything.at.all"));
	policy_free(open_p);

	p = load_str("dns3.yaml", "version: 1\ndns: {upstream: 1.1.1.1:53, allow: ['*', 'a.*.com']}\n"
		     "agents: [{name: a}]\n", &e);
	CHECK(p == NULL && e.total == 2 && has_error(&e, 2, 37, "'*'"));
}

/* ---- address parsing ----------------------------------------------------- */

struct addr_case {
	const char *in;
	int rc;
	enum policy_addr_kind kind;
	const char *addr;            /* inet_ntop form of the stored 16 bytes */
	uint8_t prefixlen;
	bool is_v4;
	const char *host;
	uint16_t port;
};

#define BAD(s) { .in = (s), .rc = -EINVAL }

static void test_parse_addr(void)
{
	static const struct addr_case cases[] = {
		{ "1.2.3.4:5432", 0, ADDR_IP, "::ffff:1.2.3.4", 128, true, NULL, 5432 },
		{ "[2001:db8::1]:443", 0, ADDR_IP, "2001:db8::1", 128, false, NULL, 443 },
		{ "10.0.0.0/8:5432", 0, ADDR_CIDR, "::ffff:10.0.0.0", 104, true, NULL, 5432 },
		{ "[fd00::/8]:443", 0, ADDR_CIDR, "fd00::", 8, false, NULL, 443 },
		{ "0.0.0.0/0:1", 0, ADDR_CIDR, "::ffff:0.0.0.0", 96, true, NULL, 1 },
		{ "[::ffff:1.2.3.4]:80", 0, ADDR_IP, "::ffff:1.2.3.4", 128, true, NULL, 80 },
		{ "Host.Name.:443", 0, ADDR_HOST, NULL, 0, false, "host.name", 443 },
		{ "localhost:65535", 0, ADDR_HOST, NULL, 0, false, "localhost", 65535 },
		{ "_svc.internal:8080", 0, ADDR_HOST, NULL, 0, false, "_svc.internal", 8080 },
		BAD("1.2.3.4"), BAD("1.2.3.4:"), BAD("1.2.3.4:0"),
		BAD("1.2.3.4:65536"), BAD("1.2.3.4:-1"), BAD("1.2.3.4:8a"),
		BAD("1.2.3.4:123456"), BAD("2001:db8::1:443"),
		BAD("[2001:db8::1]443"), BAD("[2001:db8::1:443"),
		BAD("[1.2.3.4]:80"), BAD("10.0.0.1/8:80"),
		BAD("10.0.0.0/33:80"), BAD("10.0.0.0/:80"),
		BAD("[fd00::/129]:443"), BAD("10.0.0.256:80"),
		BAD("1.2.3:80"), BAD("010.0.0.1:80"), BAD("-bad.host:80"),
		BAD("bad-.host:80"), BAD("a..b:80"), BAD("*.example.com:443"),
		BAD(":80"), BAD("[]:80"), BAD(""),
		BAD("[fe80::1%eth0]:80"), BAD("host name:80"),
		BAD("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com:80"),
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct addr_case *c = &cases[i];
		struct policy_addr a;
		char why[128], ntop[INET6_ADDRSTRLEN] = "";
		int rc = policy_parse_addr(c->in, &a, why, sizeof(why));
		bool ok = rc == c->rc;

		if (rc == 0 && c->rc == 0) {
			if (a.kind != ADDR_HOST)
				inet_ntop(AF_INET6, a.addr, ntop, sizeof(ntop));
			ok = a.kind == c->kind && a.port == c->port &&
			     (c->addr == NULL || strcmp(ntop, c->addr) == 0) &&
			     (a.kind == ADDR_HOST || (a.prefixlen == c->prefixlen &&
						      a.is_v4 == c->is_v4)) &&
			     (c->host == NULL ? a.host == NULL :
			      (a.host && strcmp(a.host, c->host) == 0));
		} else if (rc != 0) {
			ok = ok && why[0] != '\0' && a.host == NULL;
		}
		if (!ok) {
			fprintf(stderr, "  parse_addr('%s'): rc %d kind %d addr %s/%u host %s why '%s'\n",
				c->in, rc, a.kind, ntop, a.prefixlen, a.host ? a.host : "-",
				rc ? why : "");
			unit_failed_checks++;
		}
		free(a.host);
	}
	CHECK(policy_parse_addr(NULL, &(struct policy_addr){ 0 }, NULL, 0) == -EINVAL);
}

static void test_proto_name(void)
{
	CHECK_STR(policy_proto_name(PROTO_TCP), "tcp");
	CHECK_STR(policy_proto_name(PROTO_POSTGRES), "postgres");
	CHECK_STR(policy_proto_name(PROTO_KUBERNETES), "kubernetes");
	CHECK_STR(policy_proto_name(PROTO__COUNT), "unknown");
}

/* ---- reload ---------------------------------------------------------------- */

static const char reload_base[] =
	"version: 1\n"
	"agents:\n"
	"  - {name: a1, identity: {source: token_file, issuer: 'https://idp.test', audience: x, token_file: /t}}\n"
	"  - {name: a2}\n"
	"targets:\n"
	"  - {name: db, protocol: postgres, address: 10.0.0.5:5432, upstream: {user: u, database: d}}\n"
	"  - {name: web, protocol: http, address: 'api.test:443'}\n"
	"roles:\n"
	"  - name: r\n"
	"    rules:\n"
	"      - {target: db, allow: {statements: [select], tables: [public.t]}}\n"
	"bindings: [{role: r, agents: [a1, a2]}]\n"
	"audit: {sinks: [{type: file, path: /tmp/x.jsonl}]}\n";

/* reload_base with one substitution */
static struct policy *reload_variant(const char *from, const char *to)
{
	char buf[4096];
	const char *at = strstr(reload_base, from);
	struct policy_errors e;
	struct policy *p;

	if (!at) {
		fprintf(stderr, "  no '%s' in the base policy\n", from);
		return NULL;
	}
	snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(at - reload_base), reload_base, to, at + strlen(from));
	p = load_str("variant.yaml", buf, &e);
	if (!p) {
		fprintf(stderr, "  variant '%s' -> '%s' did not load:\n", from, to);
		dump_errors(&e);
	}
	return p;
}

static void test_reload_refusal(void)
{
	static const struct { const char *from, *to, *why; } cases[] = {
		/* may change */
		{ "tables: [public.t]", "tables: [public.t, public.u]", NULL },
		{ "version: 1\n", "version: 1\nmode: observe\n", NULL },
		{ "{user: u, database: d}", "{user: v, database: d, tls: require}", NULL },
		{ "agents: [a1, a2]", "agents: [a2]", NULL },
		{ "      - {target: db", "      - {target: web, allow: {http: ['GET /**']}}\n      - {target: db", NULL },
		{ "audit: {", "audit: {allowed_requests: false, ", NULL },   /* each session follows */
		/* need a restart */
		{ "  - {name: a2}\n", "  - {name: a2}\n  - {name: a3}\n", "agents added or removed" },
		{ "  - {name: a1, identity: {source: token_file, issuer: 'https://idp.test', audience: x, token_file: /t}}\n  - {name: a2}\n",
		  "  - {name: a2}\n  - {name: a1, identity: {source: token_file, issuer: 'https://idp.test', audience: x, token_file: /t}}\n",
		  "agent 'a1' (line 3): its name or position changed" },
		{ "  - {name: a2}\n", "  - {name: a2, cgroup: elsewhere}\n", "agent 'a2' (line 4): its cgroup changed" },
		{ "audience: x", "audience: y", "agent 'a1' (line 3): its identity changed" },
		{ "  - {name: a2}\n", "  - {name: a2, limits: {connections: 9}}\n", "its limits changed" },
		{ "10.0.0.5:5432", "10.0.0.6:5432", "target 'db' (line 6): its address changed" },
		{ "10.0.0.5:5432", "10.0.0.5:5433", "its address changed" },
		{ "api.test:443", "api2.test:443", "target 'web' (line 7): its address changed" },
		{ "protocol: http", "protocol: tcp", "target 'web' (line 7): its protocol changed" },
		{ "  - {name: web, protocol: http, address: 'api.test:443'}\n", "", "targets added or removed" },
		{ "/tmp/x.jsonl", "/tmp/y.jsonl", "the audit section changed" },
		{ "version: 1\n", "version: 1\ndns: {upstream: '127.0.0.1:53'}\n", "the dns section changed" },
	};
	struct policy *base = reload_variant("version: 1", "version: 1");
	char why[600];

	CHECK(base != NULL);
	if (!base)
		return;
	why[0] = 0;
	CHECK(policy_reload_refusal(base, base, why, sizeof(why)) == 0 && why[0] == 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct policy *p = reload_variant(cases[i].from, cases[i].to);
		int rc;

		CHECK(p != NULL);
		if (!p)
			continue;
		why[0] = 0;
		rc = policy_reload_refusal(base, p, why, sizeof(why));
		if (!cases[i].why) {
			if (rc != 0)
				fprintf(stderr, "  case %zu refused: %s\n", i, why);
			CHECK(rc == 0);
		} else {
			if (rc == 0 || !strstr(why, cases[i].why) || !strstr(why, "restart the enforcer"))
				fprintf(stderr, "  case %zu: rc %d, '%s', want '%s'\n", i, rc, why, cases[i].why);
			CHECK(rc == -1 && strstr(why, cases[i].why) && strstr(why, "restart the enforcer"));
		}
		policy_free(p);
	}
	policy_free(base);
}

/* Shapes that would silently widen access or mask nothing (review of
 * stop 19): each must be refused with a message that says why. */
static bool refused_with(const char *text, const char *sub)
{
	struct policy_errors e;
	struct policy *p = load_str("x.yaml", text, &e);
	bool ok = p == NULL;

	if (ok) {
		ok = false;
		for (int i = 0; i < e.n && !ok; i++)
			ok = strstr(e.e[i].msg, sub) != NULL;
	}
	if (!ok) {
		fprintf(stderr, "  wanted a refusal with '%s', got:\n", sub);
		dump_errors(&e);
	}
	policy_free(p);
	return ok;
}

static bool loads(const char *text)
{
	struct policy_errors e;
	struct policy *p = load_str("x.yaml", text, &e);

	if (!p)
		dump_errors(&e);
	policy_free(p);
	return p != NULL;
}

#define UNIX_POL(list) "version: 1\nagents: [{name: a, unix_sockets: " list "}]\n" \
	"targets: [{name: t, protocol: tcp, address: 127.0.0.1:9}]\n" \
	"roles: [{name: r, rules: [{target: t}]}]\nbindings: [{role: r, agents: [a]}]\n"

/* agents[].unix_sockets: what the kernel can match as spelled, and nothing else */
static void test_unix_sockets(void)
{
	struct policy_errors e;
	struct policy *p = load_str("x.yaml", UNIX_POL("[/run/a.sock, \"@svc\", \"/x y/\\u00e9.sock\"]"), &e);

	CHECK(p != NULL);
	if (p) {
		CHECK(p->agents[0].unix_sockets.n == 3);
		CHECK(strcmp(strv_at(&p->agents[0].unix_sockets, 1), "@svc") == 0);
		CHECK(strcmp(strv_at(&p->agents[0].unix_sockets, 2), "/x y/\xc3\xa9.sock") == 0);
	}
	policy_free(p);
	CHECK(loads(UNIX_POL("[]")));
	CHECK(loads(UNIX_POL("/run/one.sock")));   /* one string: a list of one */
	CHECK(refused_with(UNIX_POL("[run/a.sock]"), "must be an absolute path"));
	CHECK(refused_with(UNIX_POL("[\"\"]"), "must not be empty"));
	CHECK(refused_with(UNIX_POL("[/run//a.sock]"), "'..' component"));
	CHECK(refused_with(UNIX_POL("[/run/./a.sock]"), "'..' component"));
	CHECK(refused_with(UNIX_POL("[/run/../a.sock]"), "'..' component"));
	CHECK(refused_with(UNIX_POL("[/run/]"), "'..' component"));
	CHECK(refused_with(UNIX_POL("[/]"), "'..' component"));
	CHECK(refused_with(UNIX_POL("[\"@\"]"), "after '@'"));
	CHECK(refused_with(UNIX_POL("{a: b}"), "must be a list of strings"));
	/* 108 bytes fill sun_path; 109 do not fit */
	static const struct { char lead; size_t n; bool ok; } sizes[] = {
		{ '/', 108, true }, { '/', 109, false }, { '@', 108, true }, { '@', 109, false } };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char name[128], text[512];

		memset(name, 'x', sizes[i].n);
		name[0] = sizes[i].lead;
		name[sizes[i].n] = 0;
		snprintf(text, sizeof(text), UNIX_POL("[\"%s\"]"), name);
		if (sizes[i].ok)
			CHECK(loads(text));
		else
			CHECK(refused_with(text, sizes[i].lead == '@' ? "after '@'" : "longer than a socket address holds"));
	}
}

#define PG_HEAD "version: 1\nagents: [{name: a}]\n" \
	"targets: [{name: db, protocol: postgres, address: 127.0.0.1:5432"

static void test_refused_shapes(void)
{
	char *text;
	size_t len;
	FILE *f;

	/* mask columns other than schema.table.column */
	CHECK(refused_with(PG_HEAD "}]\nroles: [{name: r, rules: [{target: db, mask: {columns: [customers.email]}}]}]\n",
			   "must be schema.table.column"));
	CHECK(refused_with(PG_HEAD "}]\nroles: [{name: r, rules: [{target: db, mask: {columns: [email]}}]}]\n",
			   "must be schema.table.column"));
	CHECK(refused_with(PG_HEAD "}]\nroles: [{name: r, rules: [{target: db, mask: {columns: [a.b.c.d]}}]}]\n",
			   "must be schema.table.column"));
	CHECK(refused_with(PG_HEAD "}]\nroles: [{name: r, rules: [{target: db, mask: {columns: [a..c]}}]}]\n",
			   "must be schema.table.column"));
	CHECK(loads(PG_HEAD "}]\nroles: [{name: r, rules: [{target: db, mask: {columns: [public.customers.email]}}]}]\n"));
	/* an empty tables list is not "every table" */
	CHECK(refused_with(PG_HEAD "}]\nroles: [{name: r, rules: [{target: db, allow: {statements: [select], tables: []}}]}]\n",
			   "tables is empty"));
	CHECK(loads(PG_HEAD "}]\nroles: [{name: r, rules: [{target: db, allow: {statements: [select], tables: [\"*\"]}}]}]\n"));
	/* empty lists, and actions that grant or hold no statement: a review
	 * of tables alone matched nothing, and the allow beside it let every
	 * statement on those tables through (review, stop 36) */
	CHECK(refused_with(PG_HEAD "}]\nroles: [{name: r, rules: [{target: db, allow: {statements: [read, write]}, "
			   "review: {tables: [public.payments]}}]}]\n", "review names no statements"));
	CHECK(refused_with(PG_HEAD "}]\nroles: [{name: r, rules: [{target: db, review: {functions: [pg_sleep]}}]}]\n",
			   "review names no statements"));
	CHECK(refused_with(PG_HEAD "}]\nroles: [{name: r, rules: [{target: db, review: {}}]}]\n",
			   "review names no statements"));
	CHECK(refused_with(PG_HEAD "}]\nroles: [{name: r, rules: [{target: db, allow: {tables: [public.t]}}]}]\n",
			   "allow names no statements"));
	CHECK(refused_with(PG_HEAD "}]\nroles: [{name: r, rules: [{target: db, review: {statements: []}}]}]\n",
			   "statements is empty"));
	CHECK(refused_with(PG_HEAD "}]\nroles: [{name: r, rules: [{target: db, allow: {statements: [select], functions: []}}]}]\n",
			   "functions is empty"));
	CHECK(loads(PG_HEAD "}]\nroles: [{name: r, rules: [{target: db, allow: {statements: [read, write]}, "
		    "review: {statements: [write], tables: [public.payments]}}]}]\n"));
	CHECK(loads(PG_HEAD "}]\nroles: [{name: r, rules: [{target: db, allow: {}}]}]\n"));   /* connect, no statement */
	CHECK(refused_with("version: 1\nagents: [{name: a}]\ntargets: [{name: api, protocol: http, address: 127.0.0.1:80}]\n"
			   "roles: [{name: r, rules: [{target: api, allow: {http: ['GET /**']}, review: {http: []}}]}]\n",
			   "http is empty"));
	CHECK(refused_with("version: 1\nagents: [{name: a}]\ntargets: [{name: api, protocol: http, address: 127.0.0.1:80}]\n"
			   "roles: [{name: r, rules: [{target: api, allow: {http: ['GET /**']}, review: {timeout: 60s}}]}]\n",
			   "review names no requests"));
	/* one address written two ways */
	CHECK(refused_with("version: 1\nagents: [{name: a}]\ntargets: [{name: db, protocol: postgres, address: 10.0.0.5:5432},\n"
			   "  {name: raw, protocol: tcp, address: 10.0.0.5/32:5432}]\n", "same address as target"));
	CHECK(refused_with("version: 1\nagents: [{name: a}]\ntargets: [{name: db, protocol: tcp, address: '[fd00::5/128]:80'},\n"
			   "  {name: raw, protocol: tcp, address: '[fd00::5]:80'}]\n", "same address as target"));
	CHECK(loads("version: 1\nagents: [{name: a}]\ntargets: [{name: db, protocol: postgres, address: 10.0.0.5:5432},\n"
		    "  {name: raw, protocol: tcp, address: 10.0.0.0/31:5432}]\n"));
	/* a header credential beside another: one would have been dropped */
	CHECK(refused_with("version: 1\nagents: [{name: a}]\ntargets: [{name: api, protocol: http, address: 127.0.0.1:80,\n"
			   "  upstream: {bearer_token_file: /etc/agentgate/t, header: {name: X-Api-Key, value_file: /etc/agentgate/k}}}]\n",
			   "'header' conflicts with 'bearer_token_file'"));
	/* search_path: one schema, as PostgreSQL folds it */
	CHECK(refused_with(PG_HEAD ", upstream: {search_path: \"app, public\"}}]\n", "must be one schema name"));
	CHECK(refused_with(PG_HEAD ", upstream: {search_path: Public}}]\n", "must be one schema name"));
	CHECK(refused_with(PG_HEAD ", upstream: {search_path: \"$user\"}}]\n", "must be one schema name"));
	CHECK(loads(PG_HEAD ", upstream: {search_path: app_2}}]\n"));
	/* a NUL or control byte in a key */
	CHECK(refused_with("version: 1\nmode: observe\n\"mode\\0\": enforce\nagents: [{name: a}]\n",
			   "must not contain control characters"));
	/* an IPv6 prefix that takes in every IPv4 address */
	CHECK(refused_with("version: 1\nagents: [{name: a}]\ntargets: [{name: t, protocol: tcp, address: \"[::/0]:80\"}]\n",
			   "also covers every IPv4 address"));
	CHECK(refused_with("version: 1\nagents: [{name: a}]\ntargets: [{name: t, protocol: tcp, address: \"[::/80]:80\"}]\n",
			   "also covers every IPv4 address"));
	CHECK(loads("version: 1\nagents: [{name: a}]\ntargets: [{name: t, protocol: tcp, address: \"[::/81]:80\"}]\n"));
	CHECK(loads("version: 1\nagents: [{name: a}]\ntargets: [{name: t, protocol: tcp, address: \"[2000::/3]:80\"}]\n"));
	/* more rules for one target than the modules judge against */
	for (int nroles = 64; nroles <= 65; nroles++) {
		f = open_memstream(&text, &len);
		fputs("version: 1\nagents: [{name: a}]\n"
		      "targets: [{name: api, protocol: http, address: 127.0.0.1:80}]\nroles:\n", f);
		for (int i = 0; i < nroles; i++)
			fprintf(f, "  - {name: r%d, rules: [{target: api, allow: {http: [\"GET /a/**\"]}}]}\n", i);
		fputs("bindings:\n", f);
		for (int i = 0; i < nroles; i++)
			fprintf(f, "  - {role: r%d, agents: [a]}\n", i);
		fclose(f);
		if (nroles == 64)
			CHECK(loads(text));
		else
			CHECK(refused_with(text, "has 65 rules for target 'api'"));
		free(text);
	}
}

/* tables and functions entries the matcher can never match: refused (in
 * a review list they let the statement through as allowed). */
static void test_pg_name_entries(void)
{
	static const char *const fmt =
		"version: 1\nagents: [{name: a}]\n"
		"targets: [{name: db, protocol: postgres, address: 10.0.0.5:5432}]\n"
		"roles: [{name: r, rules: [{target: db, allow: {statements: [read, write]},\n"
		"  review: {statements: [delete], tables: ['%s'], functions: ['%s']}}]}]\n";
	static const struct { const char *table, *func; bool ok; } cases[] = {
		{ "public.orders", "public.lower", true }, { "orders", "lower", true },
		{ "public.*", "pg_catalog.lower", true }, { "*", "x", true },
		{ "public.Orders", "Lower", true },   /* a quoted identifier keeps its case */
		{ "*.orders", "lower", false }, { "public.order*", "lower", false },
		{ "orders ", "lower", false }, { "a.b.c", "lower", false }, { "public.\"x\"", "lower", false },
		{ "orders", "public.*", false }, { "orders", "*", false }, { "orders", "lo wer", false },
	};
	char text[640];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct policy_errors e;
		struct policy *p;

		snprintf(text, sizeof(text), fmt, cases[i].table, cases[i].func);
		p = load_str("names.yaml", text, &e);
		CHECK((p != NULL) == cases[i].ok);
		if ((p != NULL) != cases[i].ok) {
			fprintf(stderr, "  table '%s' function '%s'\n", cases[i].table, cases[i].func);
			dump_errors(&e);
		}
		if (!cases[i].ok)
			CHECK(e.n >= 1 && strstr(e.e[0].msg, "matches no"));
		policy_free(p);
	}
}

/* Bidirectional controls in quoted user text never reach an error line. */
static void test_error_text_bidi(void)
{
	struct policy_errors e;
	struct policy *p = load_str("bidi.yaml", "version: 1\nagents: [{name: a, \"x\xe2\x80\xae:ok\xe2\x81\xa6\": 1}]\n",
				    &e);

	CHECK(p == NULL && e.n >= 1 && strstr(e.e[0].msg, "x???:ok???") && !strstr(e.e[0].msg, "\xe2"));
	if (p == NULL && e.n >= 1 && !strstr(e.e[0].msg, "x???:ok???"))
		dump_errors(&e);
	policy_free(p);
}

/* A binding with both agents and claims grants each side alone: refused. */
static void test_binding_both_keys(void)
{
	struct policy_errors e;
	struct policy *p = load_str("both.yaml", "version: 1\nagents: [{name: a}]\nroles: [{name: r}]\n"
				    "bindings:\n  - {role: r, agents: [a], claims: {groups: [x]}}\n", &e);

	CHECK(p == NULL && has_error(&e, 5, 36, "not both"));
	if (p || !has_error(&e, 5, 36, "not both"))
		dump_errors(&e);
	policy_free(p);
}

/* groups_claim naming a claim that identifies the token or its client:
 * refused (a binding on client_id was matched as a group, for users too). */
static void test_groups_claim_reserved(void)
{
	static const char *const fmt =
		"version: 1\n"
		"agents:\n"
		"  - name: a\n"
		"    identity: {source: token_file, token_file: /run/t, issuer: http://127.0.0.1:5556,\n"
		"               audience: x, groups_claim: %s}\n";
	static const struct { const char *claim; bool ok; } cases[] = {
		{ "groups", true }, { "roles", true }, { "client_id", false }, { "azp", false },
		{ "sub", false }, { "aud", false },
	};
	char text[512];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct policy_errors e;
		struct policy *p;

		snprintf(text, sizeof(text), fmt, cases[i].claim);
		p = load_str("gc.yaml", text, &e);
		CHECK((p != NULL) == cases[i].ok);
		if (!cases[i].ok)
			CHECK(has_error(&e, 5, 43, "names a claim that is not a list of groups"));
		if ((p != NULL) != cases[i].ok)
			dump_errors(&e);
		policy_free(p);
	}
}

/* Secret files (read with root's rights) must be named by absolute paths
 * no one but root can re-point: refused at load, with the file's line. A
 * file not there yet loads (it is read when needed). Runs as root. */
static void test_secret_paths(void)
{
	char d[] = "/tmp/agentgate-unit-secret-XXXXXX", text[2048], open_dir[600];
	struct policy_errors e;
	struct policy *p;

	CHECK(mkdtemp(d) != NULL);
	snprintf(open_dir, sizeof(open_dir), "%s/open", d);
	CHECK(mkdir(open_dir, 0700) == 0 && chmod(open_dir, 0777) == 0);
	static const char *const fmt =
		"version: 1\n"
		"agents: [{name: a}]\n"
		"targets:\n"
		"  - name: db\n"
		"    protocol: postgres\n"
		"    address: 10.0.0.5:5432\n"
		"    upstream: {user: app, password_file: %s}\n"
		"  - name: api\n"
		"    protocol: http\n"
		"    address: 10.0.0.6:80\n"
		"    upstream: {bearer_token_file: %s}\n";

	snprintf(text, sizeof(text), fmt, "/etc/agentgate/missing", "/etc/agentgate/missing-too");
	p = load_str("ok.yaml", text, &e);
	CHECK(p != NULL);
	policy_free(p);
	snprintf(text, sizeof(text), fmt, "secrets/db", "/etc/agentgate/missing");
	p = load_str("rel.yaml", text, &e);
	CHECK(p == NULL && has_error(&e, 7, 42, "password_file must be an absolute path"));
	CHECK(p == NULL && !strstr(e.e[0].msg, "secrets/db"));   /* maybe the secret itself: not echoed */
	policy_free(p);
	/* a token written where agent_token belongs: named, not echoed */
	p = load_str("bearer.yaml", "version: 1\nagents: [{name: a}]\ntargets: [{name: api, protocol: http, "
		     "address: 10.0.0.6:80, upstream: {bearer: sk_live_SECRET123}}]\n", &e);
	CHECK(p == NULL && has_error(&e, 3, 80, "bearer must be 'agent_token'") &&
	      !strstr(e.e[0].msg, "SECRET123"));
	policy_free(p);
	char pw[700], tok[700];

	snprintf(pw, sizeof(pw), "%s/pw", open_dir);
	snprintf(tok, sizeof(tok), "%s/../open/tok", open_dir);
	snprintf(text, sizeof(text), fmt, pw, tok);
	p = load_str("open.yaml", text, &e);
	CHECK(p == NULL && e.total == 2 && has_error(&e, 7, 42, "password_file: '") &&
	      has_error(&e, 11, 35, "bearer_token_file: '") && strstr(e.e[0].msg, "others may create it"));
	if (p == NULL && e.total != 2)
		dump_errors(&e);
	policy_free(p);
	/* a CA bundle or certificate others may replace: the same refusal
	 * (they could impersonate the upstream and receive its credentials) */
	static const char *const tfmt =
		"version: 1\n"
		"agents: [{name: a}]\n"
		"targets:\n"
		"  - name: api\n"
		"    protocol: http\n"
		"    address: 10.0.0.6:443\n"
		"    upstream: {tls: verify-full, ca_file: %s, cert_file: %s, key_file: /etc/agentgate/k}\n"
		"audit:\n"
		"  sinks: [{type: syslog, address: 127.0.0.1:6514, transport: tls, ca_file: %s}]\n";
	snprintf(text, sizeof(text), tfmt, pw, tok, pw);
	p = load_str("ca.yaml", text, &e);
	CHECK(p == NULL && e.total == 3 && has_error(&e, 7, 43, "ca_file: '") &&
	      has_error(&e, 7, 97, "cert_file: '") && has_error(&e, 9, 76, "ca_file: '"));
	if (p == NULL && e.total != 3)
		dump_errors(&e);
	policy_free(p);
	snprintf(text, sizeof(text), tfmt, "/etc/agentgate/ca.pem", "/etc/agentgate/c.pem", "/etc/agentgate/ca.pem");
	p = load_str("ca-ok.yaml", text, &e);
	CHECK(p != NULL);
	policy_free(p);
	/* in a directory only root can change, but the file itself writable
	 * by another user or by everyone: the same refusal (OpenSSL reads it,
	 * not secret_open(), so the loader looks at the file) */
	char cafile[700], crtfile[700];
	snprintf(cafile, sizeof(cafile), "%s/ca.pem", d);
	snprintf(crtfile, sizeof(crtfile), "%s/crt.pem", d);
	for (int i = 0; i < 2; i++) {
		const char *f = i ? crtfile : cafile;
		int fd = open(f, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		CHECK(fd >= 0);
		close(fd);
	}
	CHECK(chown(cafile, 1000, 1000) == 0 && chmod(crtfile, 0666) == 0);
	snprintf(text, sizeof(text), tfmt, cafile, crtfile, "/etc/agentgate/ca.pem");
	p = load_str("ca-file.yaml", text, &e);
	CHECK(p == NULL && e.total == 2 && has_error(&e, 7, 43, "ca_file: '") &&
	      strstr(e.e[0].msg, "owner uid 1000") && strstr(e.e[1].msg, "mode 0666"));
	if (p == NULL && e.total != 2)
		dump_errors(&e);
	policy_free(p);
	CHECK(chown(cafile, 0, 0) == 0 && chmod(crtfile, 0644) == 0);
	p = load_str("ca-file-ok.yaml", text, &e);
	CHECK(p != NULL);
	policy_free(p);
	unlink(cafile);
	unlink(crtfile);
	rmdir(open_dir);
	rmdir(d);
}

static void test_hec_ack_timeout(void)
{
	static const char *const fmt =
		"version: 1\n"
		"agents: [{name: a}]\n"
		"audit:\n"
		"  sinks:\n"
		"    - {type: splunk_hec, url: 'https://s:8088', token_file: /etc/agentgate/hec%s}\n";
	struct policy_errors e;
	struct policy *p;
	char text[512];

	snprintf(text, sizeof(text), fmt, ", ack: true, ack_timeout: 90s");
	p = load_str("hec.yaml", text, &e);
	CHECK(p && p->audit.nsinks == 1 && p->audit.sinks[0].ack_timeout_ms == 90000);
	policy_free(p);
	snprintf(text, sizeof(text), fmt, ", ack: true");
	p = load_str("hec.yaml", text, &e);
	CHECK(p && p->audit.sinks[0].ack_timeout_ms == 0);   /* the sink's default, 60 s */
	/* the running sink holds the timeout it started with: a reload that
	 * changes it is refused, not answered "reloaded" and ignored */
	snprintf(text, sizeof(text), fmt, ", ack: true, ack_timeout: 90s");
	struct policy *q = load_str("hec.yaml", text, &e);
	char why[300] = "";

	CHECK(p && q && policy_reload_refusal(p, q, why, sizeof(why)) == -1 &&
	      strstr(why, "the audit section changed"));
	policy_free(q);
	policy_free(p);
	snprintf(text, sizeof(text), fmt, ", ack_timeout: 5s");
	p = load_str("hec.yaml", text, &e);
	CHECK(!p && e.total == 1 && strstr(e.e[0].msg, "ack_timeout needs 'ack: true'"));
	policy_free(p);
	snprintf(text, sizeof(text), fmt, ", ack: true, ack_timeout: 500ms");
	p = load_str("hec.yaml", text, &e);
	CHECK(!p && e.total == 1 && strstr(e.e[0].msg, "between 1s and 1h"));
	policy_free(p);
	snprintf(text, sizeof(text),
		 "version: 1\nagents: [{name: a}]\naudit:\n  sinks:\n    - {type: webhook, url: 'https://h', ack_timeout: 5s}\n");
	p = load_str("hook.yaml", text, &e);
	CHECK(!p && e.total >= 1 && strstr(e.e[0].msg, "'ack_timeout' does not apply to webhook sinks"));
	policy_free(p);
}

struct warn_log {
	char text[8192];
	int n;
};

static void collect_warning(void *arg, const char *msg)
{
	struct warn_log *w = arg;
	size_t used = strlen(w->text);

	snprintf(w->text + used, sizeof(w->text) - used, "%s\n", msg);
	w->n++;
}

/* A credential sent upstream where someone other than the upstream could
 * read it is legal but warned about; the address dialled is what counts. */
static void test_plaintext_credential_warnings(void)
{
	static const char *const text =
		"version: 1\n"
		"agents: [{name: a}]\n"
		"targets:\n"
		"  - {name: plain, protocol: http, address: 10.0.0.6:80,\n"
		"     upstream: {bearer_token_file: /etc/agentgate-unit/t}}\n"
		"  - {name: unverified, protocol: http, address: 10.0.0.7:443,\n"
		"     upstream: {tls: require, basic_auth_file: /etc/agentgate-unit/t}}\n"
		"  - {name: verified, protocol: http, address: 10.0.0.8:443,\n"
		"     upstream: {tls: verify-full, bearer_token_file: /etc/agentgate-unit/t}}\n"
		"  - {name: local, protocol: http, address: 127.0.0.1:8080,\n"
		"     upstream: {bearer_token_file: /etc/agentgate-unit/t}}\n"
		"  - {name: local-up, protocol: http, address: api.internal:80,\n"
		"     upstream: {address: 127.0.0.2:80, header: {name: X-Key, value_file: /etc/agentgate-unit/t}}}\n"
		"  - {name: away, protocol: http, address: 127.0.0.1:8081,\n"
		"     upstream: {address: 10.0.0.11:80, bearer_token_file: /etc/agentgate-unit/t}}\n"
		"  - {name: cluster, protocol: kubernetes, address: 10.0.0.9:6443,\n"
		"     upstream: {bearer: agent_token}}\n"
		"  - {name: none, protocol: http, address: 10.0.0.10:80}\n"
		"  - {name: db, protocol: postgres, address: 10.0.0.5:5432,\n"
		"     upstream: {user: app, password_file: /etc/agentgate-unit/t, tls: disable}}\n"
		"  - {name: db-verified, protocol: postgres, address: 10.0.0.5:5433,\n"
		"     upstream: {user: app, password_file: /etc/agentgate-unit/t, tls: verify-full,\n"
		"                ca_file: /etc/agentgate-unit/t}}\n"
		"  - {name: db-local, protocol: postgres, address: 127.0.0.1:5432,\n"
		"     upstream: {user: app, password_file: /etc/agentgate-unit/t}}\n"
		"  - {name: db-trust, protocol: postgres, address: 10.0.0.5:5434, upstream: {user: app}}\n"
		"  - {name: db-chain, protocol: postgres, address: 10.0.0.5:5435,\n"
		"     upstream: {user: app, password_file: /etc/agentgate-unit/t, tls: require,\n"
		"                ca_file: /etc/agentgate-unit/t}}\n"
		"  - {name: chain, protocol: http, address: 10.0.0.12:443,\n"
		"     upstream: {tls: require, ca_file: /etc/agentgate-unit/t, bearer_token_file: /etc/agentgate-unit/t}}\n"
		"  - {name: db-name, protocol: postgres, address: localhost:5432,\n"
		"     upstream: {user: app, password_file: /etc/agentgate-unit/t}}\n";
	struct warn_log w = { 0 };
	struct policy_errors e;
	struct policy *p = load_str("warn.yaml", text, &e);

	CHECK(p != NULL);
	if (!p) {
		dump_errors(&e);
		return;
	}
	policy_warnings(p, collect_warning, &w);
	/* and the eight http and kubernetes targets with no name (their Host
	 * is forwarded as sent): all but local-up */
	CHECK(w.n == 15);
	CHECK(strstr(w.text, "target 'none': it has no name (an address, no upstream.server_name)") != NULL);
	CHECK(strstr(w.text, "target 'local-up': it has no name") == NULL);
	CHECK(strstr(w.text, "target 'db': the server is not verified (tls: disable): ") != NULL);
	CHECK(strstr(w.text, "target 'plain': its credential (bearer_token_file) is sent upstream over "
			     "plain TCP (no tls)") != NULL);
	CHECK(strstr(w.text, "target 'unverified': its credential (basic_auth_file) is sent upstream over "
			     "TLS that is not verified (tls: require)") != NULL);
	CHECK(strstr(w.text, "target 'away': ") != NULL);
	CHECK(strstr(w.text, "target 'cluster': its credential (bearer: agent_token)") != NULL);
	CHECK(strstr(w.text, "set tls: verify-full") != NULL);
	/* require with a ca_file checks the chain, not the name: still said */
	CHECK(strstr(w.text, "target 'db-chain': the server is not verified (tls: require, with ca_file: "
			     "its chain is checked, not its name)") != NULL);
	CHECK(strstr(w.text, "target 'chain': its credential (bearer_token_file) is sent upstream over TLS "
			     "whose server name is not verified") != NULL);
	for (size_t i = 0; i < p->ntargets; i++) {
		const struct policy_target *t = &p->targets[i];
		enum policy_tls_check want = !strcmp(t->name, "db-chain") || !strcmp(t->name, "chain") ?
					     POLICY_TLS_CHAIN : !strcmp(t->name, "unverified") ? POLICY_TLS_NONE :
					     !strcmp(t->name, "verified") || !strcmp(t->name, "db-verified") ?
					     POLICY_TLS_FULL : POLICY_TLS_OFF;

		CHECK(policy_tls_check(&t->upstream) == want);
	}
	if (w.n != 15)
		fprintf(stderr, "  warnings:\n%s", w.text);
	policy_free(p);
}

struct secret_log {
	char text[2048];
	int n;
};

static void collect_secret(void *arg, const struct policy_secret *s)
{
	struct secret_log *l = arg;
	size_t used = strlen(l->text);
	char owner[300];

	policy_secret_owner(s, owner, sizeof(owner));
	snprintf(l->text + used, sizeof(l->text) - used, "%s %s\n", owner, s->field);
	l->n++;
}

/* Every secret file a target or sink names is listed; a file group or
 * others may access is warned about with its mode, one at 0600 or not there
 * is not (DESIGN §3: reported, not refused). */
static void test_secret_files_exposed(void)
{
	char d[] = "/tmp/agentgate-unit-XXXXXX", open644[64], open640[64], closed[64], text[2048];
	struct secret_log l = { 0 };
	struct warn_log w = { 0 };
	struct policy_errors e;
	struct policy *p;
	int fd;

	CHECK(mkdtemp(d) != NULL);
	snprintf(open644, sizeof(open644), "%s/a", d);
	snprintf(open640, sizeof(open640), "%s/b", d);
	snprintf(closed, sizeof(closed), "%s/c", d);
	const char *files[] = { open644, open640, closed };
	const mode_t modes[] = { 0644, 0640, 0600 };

	for (int i = 0; i < 3; i++) {
		CHECK((fd = open(files[i], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) >= 0);
		CHECK(fchmod(fd, modes[i]) == 0);
		close(fd);
	}
	snprintf(text, sizeof(text),
		 "version: 1\n"
		 "agents: [{name: a}]\n"
		 "targets:\n"
		 "  - {name: db, protocol: postgres, address: 127.0.0.1:5432,\n"
		 "     upstream: {user: app, password_file: %s, tls: verify-full, cert_file: %s, key_file: %s}}\n"
		 "  - {name: b, protocol: http, address: 127.0.0.1:80, upstream: {server_name: api.internal, bearer_token_file: %s}}\n"
		 "  - {name: u, protocol: http, address: 127.0.0.1:81, upstream: {server_name: api.internal, basic_auth_file: %s}}\n"
		 "  - {name: h, protocol: http, address: 127.0.0.1:82, upstream: {server_name: api.internal, header: {name: X-K, value_file: %s}}}\n"
		 "  - {name: gone, protocol: http, address: 127.0.0.1:83, upstream: {server_name: api.internal, bearer_token_file: %s/none}}\n"
		 "audit:\n"
		 "  sinks:\n"
		 "    - {type: stdout}\n"
		 "    - {type: splunk_hec, url: 'https://127.0.0.1:8088', token_file: %s}\n",
		 closed, open644, open640, closed, open644, closed, d, open640);
	p = load_str("secrets.yaml", text, &e);
	CHECK(p != NULL);
	if (!p) {
		dump_errors(&e);
		goto out;
	}
	policy_secret_files(p, collect_secret, &l);
	CHECK(l.n == 7);
	CHECK(strcmp(l.text, "target 'db' password_file\ntarget 'db' key_file\ntarget 'b' bearer_token_file\n"
			     "target 'u' basic_auth_file\ntarget 'h' header.value_file\n"
			     "target 'gone' bearer_token_file\naudit sink 1 (splunk_hec) token_file\n") == 0);
	CHECK(policy_secret_exposed(open644) == 0644 && policy_secret_exposed(open640) == 0640);
	CHECK(policy_secret_exposed(closed) == 0 && policy_secret_exposed(d) == 0);
	policy_warnings(p, collect_warning, &w);
	CHECK(w.n == 3);
	snprintf(text, sizeof(text),
		 "target 'db': key_file '%s' may be accessed by group or others (mode 0640); make it 0600\n"
		 "target 'u': basic_auth_file '%s' may be accessed by group or others (mode 0644); make it 0600\n"
		 "audit sink 1 (splunk_hec): token_file '%s' may be accessed by group or others (mode 0640); "
		 "make it 0600\n", open640, open644, open640);
	CHECK(strcmp(w.text, text) == 0);
	if (strcmp(w.text, text) != 0)
		fprintf(stderr, "  warnings:\n%s", w.text);
	policy_free(p);
out:
	for (int i = 0; i < 3; i++)
		unlink(files[i]);
	rmdir(d);
}

int main(void)
{
	RUN(test_default_policy);
	RUN(test_full_yaml);
	RUN(test_full_json_twin);
	RUN(test_hash_is_sha256_of_bytes);
	RUN(test_compile_may_target);
	RUN(test_defaults_and_forms);
	RUN(test_bad_files);
	RUN(test_errors_sorted_and_capped);
	RUN(test_buffers_and_limits);
	RUN(test_refused_shapes);
	RUN(test_unix_sockets);
	RUN(test_error_format);
	RUN(test_match_target);
	RUN(test_metadata);
	RUN(test_dns_allowed);
	RUN(test_parse_addr);
	RUN(test_proto_name);
	RUN(test_reload_refusal);
	RUN(test_secret_paths);
	RUN(test_groups_claim_reserved);
	RUN(test_binding_both_keys);
	RUN(test_pg_name_entries);
	RUN(test_error_text_bidi);
	RUN(test_hec_ack_timeout);
	RUN(test_plaintext_credential_warnings);
	RUN(test_secret_files_exposed);
	UNIT_DONE("policy");
}
