/* SPDX-License-Identifier: Apache-2.0 */
/*
 * policy: load and validate a policy file (YAML via libyaml, JSON via jansson)
 * into an immutable compiled snapshot, and answer questions about it.
 *
 * The shape is the contract of DESIGN.md §3. Unknown keys and values are
 * errors, reported as 'file:line:col: message' (line and column 1-based).
 * A struct policy is never modified after policy_load_*() returns; a reload
 * builds a new one and swaps it whole. policy_free() accepts NULL.
 *
 * Addresses are 16 bytes, IPv4 stored IPv4-mapped (::ffff:a.b.c.d); prefix
 * lengths are on that 128-bit form (an IPv4 /24 is 120). Ports host order.
 */
#ifndef AGENTGATE_POLICY_H
#define AGENTGATE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define POLICY_MAX_ERRORS 32
#define POLICY_MAX_FILE   (4u << 20)   /* larger policy files are refused */

enum policy_mode { POLICY_ENFORCE = 0, POLICY_OBSERVE = 1 };

enum policy_proto {
	PROTO_TCP = 0,
	PROTO_TLS,
	PROTO_POSTGRES,
	PROTO_HTTP,
	PROTO_KUBERNETES,
	PROTO__COUNT
};

enum policy_ident_source {
	IDENT_LOCAL = 0,
	IDENT_CLIENT_CREDENTIALS,
	IDENT_TOKEN_FILE,
};

enum policy_addr_kind { ADDR_IP = 0, ADDR_CIDR, ADDR_HOST };

struct policy_strv {           /* a list of strings; n may be 0, v may be NULL */
	char **v;
	size_t n;
};

struct policy_addr {
	enum policy_addr_kind kind;
	uint8_t addr[16];          /* ADDR_IP / ADDR_CIDR (network address, host bits zero) */
	uint8_t prefixlen;         /* 128 for ADDR_IP; 96+n for IPv4 /n */
	bool is_v4;
	char *host;                /* ADDR_HOST: lower case, no trailing dot */
	uint16_t port;             /* 1..65535 */
};

struct policy_error {
	char file[256];
	int line, col;             /* 1-based; 0 when unknown */
	char msg[256];
};

struct policy_errors {
	struct policy_error e[POLICY_MAX_ERRORS];
	int n;                     /* errors stored (at most POLICY_MAX_ERRORS) */
	int total;                 /* errors found */
};

struct policy_upstream {       /* fields for later protocol modules; all optional */
	struct policy_addr address;    /* has_address: dial this instead of the original dst */
	bool has_address;
	char *tls;                     /* disable | require | verify-full */
	char *ca_file, *cert_file, *key_file, *server_name;
	char *user, *password_file, *database, *search_path;
	uint32_t statement_timeout_ms, idle_in_transaction_timeout_ms;
	char *bearer_token_file, *basic_auth_file, *header_name, *header_value_file;
	bool bearer_agent_token;       /* upstream: {bearer: agent_token} */
	bool forwarded_for;            /* http: add X-Forwarded-For (the agent's address) */
	uint32_t response_timeout_ms;  /* http: 0 = the default (POLICY_HTTP_RESPONSE_TIMEOUT_MS) */
};

/* How long an http or kubernetes upstream may take to begin its answer (the
 * response head) to the request it was sent, unless the target says
 * otherwise (upstream.response_timeout, 1 s to 24 h). */
#define POLICY_HTTP_RESPONSE_TIMEOUT_MS 60000u
#define POLICY_HTTP_RESPONSE_TIMEOUT_MAX_MS (24u * 3600u * 1000u)

struct policy_target {
	char *name;
	enum policy_proto proto;
	struct policy_addr addr;       /* what agents dial */
	struct policy_upstream upstream;
	bool names_metadata;           /* addr is a cloud metadata address */
	bool user_token_password;      /* postgres: user_tokens: password (delegation) */
	int line;
};

/* Rules one agent may hold for one target (distinct roles): the modules
 * judge against at most this many. A policy that binds more to one agent by
 * name is refused at load; more brought by a token's claims is a denial at
 * run time. */
#define POLICY_MAX_RULES_PER_TARGET 64

struct policy_identity {
	enum policy_ident_source source;
	char *issuer, *client_id, *client_secret_file, *private_key_file;
	char *audience, *token_file, *groups_claim;
};

struct policy_agent {
	char *name;
	char *cgroup;                  /* as written; NULL = agentgate/<name> */
	struct policy_identity identity;
	bool accept_user_tokens;
	uint32_t max_connections;      /* limits.connections, default 256 */
	uint32_t connect_rate;         /* limits.connect_rate: new connections a second, default 200 */
	uint32_t parse_cpu;            /* limits.parse_cpu: % of one CPU for uncached statements, default 25 */
	uint32_t mask_cpu;             /* limits.mask_cpu: % of one CPU for masking answers; 0: 75% of each worker */
	struct policy_strv unix_sockets; /* AF_UNIX addresses it may connect or send to: "/path", "@abstract" */
	int line;
	/* compiled: targets this agent may connect to (bindings -> roles -> rules) */
	bool *may_target;              /* [ntargets] */
	const struct policy_rule **target_rule; /* [ntargets]: first rule naming it, or NULL */
};

