// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer target for userspace/k8s.c. The input is
 *
 *   [U ]METHOD SP PATH[?QUERY]      ("U " = the request is an upgrade)
 *   [LF rule lines: "v:VERB", "r:RESOURCE", "n:NAMESPACE"]...
 *
 * The request goes through k8s_resolve, and the promises of k8s.h are
 * checked on what comes out:
 *  - refused: *out is all zero; accepted: every field NUL-terminated inside
 *    its array, the same answer twice, attributes in their character sets;
 *  - a non-resource request keeps the path and the lower-case method;
 *  - an upgrade is a GET or POST on a subresource, with the apiserver's verb
 *    (create for exec, attach and portforward and for POST, get for GET),
 *    but create for core nodes/proxy (the kubelet's exec behind it);
 *  - get and delete always name an object (without a name they are
 *    list/watch and deletecollection);
 *  - a path made non-canonical ("/.." appended) is refused;
 *  - the rule of shared/cases/k8s.txt allows only get/list of core pods in
 *    namespace default; "*" matches every resource request that is not an
 *    upgrade and no other; the request's own resource string (R[.G][/S],
 *    as k8s_resource_string writes it) matches it, upgrade or not.
 * The rule lines build an action for k8s_action_check/k8s_action_matches,
 * and the whole input is tried as an impersonated user and group and as a
 * header name. tests/fuzz/replay.c runs this on the corpus without libFuzzer.
 */
#include "k8s.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_RULE_LINES 8

static void must(bool cond)
{
	if (!cond)
		abort();
}

static bool terminated(const char *field, size_t cap)
{
	return memchr(field, '\0', cap) != NULL;
}

static bool only(const char *s, const char *set)
{
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || strchr(set, *s)))
			return false;
	return true;
}

static bool one_of(const char *s, const char *const *set)
{
	for (; *set; set++)
		if (strcmp(s, *set) == 0)
			return true;
	return false;
}

static void check_request(const char *method, const char *path, size_t pathlen, bool upgrade,
			  const struct k8s_request *r)
{
	static const char *const verbs[] = { "get", "list", "watch", "create", "update", "patch",
					     "delete", "deletecollection", "proxy", NULL };
	static const char *const nr_verbs[] = { "get", "head", "post", "put", "patch", "delete",
						NULL };

	must(terminated(r->verb, sizeof(r->verb)) && terminated(r->api_prefix, sizeof(r->api_prefix)));
	must(terminated(r->api_group, sizeof(r->api_group)));
	must(terminated(r->api_version, sizeof(r->api_version)));
	must(terminated(r->namespace_, sizeof(r->namespace_)));
	must(terminated(r->resource, sizeof(r->resource)));
	must(terminated(r->subresource, sizeof(r->subresource)));
	must(terminated(r->name, sizeof(r->name)) && terminated(r->path, sizeof(r->path)));

	if (!r->resource_request) {
		must(!upgrade && one_of(r->verb, nr_verbs));
		must(strlen(r->path) == pathlen && memcmp(r->path, path, pathlen) == 0);
		must(!r->api_prefix[0] && !r->api_group[0] && !r->api_version[0] &&
		     !r->namespace_[0] && !r->resource[0] && !r->subresource[0] && !r->name[0]);
		for (size_t i = 0; method[i]; i++)
			must(r->verb[i] == method[i] - 'A' + 'a');
		return;
	}
	must(one_of(r->verb, verbs) && !r->path[0]);
	must(strcmp(r->api_prefix, "api") == 0 || strcmp(r->api_prefix, "apis") == 0);
	must(!r->api_group[0] == (strcmp(r->api_prefix, "api") == 0));
	must(r->api_version[0] && only(r->api_version, ""));
	must(only(r->api_group, ".-") && only(r->namespace_, "-"));
	must(r->resource[0] && !strchr(r->resource, '.') && !strchr(r->resource, '*'));
	must(!strchr(r->subresource, '.') && !strchr(r->subresource, '*'));
	must(!strchr(r->name, '/') && !strchr(r->name, '%') && strcmp(r->name, "..") != 0);
	if (upgrade) {
		/* a stream through core nodes/proxy is the kubelet's exec in
		 * any pod of the node: create too (02b2250) */
		bool stream = strcmp(r->subresource, "exec") == 0 || strcmp(r->subresource, "attach") == 0 ||
			      strcmp(r->subresource, "portforward") == 0 ||
			      (!r->api_group[0] && strcmp(r->resource, "nodes") == 0 &&
			       strcmp(r->subresource, "proxy") == 0);

		must(r->subresource[0] && (strcmp(method, "GET") == 0 || strcmp(method, "POST") == 0));
		must(strcmp(r->verb, stream || strcmp(method, "POST") == 0 ? "create" : "get") == 0);
	}
	if (strcmp(r->verb, "get") == 0 || strcmp(r->verb, "delete") == 0)
		must(r->name[0] != '\0');
	if (strcmp(r->verb, "list") == 0 || strcmp(r->verb, "deletecollection") == 0)
		must(!r->subresource[0]);
}

