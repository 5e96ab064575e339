// SPDX-License-Identifier: Apache-2.0
/*
 * `agentgate policy explain --agent A --target T "GET /path"` for http
 * targets: the same canonicalisation and rule matching the http module
 * applies to a live request, over the rules of roles bound to the agent by
 * name (claims bindings depend on a token and are named, not judged).
 */
#include <stdio.h>
#include <string.h>

#include "http_explain.h"
#include "http_path.h"
#include "k8s.h"

static bool bound_by_name(const struct policy_binding *b, const char *agent)
{
	for (size_t i = 0; i < b->agents.n; i++)
		if (strcmp(b->agents.v[i], agent) == 0)
			return true;
	return false;
}

/* Is the pattern list's match for this request? Prints the first one. */
static const char *first_match(const struct policy_strv *v, bool review, const char *m, size_t ml, bool upgrade,
			       const char *path, size_t pl)
{
	for (size_t k = 0; k < v->n; k++)
		if (review ? http_review_match(v->v[k], m, ml, upgrade, path, pl) :
			     http_rule_match(v->v[k], m, ml, upgrade, path, pl))
			return v->v[k];
	return NULL;
}

/* Kubernetes targets: the apiserver's attributes and the k8s verdict. */
static int k8s_explain(const struct policy *p, int ai, int ti, const char *method, bool upgrade,
		       const char *path, const struct http_target *tg, FILE *out)
{
	const struct policy_rule *rules[256], *which = NULL;
	struct k8s_request kr;
	char res[200], reason[300];
	enum k8s_verdict v;
	size_t n = 0;

	if (k8s_resolve(method, path, strlen(path), (const char *)tg->query, tg->query ? tg->query_len : 0,
			upgrade, &kr) < 0) {
		fprintf(out, "deny (403): the request cannot be attributed to a Kubernetes verb and resource\n");
		return 0;
	}
	k8s_resource_string(&kr, res, sizeof(res));
	fprintf(out, "kubernetes: verb %s, resource %s, namespace %s\n", kr.verb, res,
		kr.namespace_[0] ? kr.namespace_ : "(cluster)");
	for (size_t b = 0; b < p->nbindings; b++) {
		const struct policy_role *role = &p->roles[p->bindings[b].role_idx];

		if (!bound_by_name(&p->bindings[b], p->agents[ai].name))
			continue;
		for (size_t r = 0; r < role->nrules && n < 256; r++)
			if (role->rules[r].target_idx == ti)
				rules[n++] = &role->rules[r];
	}
	/* no headers here: a PATCH is judged as a JSON or merge patch */
	k8s_note_create(&kr, method, false);
	v = k8s_decide(rules, n, &kr, &which, reason, sizeof(reason));
	if (strcmp(method, "PATCH") == 0 && kr.name[0] && !kr.subresource[0])
		fprintf(out, "note: judged as a JSON or merge patch; a server-side apply PATCH "
			"(Content-Type application/apply-patch+yaml) needs create too\n");
	if (v == K8S_DENY)
		fprintf(out, "deny (403): %s\n", reason);
	else
		fprintf(out, "%s: role '%s' rule %d (line %d)%s\n", k8s_verdict_name(v), which->role,
			which->index + 1, which->line,
			v == K8S_REVIEW ? "\nnote: approvals are not available yet: a review is a 403" : "");
	return 0;
}

int http_explain(const struct policy *p, int ai, int ti, const char *request, FILE *out)
{
	const char *agent = p->agents[ai].name, *sp, *pat;
	char path[4096], method[24];
	struct http_target tg;
	bool upgrade = false, claims = false;
	size_t ml;

	if (!request || !(sp = strchr(request, ' ')) || sp == request || (size_t)(sp - request) >= sizeof(method)) {
		fprintf(out, "explain: give the request as \"METHOD /path\" (\"UPGRADE /path\" for a WebSocket)\n");
		return 2;
	}
	ml = (size_t)(sp - request);
	memcpy(method, request, ml);
	method[ml] = '\0';
	for (size_t i = 0; i < ml; i++)
		if (method[i] < 'A' || method[i] > 'Z') {
			fprintf(out, "deny (400): method is not upper-case letters\n");
			return 0;
		}
	if (strcmp(method, "UPGRADE") == 0) {   /* a GET asking for a WebSocket */
		upgrade = true;
		memcpy(method, "GET", 4);
		ml = 3;
	}
	if (strcmp(method, "CONNECT") == 0) {
		fprintf(out, "deny (403): CONNECT is not allowed (a tunnel cannot be inspected)\n");
		return 0;
	}
	if (http_target_canon((const uint8_t *)sp + 1, strlen(sp + 1), false, path, sizeof(path), &tg) < 0) {
		fprintf(out, "deny (400): %s\n", tg.error);
		return 0;
	}
	if (tg.form != HTTP_FORM_ORIGIN) {
		fprintf(out, "explain: give an origin-form path (\"/a/b?q\")\n");
		return 2;
	}
	fprintf(out, "request: %s %s (canonical path '%s')\n", upgrade ? "GET (Upgrade: websocket)" : method,
		sp + 1, path);
	if (p->targets[ti].proto == PROTO_KUBERNETES)
		return k8s_explain(p, ai, ti, method, upgrade, path, &tg, out);
	for (int pass = 0; pass < 2; pass++) {   /* review first: it wins over allow */
		bool review = pass == 0;

		for (size_t b = 0; b < p->nbindings; b++) {
			const struct policy_binding *bd = &p->bindings[b];
			const struct policy_role *role = &p->roles[bd->role_idx];

			if (!bound_by_name(bd, agent)) {
				claims |= bd->nclaims > 0;
				continue;
			}
			for (size_t r = 0; r < role->nrules; r++) {
				const struct policy_rule *rl = &role->rules[r];

				if (rl->target_idx != ti)
					continue;
				pat = first_match(review ? &rl->review.http : &rl->allow.http, review, method, ml, upgrade,
						  path, tg.path_len);
				if (!pat)
					continue;
				fprintf(out, "%s: role '%s' rule %d (line %d) %s \"%s\"\n",
					review ? "review" : "allow", role->name, rl->index + 1, rl->line,
					review ? "reviews" : "allows", pat);
				if (review)
					fprintf(out, "note: approvals are not available yet: a review is a 403\n");
				return 0;
			}
		}
	}
	fprintf(out, "deny (403): no rule of a role bound to agent '%s' allows %s %s%s\n", agent,
		upgrade ? "UPGRADE" : method, path,
		p->mode == POLICY_OBSERVE ? " (observe mode: recorded, not enforced)" : "");
	if (claims && p->agents[ai].identity.source != IDENT_LOCAL)
		fprintf(out, "note: roles bound by claims may allow it, depending on the agent's token\n");
	if (p->agents[ai].accept_user_tokens)
		fprintf(out, "note: with a user token, the user's roles must allow it too\n");
	return 0;
}