struct policy_action {             /* allow: / review: of a rule; all lists optional */
	bool present;
	struct policy_strv statements, tables, functions, http, verbs, resources, namespaces;
	uint32_t timeout_s;            /* review only; default 300 */
};

struct policy_mask {
	bool present;
	struct policy_strv columns, detectors, json;
};

struct policy_rule {
	char *target;                  /* target name */
	int target_idx;
	struct policy_action allow, review;
	struct policy_mask mask;
	const char *role;              /* owning role's name */
	int index;                     /* position in the role's rules */
	int line;
	/* "role 'R' rule N (line L)": how verdicts, errors and audit events
	 * name the rule, formatted once here rather than per statement. NULL
	 * only while the policy is invalid (no role name, no memory). */
	char *label;
};

struct policy_role {
	char *name;
	struct policy_rule *rules;
	size_t nrules;
	int line;
};

struct policy_binding {
	char *role;
	int role_idx;
	struct policy_strv agents;
	/* claims: {claim-name: [values]} */
	char **claim_names;
	struct policy_strv *claim_values;
	size_t nclaims;
	int line;
};

enum policy_sink_type { SINK_FILE = 0, SINK_STDOUT, SINK_SYSLOG, SINK_SPLUNK_HEC,
			SINK_ELASTICSEARCH, SINK_WEBHOOK };

struct policy_sink {
	enum policy_sink_type type;
	char *path;                    /* file */
	char *address, *transport;     /* syslog: host:port as written; tcp (default) | tls | relp */
	char *url, *token_file, *index;/* hec, es, webhook */
	char *ca_file;                 /* syslog tls, https: CA bundle to verify the server (NULL: system CAs) */
	bool ack;                      /* splunk_hec: indexer acknowledgement (channel + /ack polling) */
	uint32_t ack_timeout_ms;       /* splunk_hec with ack: a batch unacknowledged this long is posted again (0: 60 s) */
	uint64_t rotate_bytes;         /* file: rotate at this size (0: never) */
	uint32_t rotate_age_ms;        /* file: rotate when the file is this old (0: never) */
	uint32_t keep;                 /* file: rotated files kept (path.1 .. path.keep; default 5) */
	int line;
};

struct policy_audit {
	char *spool_dir;
	uint64_t spool_max_bytes;      /* 0: not set, the audit module's default */
	char *on_full;                 /* drop_newest (default) | fail_closed; never NULL */
	struct policy_sink *sinks;
	size_t nsinks;
	/* session recording (off when recording_dir is NULL) */
	char *recording_dir;
	uint64_t recording_max_bytes;  /* 0: the recorder's default */
	uint32_t recording_max_age_ms; /* 0: the recorder's default */
	/* false: no event for an allowed statement or HTTP request (6005,
	 * 4002); denials, connections and identity are always recorded */
	bool allowed_requests;
};

struct policy {
	char *path;                    /* file it came from ("<embedded>" for the default) */
	char hash[65];                 /* sha256 hex of the file's bytes */
	int version;
	enum policy_mode mode;
	bool has_dns;
	struct policy_addr dns_upstream;   /* ADDR_IP with port */
	struct policy_strv dns_allow;      /* empty: every name allowed */
	struct policy_agent *agents;
	size_t nagents;
	struct policy_target *targets;
	size_t ntargets;
	struct policy_role *roles;
	size_t nroles;
	struct policy_binding *bindings;
	size_t nbindings;
	struct policy_audit audit;
	char *approvals_webhook;
};

/*
 * Load and validate. 'path' names the source in error messages; the format is
 * JSON when the name ends in ".json" or the first non-blank byte is '{',
 * YAML otherwise. Returns the compiled policy, or NULL with errs filled
 * (errs->n >= 1). Never prints.
 */
struct policy *policy_load_file(const char *path, struct policy_errors *errs);
struct policy *policy_load_buffer(const char *name, const char *buf, size_t len,
				  struct policy_errors *errs);
void policy_free(struct policy *p);

/* Formats error i as "file:line:col: msg" into out (always NUL-terminated). */
void policy_error_format(const struct policy_error *e, char *out, size_t outlen);

/* Index of the agent with this name, or -1. */
int policy_agent_index(const struct policy *p, const char *name);
/* r's label; a rule built outside the loader (tests) has none and gets it
 * formatted into buf. */
const char *policy_rule_label(const struct policy_rule *r, char *buf, size_t len);
int policy_target_index(const struct policy *p, const char *name);

/*
 * Host-name targets match addresses the agent's DNS queries resolved to. The
 * caller supplies the lookup: return true if 'host' resolved to 'addr' for
 * this agent and the answer's TTL has not run out.
 */
