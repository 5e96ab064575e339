/* SPDX-License-Identifier: Apache-2.0 */
/*
 * k8s: Kubernetes API requests as the API server's authorizer sees them, and
 * the policy's kubernetes rules ({verbs, resources, namespaces}) over them.
 *
 * A pure library: no I/O, no allocation, no logging, no global state. The
 * HTTP module parses and canonicalises the request; this file says what it
 * means to the apiserver (k8s_resolve), whether a rule covers it
 * (k8s_action_matches, k8s_decide), and what identity to send upstream
 * (k8s_impersonation_headers, k8s_header_is_identity).
 *
 * ---- Resolving a request (k8s_resolve) --------------------------------
 *
 * The attributes are the ones the apiserver's request-info resolver
 * (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go) gives its
 * authorizer, so a verdict here is about the same request RBAC judges:
 *
 *   /api/{version}/...                  core group ("")
 *   /apis/{group}/{version}/...         named group
 *   .../namespaces/{ns}/{resource}[/{name}[/{subresource}[/...]]]
 *   .../{resource}[/{name}[/{subresource}[/...]]]   namespace "" (cluster)
 *   .../namespaces/{ns}[/status|/finalize]  resource "namespaces", name ns,
 *                                       namespace ns (as the apiserver does)
 *   .../watch/..., .../proxy/...        the deprecated verb-in-path forms:
 *                                       verb watch or proxy (no subresource
 *                                       for proxy); GET or HEAD only
 *
 *   POST create, GET/HEAD get, PUT update, PATCH patch, DELETE delete;
 *   get without a name is list, or watch when the first "watch" query
 *   parameter is present and is not "0" or "false" (any ASCII case; "" and
 *   "yes" mean watch, as in the apiserver); for list/watch a fieldSelector
 *   requiring metadata.name=X (= or ==, any term of a conjunction) sets name
 *   X, which is informational only (rules do not name objects) and leaves
 *   the verb list/watch; delete without a name is deletecollection (a
 *   fieldSelector does not make it a delete). dryRun and every other query
 *   parameter change nothing.
 *
 * Where this is stricter than the apiserver (each a deny, never a grant):
 *   - Methods are case-sensitive and only GET HEAD POST PUT PATCH DELETE
 *     are resolved; anything else is -EINVAL (the apiserver's verb "").
 *   - Subresources exec, attach and portforward (any group) are verb create
 *     for GET, HEAD and POST, upgraded or not: they open an interactive
 *     stream into a workload (kubernetes#78741, KEP-4006), so a rule must
 *     grant create on pods/exec, never get.
 *   - An upgraded request (WebSocket/SPDY; `upgrade` true) must be a GET
 *     or a POST naming a subresource; its verb is the apiserver's (get for
 *     an upgraded GET of pods/log or services/proxy, create for exec,
 *     attach and portforward, as above), except through nodes/proxy: the
 *     kubelet's exec, attach and portForward for any pod of the node are
 *     behind it, so an upgrade there is create. Upgrades without a subresource
 *     (watch over WebSocket), with another method, on the deprecated
 *     proxy/watch paths and on non-resource URLs are -EINVAL.
 *   - The path must be canonical: starts with "/", no empty, "." or ".."
 *     segment (one trailing "/" is allowed and ignored, as the apiserver
 *     trims it), at most K8S_PATH_MAX bytes, and only RFC 3986 pchar bytes
 *     after decoding (ALPHA DIGIT - . _ ~ ! $ & ' ( ) * + , = : @; no '%',
 *     ';', '\', space, controls or non-ASCII). The HTTP module already
 *     guarantees most of this; it is checked again here.
 *   - Attributes must look like what they are, or the request is -EINVAL:
 *     group [a-z0-9.-], version [a-z0-9], namespace a DNS label
 *     [a-z0-9-], resource and subresource [A-Za-z0-9_-], each fitting its
 *     field; names may use the whole pchar set above.
 *   - The query is parsed the way Go's url.ParseQuery does ('&'-separated,
 *     '+' is a space, %XX escapes in keys and values), but a ';', a bad
 *     escape, more than K8S_QUERY_MAX_PARAMS parameters, a repeated
 *     "watch" or "fieldSelector", or a non-ASCII "watch" value is -EINVAL
 *     rather than one parser's guess.
 *
 * Non-resource URLs (/version, /healthz, /openapi/v2, /api, /apis,
 * /apis/{group}, /apis/{group}/{version}, /metrics...) resolve with
 * resource_request false, verb the lower-case method ("get", "head",
 * "post", ...) and path the path as given; the other fields are "".
 *
 * ---- Rules (k8s_action_matches, k8s_decide) ---------------------------
 *
 * An allow: or review: action of a kubernetes rule matches a resource
 * request when all three of its lists match; an absent or empty list
 * matches nothing (write "*" to mean any):
 *
 *   verbs       request verbs: get list watch create update patch delete
 *               deletecollection proxy; "*" any. Exact, lower case.
 *   resources   R[.G][/S]: resource R of API group G (absent: the core
 *               group) with subresource S (absent: no subresource).
 *               R, G and S may each be "*" (any resource / any group / any
 *               subresource, but one must be present). "pods" is core pods
 *               only ("events" the core group's Events, not those of
 *               events.k8s.io, "events.events.k8s.io": RBAC matches
 *               resources with their apiGroups; a review list takes either
 *               for both, the same objects), "pods/log" their log,
 *               "deployments.apps/scale",
 *               "*.apps" every apps resource, and "pods/" followed by "*"
 *               every pod subresource. The single entry "*" is every
 *               resource of every group with or without a subresource, as
 *               in RBAC; except for an upgraded request (a stream: exec,
 *               attach, port-forward, a WebSocket), which only an entry
 *               naming its subresource allows ("pods/exec", "*" + "/proxy"),
 *               and for one through nodes/proxy its resource too
 *               ("nodes/proxy").
 *   namespaces  namespace names, exact; "*" every namespace AND the
 *               cluster scope; K8S_NS_CLUSTER "(cluster)" the cluster scope
 *               only. Cluster scope (namespace "") is both a cluster-scoped
 *               resource (nodes, namespaces, clusterroles) and a request
 *               across all namespaces (GET /api/v1/pods): the resolver
 *               cannot tell them apart without discovery, and both reach
 *               beyond any one namespace, so a list of names never matches
 *               them in an allow list, and always does in a review list.
 *               The namespace object itself (/api/v1/namespaces/foo)
 *               is in namespace foo, as the apiserver sees it.
 *
 * A non-resource request is matched by resources entries that start with
 * "/": the exact path, or, for an entry ending in "*", every path that
 * starts with the text before the "*" (as RBAC's nonResourceURLs do:
 * "/healthz*" covers /healthz and /healthz/etcd). Verbs are the
 * lower-case method (get, head, post...) or "*". Namespaces
 * are not consulted, and "*" in resources never matches a non-resource
 * URL: `{verbs: [get], resources: ["/version", "/healthz"]}`.
 *
 * The http list of a rule is not looked at here.
 *
 * Library code: reentrant, no allocation; every output bounded.
 */