/* The rule of shared/cases/k8s.txt and the catch-alls. */
static void check_rules(const struct k8s_request *r)
{
	static char *verbs[] = { "get", "list" }, *pods[] = { "pods" }, *dflt[] = { "default" };
	static char *star[] = { "*" }, *allpaths[] = { "/*" };
	struct policy_rule reader = { .role = "reader" };
	struct policy_action every = { .present = true, .verbs = { star, 1 },
				       .resources = { star, 1 }, .namespaces = { star, 1 } };
	struct policy_action paths = { .present = true, .verbs = { star, 1 },
				       .resources = { allpaths, 1 } };
	const struct policy_rule *rules[] = { &reader }, *which;
	char reason[64], res[32];
	enum k8s_verdict v;

	reader.allow = (struct policy_action){ .present = true, .verbs = { verbs, 2 },
					       .resources = { pods, 1 }, .namespaces = { dflt, 1 } };
	v = k8s_decide(rules, 1, r, &which, reason, sizeof(reason));
	must(v == K8S_ALLOW || v == K8S_DENY);
	must((v == K8S_ALLOW) == (which == &reader));
	must(terminated(reason, sizeof(reason)));
	if (v == K8S_ALLOW)
		must(r->resource_request && (!strcmp(r->verb, "get") || !strcmp(r->verb, "list")) &&
		     !strcmp(r->resource, "pods") && !r->api_group[0] && !r->subresource[0] &&
		     !strcmp(r->namespace_, "default"));
	must(k8s_action_matches(&every, r) == (r->resource_request && !r->upgrade));
	must(k8s_action_matches(&paths, r) == !r->resource_request);
	must(k8s_resource_string(r, res, sizeof(res)) != -EINVAL && terminated(res, sizeof(res)));
	if (r->resource_request) {
		char full[200], *own[] = { full };
		struct policy_action named = { .present = true, .verbs = { star, 1 },
					       .resources = { own, 1 }, .namespaces = { star, 1 } };

		must(k8s_resource_string(r, full, sizeof(full)) == 0);
		must(k8s_action_matches(&named, r));
	}
}

/* Rule lines after the request: an action to check and to match. */
static void check_action(const char *lines, const struct k8s_request *r)
{
	char *v[MAX_RULE_LINES], *res[MAX_RULE_LINES], *ns[MAX_RULE_LINES];
	char copy[512], why[256];
	struct policy_action a = { .present = true, .verbs = { v, 0 }, .resources = { res, 0 },
				   .namespaces = { ns, 0 } };
	char *line, *save = NULL;

	snprintf(copy, sizeof(copy), "%s", lines);
	for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		struct policy_strv *sv = line[0] == 'v' ? &a.verbs :
					 line[0] == 'r' ? &a.resources :
					 line[0] == 'n' ? &a.namespaces : NULL;

		if (!sv || line[1] != ':' || !line[2] || sv->n >= MAX_RULE_LINES)
			continue;
		sv->v[sv->n++] = line + 2;
	}
	if (k8s_action_check(&a, why, sizeof(why)) != 0)
		must(why[0] != '\0');
	(void)k8s_action_matches(&a, r);
}