typedef bool (*policy_host_resolved_fn)(void *ctx, const char *host, const uint8_t addr[16]);

/*
 * The target a connection to addr:port is for, or -1. Order: an exact IP
 * target, then the longest CIDR prefix, then a host-name target whose name
 * resolved to addr (via 'resolved', which may be NULL). Pure.
 */
int policy_match_target(const struct policy *p, const uint8_t addr[16], uint16_t port,
			policy_host_resolved_fn resolved, void *ctx);

/* True when name matches dns.allow (exact, or "*.suffix" for any name below
 * suffix, not suffix itself), or when dns.allow is absent/empty. Case-insensitive. */
bool policy_dns_allowed(const struct policy *p, const char *name);

/* True for the metadata class: 169.254.0.0/16, 100.100.100.200, fe80::/10,
 * fd00:ec2::254 (16-byte form). */
bool policy_is_metadata_addr(const uint8_t addr[16]);

/* Parses "ip:port", "[v6]:port", "cidr:port" ("10.0.0.0/8:5432", "[fd00::/8]:443")
 * or "host:port". Returns 0, or -EINVAL (-ENOMEM) with a reason in why (which
 * may be NULL). For ADDR_HOST, out->host is malloc'd and the caller frees it;
 * on failure *out is zeroed, so there is nothing to free. */
int policy_parse_addr(const char *s, struct policy_addr *out, char *why, size_t whylen);

const char *policy_proto_name(enum policy_proto p);

/* What is checked of an upstream's certificate. */
enum policy_tls_check {
	POLICY_TLS_OFF,     /* tls: disable: no TLS */
	POLICY_TLS_NONE,    /* tls: require without a ca_file: encrypted, nothing checked */
	POLICY_TLS_CHAIN,   /* tls: require with a ca_file: the chain against it, not the name
			     * (libpq's sslmode=require with a root certificate file, as verify-ca) */
	POLICY_TLS_FULL,    /* tls: verify-full: the chain (ca_file, else the system store) and the name */
};
/* The check an upstream's tls and ca_file ask for (tls absent: disable). */
enum policy_tls_check policy_tls_check(const struct policy_upstream *u);

/* Calls fn once per legal but risky setting, with a one-line message naming
 * the target: an http or kubernetes credential sent upstream without a
 * verified TLS connection, to an address off this host; and a secret file
 * that group or others may access (policy_secret_warnings(), which stats the
 * files named). */
void policy_warnings(const struct policy *p, void (*fn)(void *arg, const char *msg), void *arg);

/* A secret file the policy names (policy_secrets.c): a target upstream's
 * password_file, key_file, bearer_token_file, basic_auth_file or
 * header.value_file, or an audit sink's token_file. Points into the policy. */
struct policy_secret {
	const char *target;            /* the target's name; NULL: an audit sink's */
	size_t sink;                   /* target NULL: its index in audit.sinks */
	const char *sink_type;         /* target NULL: "splunk_hec", ... */
	const char *field;             /* "password_file", ..., "header.value_file", "token_file" */
	const char *path;
};
/* Calls fn for each secret file p names, targets in order, then sinks. */
void policy_secret_files(const struct policy *p, void (*fn)(void *arg, const struct policy_secret *s),
			 void *arg);
/* path's permission bits (& 07777) when they give group or others any
 * access, else 0, also when it cannot be stat'ed (not there yet: it is
 * checked again at the next load). Never opens the file. */
unsigned policy_secret_exposed(const char *path);
/* "target 'db'" or "audit sink 1 (splunk_hec)" into out. */
void policy_secret_owner(const struct policy_secret *s, char *out, size_t len);
/* Calls fn once per exposed secret file: "target 'db': password_file
 * '/etc/x' may be accessed by group or others (mode 0644); make it 0600".
 * Names the path and mode, never the content. */
void policy_secret_warnings(const struct policy *p, void (*fn)(void *arg, const char *msg), void *arg);

/*
 * agentgate reload: 0 when nw may replace old in a running enforcer, else -1
 * with why saying which part changed ("agent 'a' (line 4): its identity
 * changed; restart the enforcer to apply it"). Agents, targets' names,
 * protocols and addresses, dns, audit and approvals must be the same;
 * roles, bindings, rules, masks, mode and upstream settings may change.
 * See policy_reload.c.
 */
int policy_reload_refusal(const struct policy *old, const struct policy *nw, char *why, size_t len);
/* True when a and b mask alike (the same lists, in the same order). */
bool policy_mask_same(const struct policy_mask *a, const struct policy_mask *b);
/* True when a and b decide and mask alike (the same lists, in the same order,
 * the same role and target; their labels may differ). */
bool policy_rule_same(const struct policy_rule *a, const struct policy_rule *b);
/* True when a and b would dial, authenticate and speak to the upstream alike. */
bool policy_upstream_same(const struct policy_upstream *a, const struct policy_upstream *b);

#endif /* AGENTGATE_POLICY_H */
