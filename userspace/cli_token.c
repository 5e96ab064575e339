/* SPDX-License-Identifier: Apache-2.0 */
/*
 * agentgate token verify: one token, one agent, the enforcer's rules. The
 * token comes from argv or, with "-", from stdin (so it stays out of ps);
 * it is never echoed, not even in part: a bearer token on a terminal or in
 * a ticket is a leaked credential.
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli_token.h"
#include "ident.h"
#include "ident_jwks.h"
#include "ident_jwt.h"
#include "policy.h"
#include "util.h"

#define TOKEN_DEFAULT_POLICY "/etc/agentgate/policy.yaml"

static int usage(void)
{
	fprintf(stderr, "usage: agentgate token verify --agent NAME [--policy FILE] [--user [--actor SUB]] TOKEN|-\n"
			"  --user        verify TOKEN as a user's token the agent presents for delegation\n"
			"  --actor SUB   the agent's own principal (sub) that an RFC 8693 act.sub must name\n");
	return 2;
}

static int refused(const char *why)
{
	fprintf(stderr, "agentgate: token: refused: %s\n", why);
	return 1;
}

/* Reads at most JWT_MAX_TOKEN + 64 bytes of stdin: enough to tell a token
 * that is too large (jwt_verify says so) without reading without end. */
static char *read_stdin(size_t *len)
{
	size_t cap = JWT_MAX_TOKEN + 64, n = 0;
	char *buf = malloc(cap + 1);

	if (!buf)
		return NULL;
	while (n < cap) {
		ssize_t r = read(STDIN_FILENO, buf + n, cap - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			OPENSSL_cleanse(buf, cap + 1);
			free(buf);
			return NULL;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	buf[n] = '\0';
	*len = n;
	return buf;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static json_t *strv_json(const char *const *v, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static void set_str(json_t *o, const char *key, const char *val)
{
	if (val)
		json_object_set_new(o, key, json_string(val));
}

static int print_claims(const struct jwt_claims *c, const char *agent)
{
	json_t *o = json_object();
	char *text;

	if (!o)
		return -ENOMEM;
	json_object_set_new(o, "agent", json_string(agent));
	set_str(o, "iss", c->iss);
	set_str(o, "sub", c->sub);
	json_object_set_new(o, "aud", strv_json(c->aud, c->naud));
	json_object_set_new(o, "exp", json_integer(c->exp));
	if (c->has_iat)
		json_object_set_new(o, "iat", json_integer(c->iat));
	if (c->has_nbf)
		json_object_set_new(o, "nbf", json_integer(c->nbf));
	json_object_set_new(o, "groups", strv_json(c->groups, c->ngroups));
	set_str(o, "azp", c->azp);
	set_str(o, "client_id", c->client_id);
	set_str(o, "scope", c->scope);
	set_str(o, "jti", c->jti);
	if (c->act_sub && c->act_iss)
		json_object_set_new(o, "act", json_pack("{s:s, s:s}", "sub", c->act_sub, "iss", c->act_iss));
	else if (c->act_sub)
		json_object_set_new(o, "act", json_pack("{s:s}", "sub", c->act_sub));
	set_str(o, "alg", c->alg);
	if (c->kid[0])
		json_object_set_new(o, "kid", json_string(c->kid));
	/* ASCII: claims are the issuer's and its users' text (a C1 control or
	 * a bidi override in sub would act on the operator's terminal) */
	text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
	json_decref(o);
	if (!text)
		return -ENOMEM;
	printf("%s\n", text);
	free(text);
	return 0;
}

struct verify_opts {
	bool user;             /* a delegating user's token, not the agent's own */
	const char *actor;     /* with user: the agent's sub, for act.sub */
};

static int verify(const char *agent, const char *policy_path, const char *arg, const char *state_dir,
		  const struct verify_opts *vo)
{
	struct policy_errors errs = { 0 };
	const struct policy_identity *id;
	struct ident_issuer *iss = NULL;
	struct issuer_opts opts = { 0 };
	struct jwt_claims claims = { 0 };
	struct jwt_policy jp;
	struct issuer_status st;
	char why[512], cache[PATH_MAX], line[600];
	const char *aud[1];
	struct policy *p;
	char *buf = NULL;
	const char *tok;
	size_t len;
	int idx, ret, rc = 1;

	p = policy_load_file(policy_path, &errs);
	if (!p) {
		for (int i = 0; i < errs.n; i++) {
			policy_error_format(&errs.e[i], line, sizeof(line));
			fprintf(stderr, "agentgate: token: %s\n", line);
		}
		if (errs.n == 0)
			fprintf(stderr, "agentgate: token: cannot load policy '%s'\n", policy_path);
		return 1;
	}
	idx = policy_agent_index(p, agent);
	if (idx < 0) {
		fprintf(stderr, "agentgate: token: no agent '%s' in '%s'\n", agent, policy_path);
		goto out;
	}
	id = &p->agents[idx].identity;
	if (id->source == IDENT_LOCAL || !id->issuer || !id->audience) {
		fprintf(stderr, "agentgate: token: agent '%s' has no verifiable identity "
			"(needs source client_credentials or token_file, with issuer and audience)\n", agent);
		goto out;
	}

	if (strcmp(arg, "-") == 0) {
		buf = read_stdin(&len);
		if (!buf) {
			fprintf(stderr, "agentgate: token: cannot read the token from stdin: %s\n",
				strerror(errno));
			goto out;
		}
		tok = buf;
	} else {
		tok = arg;
		len = strlen(arg);
	}
	while (len && is_space(*tok)) {
		tok++;
		len--;
	}
	while (len && is_space(tok[len - 1]))
		len--;
	if (len == 0) {
		rc = refused("empty token");
		goto out;
	}

	ident_jwks_cache_path(state_dir, id->issuer, cache, sizeof(cache));
	opts.cache_file = cache[0] ? cache : NULL;
	iss = issuer_new(id->issuer, &opts, why, sizeof(why));
	if (!iss) {
		char r[600];

		snprintf(r, sizeof(r), "issuer '%s': %s", id->issuer, why);
		rc = refused(r);
		goto out;
	}

	if (vo->user && !p->agents[idx].accept_user_tokens) {
		rc = refused("the agent does not accept user tokens (accept_user_tokens is not set)");
		goto out;
	}
	/* The enforcer's rules for this agent's tokens (ident.c); a user's
	 * token may be any kind we know (ident_user_verify). */
	ident_jwt_policy(id, (int64_t)time(NULL), aud, &jp);
	if (vo->user)
		jp.typ = NULL;

	ret = issuer_verify(iss, tok, len, &jp, &claims, why, sizeof(why));
	if (issuer_status(iss, &st) == 0 && st.have_keys && st.last_error[0])
		fprintf(stderr, "agentgate: token: warning: issuer '%s' unreachable, using keys fetched "
			"%lld s ago: %s\n", id->issuer, (long long)st.age_s, st.last_error);
	if (ret == 0 && vo->user)
		ret = ident_user_check(&claims, vo->actor ? id->issuer : NULL, vo->actor, why, sizeof(why));
	else if (ret == 0)
		ret = ident_own_check(id, &claims, why, sizeof(why));
	if (ret < 0) {
		rc = refused(why);
		goto out;
	}
	if (print_claims(&claims, agent) < 0) {
		fprintf(stderr, "agentgate: token: out of memory\n");
		goto out;
	}
	rc = 0;
out:
	jwt_claims_free(&claims);
	issuer_free(iss);
	if (buf) {
		OPENSSL_cleanse(buf, JWT_MAX_TOKEN + 65);
		free(buf);
	}
	policy_free(p);
	return rc;
}

int cmd_token(int argc, char **argv, const char *state_dir)
{
	const char *agent = NULL, *policy = TOKEN_DEFAULT_POLICY, *token = NULL;
	struct verify_opts vo = { 0 };
	int i;

	if (argc < 1 || strcmp(argv[0], "verify") != 0)
		return usage();
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--agent") == 0 && i + 1 < argc)
			agent = argv[++i];
		else if (strcmp(argv[i], "--policy") == 0 && i + 1 < argc)
			policy = argv[++i];
		else if (strcmp(argv[i], "--user") == 0)
			vo.user = true;
		else if (strcmp(argv[i], "--actor") == 0 && i + 1 < argc)
			vo.actor = argv[++i];
		else if (strcmp(argv[i], "--") == 0 && i + 2 == argc && !token)
			token = argv[++i];
		else if ((argv[i][0] != '-' || strcmp(argv[i], "-") == 0) && !token)
			token = argv[i];
		else
			return usage();
	}
	if (!agent || !token || (vo.actor && !vo.user))
		return usage();
	return verify(agent, policy, token, state_dir, &vo);
}