static void check_identity(const uint8_t *data, size_t size)
{
	char s[300], buf[1200];
	const char *groups[2];
	size_t n = size < sizeof(s) - 1 ? size : sizeof(s) - 1;
	int len;

	memcpy(s, data, n);
	s[n] = '\0';
	groups[0] = "agents";
	groups[1] = s;
	(void)k8s_header_is_identity((const char *)data, size);
	len = k8s_impersonation_headers(s, groups, 2, buf, sizeof(buf));
	must(len == -EINVAL || len >= 0);
	if (len < 0) {
		must(buf[0] == '\0');
		return;
	}
	must((size_t)len == strlen(buf) && len >= 2 && memcmp(buf + len - 2, "\r\n", 2) == 0);
	for (int i = 0, lines = 0; i < len; i++) {
		if (buf[i] == '\r') {
			must(buf[i + 1] == '\n');
			must(++lines <= 3);
		} else if (buf[i] == '\n') {
			must(i > 0 && buf[i - 1] == '\r');
		} else {
			must((unsigned char)buf[i] >= 0x20 && (unsigned char)buf[i] < 0x7f);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data, *end = in + size, *sp, *nl, *target, *q;
	char method[16], *path, *query;
	struct k8s_request r, again;
	bool upgrade = false;
	size_t plen, qlen;
	int rc;

	check_identity(data, size);
	if (size >= 2 && in[0] == 'U' && in[1] == ' ') {
		upgrade = true;
		in += 2;
	}
	nl = memchr(in, '\n', (size_t)(end - in));
	if (!nl)
		nl = end;
	sp = memchr(in, ' ', (size_t)(nl - in));
	if (!sp || (size_t)(sp - in) >= sizeof(method))
		return 0;
	memcpy(method, in, (size_t)(sp - in));
	method[sp - in] = '\0';
	target = sp + 1;
	q = memchr(target, '?', (size_t)(nl - target));
	plen = (size_t)((q ? q : nl) - target);
	qlen = q ? (size_t)(nl - q - 1) : 0;

	/* Exact-length heap copies: ASan sees any read past the end. */
	path = malloc(plen + 4);
	query = malloc(qlen ? qlen : 1);
	if (!path || !query)
		abort();
	memcpy(path, target, plen);
	if (qlen)
		memcpy(query, q + 1, qlen);

	rc = k8s_resolve(method, path, plen, qlen ? query : NULL, qlen, upgrade, &r);
	must(rc == 0 || rc == -EINVAL);
	if (rc < 0) {
		static const struct k8s_request zero;

		must(memcmp(&r, &zero, sizeof(r)) == 0);
	} else {
		check_request(method, path, plen, upgrade, &r);
		must(r.upgrade == upgrade);
		must(k8s_resolve(method, path, plen, qlen ? query : NULL, qlen, upgrade, &again) == 0);
		must(memcmp(&r, &again, sizeof(r)) == 0);
		check_rules(&r);
		if (nl < end) {
			char lines[512];
			size_t ln = (size_t)(end - nl - 1) < sizeof(lines) - 1 ?
				    (size_t)(end - nl - 1) : sizeof(lines) - 1;

			memcpy(lines, nl + 1, ln);
			lines[ln] = '\0';
			check_action(lines, &r);
		}
		/* Not canonical any more: refused, whatever it was. */
		memcpy(path + plen, "/..", 3);
		must(k8s_resolve(method, path, plen + 3, qlen ? query : NULL, qlen, upgrade,
				 &again) == -EINVAL);
	}
	free(path);
	free(query);
	return 0;
}