#ifndef AGENTGATE_K8S_H
#define AGENTGATE_K8S_H

#include <stdbool.h>
#include <stddef.h>

#include "policy.h"

#define K8S_PATH_MAX         4096   /* longer paths are -EINVAL */
#define K8S_QUERY_MAX        16384  /* longer query strings are -EINVAL */
#define K8S_QUERY_MAX_PARAMS 256    /* more '&'-separated pairs are -EINVAL */
#define K8S_NS_CLUSTER       "(cluster)"   /* namespaces entry: the cluster scope */

struct k8s_request {
	bool resource_request;      /* false: non-resource URL (path, verb only) */
	char verb[24];              /* get list watch create update patch delete
	                             * deletecollection proxy; non-resource: get head
	                             * post put patch delete */
	char api_prefix[8];         /* "api" | "apis" */
	char api_group[64];         /* "" for core */
	char api_version[32];
	char namespace_[64];        /* "" : cluster scope */
	char resource[64];
	char subresource[64];
	char name[254];             /* from the path, or a list/watch fieldSelector */
	char path[256];             /* non-resource requests only */
	bool may_create;            /* k8s_note_create(): it also needs create */
	bool upgrade;               /* a protocol upgrade (WebSocket, SPDY): a
	                             * two-way stream, allowed only by an entry
	                             * that names its subresource (k8s.c) */
};

/*
 * Resolve a request. method: the request method as sent (case-sensitive);
 * path/pathlen: the canonical path (not necessarily NUL-terminated);
 * query/querylen: the raw query string without '?' (query may be NULL when
 * querylen is 0); upgrade: the request asks for a protocol upgrade.
 * Returns 0 with *out filled (every string NUL-terminated), or -EINVAL when
 * the request cannot be attributed (the caller denies) with *out zeroed.
 */
int k8s_resolve(const char *method, const char *path, size_t pathlen, const char *query,
		size_t querylen, bool upgrade, struct k8s_request *out);

/*
 * A PUT of a named object, or a server-side apply PATCH (apply_patch: the
 * caller could not tell it is a JSON, merge or strategic-merge patch),
 * creates the object when it does not exist, and the apiserver then
 * authorizes create as well as update or patch (handlers/update.go,
 * handlers/patch.go): sets r->may_create, so k8s_decide() asks for both.
 * Stricter than the apiserver for resources that never create on update
 * (a deny, never a grant). Subresources are never created this way.
 */
void k8s_note_create(struct k8s_request *r, const char *method, bool apply_patch);

/* Does this allow:/review: action cover the request? See the top of this
 * file. False when a or r is NULL or the action is not present. */
bool k8s_action_matches(const struct policy_action *a, const struct k8s_request *r);

enum k8s_verdict { K8S_DENY = 0, K8S_ALLOW, K8S_REVIEW };

/*
 * The verdict of the rules one principal holds for this target (NULL
 * entries skipped): REVIEW when some rule's review matches (review wins
 * over allow, as "review if either says review" in DESIGN §3), else ALLOW
 * when some rule's allow matches, else DENY. *which (may be NULL) gets the
 * first rule that decided, NULL on DENY. reason (may be NULL) gets a short
 * plain-text explanation on every verdict, e.g. "no rule allows list pods
 * in namespace 'kube-system'"; it quotes request attributes, so escape it
 * before putting it into JSON. With r->may_create, create must be allowed
 * too (k8s_verdict_both of the two verdicts). A stream denied only because
 * every rule that covers it does so by a wildcard gets a reason that
 * starts with K8S_STREAM_HINT and the resource string.
 */
#define K8S_STREAM_HINT "an upgraded stream needs a rule naming "
enum k8s_verdict k8s_decide(const struct policy_rule *const *rules, size_t n,
			    const struct k8s_request *r, const struct policy_rule **which,
			    char *reason, size_t reasonlen);

/* Delegation (DESIGN §3): allowed only if both allow; review if either says
 * review; otherwise deny. */
enum k8s_verdict k8s_verdict_both(enum k8s_verdict agent, enum k8s_verdict user);

const char *k8s_verdict_name(enum k8s_verdict v);   /* "deny" | "allow" | "review" */

/*
 * "R[.G][/S]" of a resource request, in the rules' syntax (so an operator
 * can paste it into a policy), or the path of a non-resource one. Returns
 * 0, or -ENOSPC (out truncated, still NUL-terminated) / -EINVAL.
 */
int k8s_resource_string(const struct k8s_request *r, char *out, size_t outlen);

/*
 * Check a kubernetes action's lists the way k8s_action_matches reads them:
 * known verbs, well-formed resources entries, namespace names or "*" or
 * "(cluster)", and no list missing (verbs and resources always; namespaces
 * unless every resources entry is a non-resource path) when the action is
 * present. Returns 0, or -EINVAL with why (may be NULL) saying what is
 * wrong. For the policy loader; pure.
 */
int k8s_action_check(const struct policy_action *a, char *why, size_t whylen);

/*
 * Headers to add upstream so the apiserver's RBAC judges the agent too:
 * "Impersonate-User: <user>\r\n" then one "Impersonate-Group: <g>\r\n" per
 * group, into buf (NUL-terminated). user and every group must be 1..253
 * printable ASCII bytes (space allowed inside, not at either end) and must
 * not start with "system:" (the apiserver's reserved users and groups:
 * system:masters is cluster-admin). Returns the length written (without
 * the NUL), -EINVAL for a refused value, -ENOSPC when buf is too small; on
 * error buf holds "" (when buflen > 0).
 */
int k8s_impersonation_headers(const char *user, const char *const *groups, size_t ngroups,
			      char *buf, size_t buflen);

/*
 * True for request headers the agent must not send to the apiserver,
 * because they carry an identity: Authorization (the enforcer
 * authenticates as itself), Impersonate-* and the front-proxy headers
 * X-Remote-* (kube-apiserver's usual --requestheader-*-headers). Case-
 * insensitive; name need not be NUL-terminated.
 */
bool k8s_header_is_identity(const char *name, size_t len);

#endif /* AGENTGATE_K8S_H */
