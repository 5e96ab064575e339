// SPDX-License-Identifier: Apache-2.0
/*
 * k8s: Kubernetes API request attributes and rule matching. See k8s.h.
 *
 * Why by hand: the attributes are defined by the apiserver's Go code
 * (requestinfo.go, url.ParseQuery, fields.ParseSelector), not by a C
 * library, and they decide what RBAC and our rules judge. Each step below
 * names the behaviour it reproduces; where reproducing it exactly would
 * mean guessing (Unicode case folding, Go's dropped query pairs), the
 * request is refused instead.
 */
#include "k8s.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MAX_SEGS   10     /* segments the resolver looks at; the rest are only checked */
#define SELECTOR_MAX 2048 /* decoded fieldSelector bytes we parse */
#define IMP_MAX    253    /* bytes of an impersonated user or group */

struct span {
	const char *p;
	size_t n;
};

static bool span_is(struct span s, const char *lit)
{
	size_t n = strlen(lit);

	return s.n == n && memcmp(s.p, lit, n) == 0;
}

/* Copy n bytes into a field of size cap; -EINVAL if they do not fit. */
static int put(char *dst, size_t cap, const char *s, size_t n)
{
	if (n >= cap)
		return -EINVAL;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

/* ---- character classes ------------------------------------------------- */

static bool is_lower_digit(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(unsigned char c)
{
	return is_lower_digit(c) || (c >= 'A' && c <= 'Z');
}

/* RFC 3986 pchar once decoded, without '%' (the HTTP module decoded once;
 * a '%' left now would be decoded again by someone) and without ';'
 * (matrix parameters, read as path by some servers). */
static bool is_pchar(unsigned char c)
{
	return is_alnum(c) || (c && strchr("-._~!$&'()*+,=:@", c));
}

static bool all_of(struct span s, bool (*ok)(unsigned char))
{
	if (s.n == 0)
		return false;
	for (size_t i = 0; i < s.n; i++)
		if (!ok((unsigned char)s.p[i]))
			return false;
	return true;
}

static bool group_char(unsigned char c)
{
	return is_lower_digit(c) || c == '.' || c == '-';
}

static bool label_char(unsigned char c)
{
	return is_lower_digit(c) || c == '-';
}

static bool resource_char(unsigned char c)
{
	return is_alnum(c) || c == '_' || c == '-';
}

/* ---- the path ---------------------------------------------------------- */

/*
 * Split a canonical path into segments. The apiserver trims every leading
 * and trailing '/' and splits the rest; the HTTP module hands us paths
 * without empty segments, so anything else here is a bug or an attack:
 * only one trailing '/' is tolerated. Every segment is checked, the first
 * MAX_SEGS kept.
 */
static int split_path(const char *path, size_t len, struct span *seg, size_t *nseg)
{
	size_t end = len, i = 1, n = 0;

	if (!path || len == 0 || len > K8S_PATH_MAX || path[0] != '/')
		return -EINVAL;
	if (len >= 2 && path[len - 1] == '/') {
		if (path[len - 2] == '/')
			return -EINVAL;   /* "//" at the end: an empty last segment */
		end--;
	}
	while (i < end) {
		struct span s = { path + i, 0 };

		while (i + s.n < end && path[i + s.n] != '/')
			s.n++;
		if (!all_of(s, is_pchar) || span_is(s, ".") || span_is(s, ".."))
			return -EINVAL;
		if (n < MAX_SEGS)
			seg[n] = s;
		n++;
		i += s.n + 1;
	}
	*nseg = n < MAX_SEGS ? n : MAX_SEGS;
	return 0;
}

/* ---- the query --------------------------------------------------------- */

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Go's QueryUnescape: '+' is a space, %XX needs two hex digits. Writes at
 * most cap bytes of the result into out (may be NULL) and returns the full
 * decoded length, or -EINVAL for a bad escape. *odd tells whether any
 * decoded byte is >= 0x80 or a control.
 */
static long unescape(struct span s, char *out, size_t cap, bool *odd)
{
	size_t o = 0;

	*odd = false;
	for (size_t i = 0; i < s.n; i++) {
		unsigned char c = (unsigned char)s.p[i];

		if (c == '%') {
			int hi, lo;

			if (i + 2 >= s.n)
				return -EINVAL;
			hi = hexval((unsigned char)s.p[i + 1]);
			lo = hexval((unsigned char)s.p[i + 2]);
			if (hi < 0 || lo < 0)
				return -EINVAL;
			c = (unsigned char)(hi << 4 | lo);
			i += 2;
		} else if (c == '+') {
			c = ' ';
		}
		if (c >= 0x80 || c < 0x20 || c == 0x7f)
			*odd = true;
		if (out && o < cap)
			out[o] = (char)c;
		o++;
	}
	return (long)o;
}

struct query {
	struct span watch, field_selector, limit, timeout;  /* first values, raw */
	bool has_watch, has_field_selector, has_limit, has_timeout;
};

/* Is the decoded key one of ours? Keys are matched after decoding, as Go
 * does, so "w%61tch" is "watch" (and "watch%00" is not). */
static int classify_pair(struct span key, struct span val, struct query *q)
{
	char k[16];
	bool odd;
	long kn = unescape(key, k, sizeof(k), &odd);
	struct span dk = { k, kn > 0 ? (size_t)kn : 0 };

	if (kn < 0)
		return -EINVAL;
	if (kn >= (long)sizeof(k))
		return 0;
	if (span_is(dk, "watch")) {
		if (q->has_watch)
			return -EINVAL;   /* first-wins is Go's; two parsers may disagree */
		q->has_watch = true;
		q->watch = val;
	} else if (span_is(dk, "fieldSelector")) {
		if (q->has_field_selector)
			return -EINVAL;
		q->has_field_selector = true;
		q->field_selector = val;
	} else if (span_is(dk, "limit") && !q->has_limit) {
		q->has_limit = true;
		q->limit = val;
	} else if (span_is(dk, "timeoutSeconds") && !q->has_timeout) {
		q->has_timeout = true;
		q->timeout = val;
	}
	return 0;
}

/*
 * url.ParseQuery: pairs separated by '&', empty pairs skipped, key and
 * value split at the first '='. Go drops (and reports) a pair with ';' or
 * a bad escape and goes on; the apiserver ignores that report, so the
 * pair silently vanishes there. We refuse such a query instead.
 */
static int parse_query(const char *qs, size_t len, struct query *q)
{
	size_t i = 0, npairs = 0;

	memset(q, 0, sizeof(*q));
	if (len == 0)
		return 0;
	if (!qs || len > K8S_QUERY_MAX)
		return -EINVAL;
	for (size_t j = 0; j < len; j++) {
		unsigned char c = (unsigned char)qs[j];

		/* Go refuses controls in a request target; bytes the HTTP module
		 * would never pass (space, '#', non-ASCII) are refused here too. */
		if (c <= 0x20 || c >= 0x7f || c == ';' || c == '#')
			return -EINVAL;
	}
	while (i <= len) {
		struct span pair = { qs + i, 0 }, key, val;
		const char *eq;
		bool odd;

		while (i + pair.n < len && qs[i + pair.n] != '&')
			pair.n++;
		i += pair.n + 1;
		if (pair.n == 0)
			continue;
		if (++npairs > K8S_QUERY_MAX_PARAMS)
			return -EINVAL;
		eq = memchr(pair.p, '=', pair.n);
		key = (struct span){ pair.p, eq ? (size_t)(eq - pair.p) : pair.n };
		val = eq ? (struct span){ eq + 1, pair.n - key.n - 1 } : (struct span){ pair.p + pair.n, 0 };
		if (unescape(val, NULL, 0, &odd) < 0 || classify_pair(key, val, q) < 0)
			return -EINVAL;
	}
	return 0;
}

/*
 * Convert_Slice_string_To_bool: only "0" and "false" (case-insensitive)
 * are false; "" and anything else is true. Go folds Unicode case there
 * (EqualFold, where U+017F is an 's') in one code path and not in the
 * other, so a non-ASCII value is refused.
 */
static int watch_value(struct span raw, bool *watch)
{
	char v[8];
	bool odd;
	long n = unescape(raw, v, sizeof(v) - 1, &odd);

	if (n < 0 || odd)
		return -EINVAL;
	if (n < (long)sizeof(v))
		v[n] = '\0';
	*watch = !((n == 1 && v[0] == '0') || (n == 5 && strncasecmp(v, "false", 5) == 0));
	return 0;
}

/* strconv.ParseInt(s, 10, 64) succeeds: an optional sign, then decimal
 * digits within int64. */
static bool go_int64_ok(struct span raw)
{
	char v[64];
	bool odd, neg;
	long n = unescape(raw, v, sizeof(v), &odd);
	size_t i = 0, digits;

	if (n <= 0 || n >= (long)sizeof(v))
		return false;   /* longer means 40+ leading zeros: not worth being exact */
	neg = v[0] == '-';
	if (v[0] == '+' || v[0] == '-')
		i = 1;
	if (i == (size_t)n)
		return false;
	for (size_t j = i; j < (size_t)n; j++)
		if (v[j] < '0' || v[j] > '9')
			return false;
	while (i + 1 < (size_t)n && v[i] == '0')
		i++;
	digits = (size_t)n - i;
	if (digits != 19)
		return digits < 19;
	return memcmp(v + i, neg ? "9223372036854775808" : "9223372036854775807", 19) <= 0;
}

/* fields.UnescapeValue: \\ \, \= are escapes, any other escape and an
 * unescaped ',' or '=' are errors. Returns the value's length, writing it
 * into out when out is not NULL (the caller gives n bytes), or -EINVAL. */
static long selector_unescape(struct span s, char *out)
{
	size_t o = 0;
	bool in_slash = false;

	for (size_t i = 0; i < s.n; i++) {
		char c = s.p[i];

		if (in_slash) {
			if (c != '\\' && c != ',' && c != '=')
				return -EINVAL;
			in_slash = false;
		} else if (c == '\\') {
			in_slash = true;
			continue;
		} else if (c == ',' || c == '=') {
			return -EINVAL;
		}
		if (out)
			out[o] = c;
		o++;
	}
	return in_slash ? -EINVAL : (long)o;
}

static bool span_less(struct span a, struct span b)
{
	size_t n = a.n < b.n ? a.n : b.n;
	int c = memcmp(a.p, b.p, n);

	return c < 0 || (c == 0 && a.n < b.n);
}

/*
 * fields.ParseSelector, then RequiresExactMatch("metadata.name"): terms
 * are split at unescaped ',', sorted, each split at its first "!=", "=="
 * or "=" (tried in that order at each position). The name is the value of
 * the first term in sorted order that is "metadata.name=" or "==". Any
 * malformed term fails the whole selector, and then the apiserver sets no
 * name. Returns 1 with *value (still escaped) set, or 0 for no name.
 */
static int selector_name(const char *sel, size_t n, struct span *value)
{
	struct span best = { NULL, 0 };
	size_t i = 0;

	while (i <= n) {
		struct span t = { sel + i, 0 }, rhs;
		bool in_slash = false;
		size_t op, oplen = 0;

		for (; i + t.n < n; t.n++) {
			char c = sel[i + t.n];

			if (in_slash)
				in_slash = false;
			else if (c == '\\')
				in_slash = true;
			else if (c == ',')
				break;
		}
		i += t.n + 1;
		if (t.n == 0)
			continue;
		for (op = 0; op < t.n; op++) {
			if (op + 1 < t.n && (t.p[op] == '!' || t.p[op] == '=') && t.p[op + 1] == '=') {
				oplen = 2;
				break;
			}
			if (t.p[op] == '=') {
				oplen = 1;
				break;
			}
		}
		if (oplen == 0)
			return 0;          /* "can't understand" */
		rhs = (struct span){ t.p + op + oplen, t.n - op - oplen };
		if (selector_unescape(rhs, NULL) < 0)
			return 0;
		if (t.p[op] == '!' || op != strlen("metadata.name") ||
		    memcmp(t.p, "metadata.name", op) != 0)
			continue;
		if (!best.p || span_less(t, best)) {
			best = t;
			*value = rhs;
		}
	}
	return best.p ? 1 : 0;
}

/*
 * list/watch and its name, as the apiserver decides them when a get has
 * no name: the ListOptions decode; on a decode error (here: a bad
 * fieldSelector, limit or timeoutSeconds) only watch is kept.
 */
static int list_or_watch(const struct query *q, struct k8s_request *out)
{
	char sel[SELECTOR_MAX], name[sizeof(out->name)];
	struct span value, nm;
	bool watch = false, odd;
	long sn, namelen;

	if (q->has_watch && watch_value(q->watch, &watch) < 0)
		return -EINVAL;
	snprintf(out->verb, sizeof(out->verb), "%s", watch ? "watch" : "list");
	if (!q->has_field_selector)
		return 0;
	sn = unescape(q->field_selector, sel, sizeof(sel), &odd);
	if (sn < 0 || sn >= (long)sizeof(sel) || odd)
		return -EINVAL;
	if ((q->has_limit && !go_int64_ok(q->limit)) ||
	    (q->has_timeout && !go_int64_ok(q->timeout)))
		return 0;
	if (!selector_name(sel, (size_t)sn, &value))
		return 0;
	namelen = selector_unescape(value, NULL);
	if (namelen >= (long)sizeof(name))
		return -EINVAL;   /* the apiserver names an object we could not show */
	selector_unescape(value, name);
	/* path.IsValidPathSegmentName, else the apiserver sets no name. */
	nm = (struct span){ name, (size_t)namelen };
	if (namelen <= 0 || span_is(nm, ".") || span_is(nm, "..") ||
	    memchr(name, '/', nm.n) || memchr(name, '%', nm.n))
		return 0;
	if (!all_of(nm, is_pchar))
		return -EINVAL;
	return put(out->name, sizeof(out->name), name, nm.n);
}

/* ---- resolving --------------------------------------------------------- */

static const char *verb_of_method(const char *m)
{
	static const struct { const char *method, *verb; } tab[] = {
		{ "GET", "get" }, { "HEAD", "get" }, { "POST", "create" },
		{ "PUT", "update" }, { "PATCH", "patch" }, { "DELETE", "delete" },
	};

	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (strcmp(m, tab[i].method) == 0)
			return tab[i].verb;
	return NULL;
}

static bool is_stream_subresource(const char *s)
{
	return strcmp(s, "exec") == 0 || strcmp(s, "attach") == 0 ||
	       strcmp(s, "portforward") == 0;
}

static int resolve_nonresource(const char *method, const char *path, size_t pathlen,
			       bool upgrade, struct k8s_request *out)
{
	size_t i;

	if (upgrade)
		return -EINVAL;
	/* The apiserver's strings.ToLower(method); method is one of ours. */
	for (i = 0; method[i] && i + 1 < sizeof(out->verb); i++)
		out->verb[i] = (char)(method[i] - 'A' + 'a');
	out->verb[i] = '\0';
	return put(out->path, sizeof(out->path), path, pathlen);
}

/* Fill resource/name/subresource from parts, as requestinfo.go's switch. */
static int resolve_parts(const struct span *parts, size_t n, bool proxy_verb,
			 struct k8s_request *out)
{
	if (n >= 3 && !proxy_verb) {
		if (!all_of(parts[2], resource_char) ||
		    put(out->subresource, sizeof(out->subresource), parts[2].p, parts[2].n) < 0)
			return -EINVAL;
	}
	if (n >= 2 && put(out->name, sizeof(out->name), parts[1].p, parts[1].n) < 0)
		return -EINVAL;
	if (!all_of(parts[0], resource_char) ||
	    put(out->resource, sizeof(out->resource), parts[0].p, parts[0].n) < 0)
		return -EINVAL;
	return 0;
}

static int resolve(const char *method, const char *path, size_t pathlen, const char *query,
		   size_t querylen, bool upgrade, struct k8s_request *out)
{
	struct span seg[MAX_SEGS], *parts;
	const char *verb;
	struct query q;
	size_t nseg, n;
	bool via_path = false;

	if (!method || split_path(path, pathlen, seg, &nseg) < 0 ||
	    parse_query(query, querylen, &q) < 0)
		return -EINVAL;
	verb = verb_of_method(method);
	if (!verb)
		return -EINVAL;   /* case-sensitive, and the apiserver's "" verb */

	/* Fewer than 3 segments, or not under an API prefix, or /apis/{group}
	 * /{version} without a resource: discovery and other non-resource URLs. */
	if (nseg < 3 || !(span_is(seg[0], "api") || span_is(seg[0], "apis")) ||
	    (span_is(seg[0], "apis") && nseg < 4))
		return resolve_nonresource(method, path, pathlen, upgrade, out);

	out->resource_request = true;
	put(out->api_prefix, sizeof(out->api_prefix), seg[0].p, seg[0].n);
	parts = seg + 1;
	n = nseg - 1;
	if (span_is(seg[0], "apis")) {
		if (!all_of(parts[0], group_char) ||
		    put(out->api_group, sizeof(out->api_group), parts[0].p, parts[0].n) < 0)
			return -EINVAL;
		parts++;
		n--;
	}
	if (!all_of(parts[0], is_lower_digit) ||
	    put(out->api_version, sizeof(out->api_version), parts[0].p, parts[0].n) < 0)
		return -EINVAL;
	parts++;
	n--;

	/* /{watch|proxy}/...: the verb comes from the path, whatever the
	 * method. Only GET and HEAD mean anything there. */
	if (span_is(parts[0], "watch") || span_is(parts[0], "proxy")) {
		if (n < 2 || upgrade || strcmp(verb, "get") != 0)
			return -EINVAL;
		put(out->verb, sizeof(out->verb), parts[0].p, parts[0].n);
		via_path = true;
		parts++;
		n--;
	} else {
		put(out->verb, sizeof(out->verb), verb, strlen(verb));
	}

	/* namespaces/{ns}[/{resource}...]: re-rooted at the resource unless the
	 * next part is a namespace subresource (status, finalize). */
	if (span_is(parts[0], "namespaces") && n > 1) {
		if (!all_of(parts[1], label_char) ||
		    put(out->namespace_, sizeof(out->namespace_), parts[1].p, parts[1].n) < 0)
			return -EINVAL;
		if (n > 2 && !span_is(parts[2], "status") && !span_is(parts[2], "finalize")) {
			parts += 2;
			n -= 2;
		}
	}
	if (resolve_parts(parts, n, via_path && strcmp(out->verb, "proxy") == 0, out) < 0)
		return -EINVAL;

	if (out->subresource[0] && is_stream_subresource(out->subresource) &&
	    (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0 ||
	     strcmp(method, "POST") == 0))
		snprintf(out->verb, sizeof(out->verb), "create");
	/* An upgrade through nodes/proxy reaches the kubelet's own API, whose
	 * exec, attach and portForward run a stream in any pod of the node on
	 * the apiserver's kubelet credentials, while the apiserver authorizes
	 * only get on nodes/proxy (get there is no read-only grant; a
	 * monitoring rule that reads /metrics gave exec, found by review):
	 * judged as create, like exec itself. The cluster's RBAC still checks
	 * its get for the impersonated user. */
	if (upgrade && !out->api_group[0] && strcmp(out->resource, "nodes") == 0 &&
	    strcmp(out->subresource, "proxy") == 0)
		snprintf(out->verb, sizeof(out->verb), "create");
	/* WebSocket upgrades are GETs, SPDY ones POSTs, and only on a
	 * subresource. The verb stays the one the apiserver authorizes: an
	 * upgraded GET of pods/log, services/proxy or a status is a get there
	 * (its handlers ignore Upgrade, or pass it on to the backend), so
	 * judging it as create would let a rule that grants create read what
	 * only get may read. exec, attach and portforward are create above. */
	if (upgrade && (!out->subresource[0] ||
			(strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)))
		return -EINVAL;

	if (!out->name[0] && strcmp(out->verb, "get") == 0 && list_or_watch(&q, out) < 0)
		return -EINVAL;
	if (!out->name[0] && strcmp(out->verb, "delete") == 0)
		snprintf(out->verb, sizeof(out->verb), "deletecollection");
	out->upgrade = upgrade;
	return 0;
}

int k8s_resolve(const char *method, const char *path, size_t pathlen, const char *query,
		size_t querylen, bool upgrade, struct k8s_request *out)
{
	int r;

	if (!out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (path && memchr(path, '\0', pathlen))
		return -EINVAL;
	r = resolve(method, path, pathlen, query, querylen, upgrade, out);
	if (r < 0)
		memset(out, 0, sizeof(*out));
	return r;
}

/* ---- rules ------------------------------------------------------------- */

static bool verb_listed(const struct policy_strv *v, const char *verb)
{
	for (size_t i = 0; i < v->n; i++)
		if (v->v[i] && (strcmp(v->v[i], "*") == 0 || strcmp(v->v[i], verb) == 0))
			return true;
	return false;
}

/*
 * review: a review list reads cluster scope (namespace "") the wide way.
 * A request across all namespaces (GET /api/v1/secrets, a watch of every
 * deployment, one with fieldSelector=metadata.namespace=prod) reaches every
 * namespace a review names, and the resolver cannot tell it from a
 * cluster-scoped resource without discovery; so any namespace entry holds
 * it for review (review, stop 64: a review of prod let the all-namespaces
 * list of prod's secrets through under a broader allow). An allow list
 * keeps the narrow reading above: names never match cluster scope.
 */
static bool namespace_listed(const struct policy_strv *v, const char *ns, bool review)
{
	for (size_t i = 0; i < v->n; i++) {
		const char *e = v->v[i];

		if (!e)
			continue;
		if (strcmp(e, "*") == 0 || (review && !ns[0]))
			return true;
		if (ns[0] ? strcmp(e, ns) == 0 : strcmp(e, K8S_NS_CLUSTER) == 0)
			return true;
	}
	return false;
}

static bool part_is(const char *p, size_t n, const char *val)
{
	return (n == 1 && p[0] == '*') || (strlen(val) == n && memcmp(p, val, n) == 0);
}

/*
 * "R[.G][/S]" against the request; see k8s.h. named: an upgraded request
 * (a two-way stream: exec, attach, port-forward, a WebSocket to whatever
 * serves pods/proxy, services/proxy or a custom subresource such as a VM's
 * console) matches only an entry whose subresource part names its
 * subresource: neither "*" nor a "*" after the slash. A rule written to
 * read everything ({verbs: [get], resources: ["*"]}) would otherwise open
 * such streams too, which the apiserver authorizes as a get (known limit
 * until stop 52). Stricter than Kubernetes RBAC, where "*" covers
 * subresources. Allow lists read it so; review lists keep the wide reading
 * (a review of "*" still holds an upgrade for review).
 */
static bool resource_entry_in_group(const char *e, const struct k8s_request *r, const char *group,
				    bool named)
{
	const char *slash = strchr(e, '/');
	size_t rglen = slash ? (size_t)(slash - e) : strlen(e);
	const char *dot = memchr(e, '.', rglen);
	size_t rlen = dot ? (size_t)(dot - e) : rglen;

	if (e[0] == '/')
		return false;
	if (named && r->upgrade && (!slash || strcmp(slash + 1, "*") == 0))
		return false;
	/* a stream on any subresource of nodes needs nodes named: behind
	 * nodes/proxy is the kubelet's exec in every pod of the node (create,
	 * above), which "*" + "/proxy" does not name (review, stop 52) */
	if (named && r->upgrade && !group[0] && strcmp(r->resource, "nodes") == 0 &&
	    (rlen != 5 || memcmp(e, "nodes", 5) != 0))
		return false;
	if (strcmp(e, "*") == 0)
		return true;
	if (!part_is(e, rlen, r->resource))
		return false;
	if (dot ? !part_is(dot + 1, rglen - rlen - 1, group) : group[0] != '\0')
		return false;
	if (!slash)
		return r->subresource[0] == '\0';
	return r->subresource[0] && part_is(slash + 1, strlen(slash + 1), r->subresource);
}

/*
 * The group that serves the same objects under another name, or NULL.
 * Events are one store read and written through the core group (v1) and
 * through events.k8s.io (v1): a delete through either deletes the Event.
 * Kubernetes RBAC matches resources together with apiGroups, and so does
 * an allow list here: "events" is the core group's only, and does not
 * allow /apis/events.k8s.io/... (nor "events.events.k8s.io" /api/v1/...).
 * A review list takes the wide reading, as it does for verbs and paths
 * (stop 67, found by review: a review of "events" with an allow of "*"
 * let DELETE /apis/events.k8s.io/v1/namespaces/x/events/e through unheld).
 * The groups that served Deployments, Ingresses and the like twice
 * (extensions) are gone from the apiserver since 1.22.
 */
static const char *twin_group(const struct k8s_request *r)
{
	if (strcmp(r->resource, "events") != 0)
		return NULL;
	if (!r->api_group[0])
		return "events.k8s.io";
	return strcmp(r->api_group, "events.k8s.io") == 0 ? "" : NULL;
}

static bool resource_entry_matches(const char *e, const struct k8s_request *r, bool named, bool review)
{
	const char *twin = review ? twin_group(r) : NULL;

	return resource_entry_in_group(e, r, r->api_group, named) ||
	       (twin && resource_entry_in_group(e, r, twin, named));
}

/* RBAC's nonResourceURLs: exact, or a prefix before a final '*'. */
static bool path_entry_matches(const char *e, const char *path)
{
	size_t n = strlen(e);

	if (e[0] != '/')
		return false;
	if (e[n - 1] == '*')
		return strncmp(e, path, n - 1) == 0;
	return strcmp(e, path) == 0;
}

/*
 * A review list's verbs hold their kin too (review, stop 43): a review of
 * "delete pods" let DELETE of the whole collection (RBAC's
 * deletecollection) through under a broader allow, one of "get secrets" a
 * list or watch of every secret, one of "list" a watch, one of "update" a
 * PATCH. RBAC reads them apart; for an allow list that is the narrow
 * reading, for a review list the wide one is. So are HTTP methods written
 * beside resources in an action that also has /paths (where they are the
 * verbs): for a resource request POST is create, PUT update or create,
 * HEAD get.
 */
static bool review_verb_listed(const struct policy_strv *v, const struct k8s_request *r)
{
	const char *verb = r->verb;
	bool res = r->resource_request;

#define IS(x) (strcmp(verb, x) == 0)
#define LISTED(x) verb_listed(v, x)
	if (LISTED(verb))
		return true;
	if (IS("deletecollection"))
		return LISTED("delete");
	if (IS("list") || IS("watch"))
		return LISTED("get") || LISTED("list") || (res && LISTED("head"));
	if (IS("get"))
		return res && LISTED("head");
	if (IS("update"))
		return LISTED("patch") || (res && LISTED("put"));
	if (IS("patch"))
		return LISTED("update") || LISTED("put");
	if (IS("create"))
		return res && (LISTED("post") || LISTED("put"));
	if (IS("put"))   /* a /path's methods */
		return LISTED("patch");
	if (IS("head"))
		return LISTED("get");
	return false;
#undef IS
#undef LISTED
}

/*
 * A review list's pod streams hold the kubelet's too (review, stop 64):
 * create on nodes/proxy (an upgrade, or a POST to the kubelet's /run/) is
 * exec, attach or port-forward in any pod of the node (resolve() judges
 * it create for that reason), so an entry naming pods/exec, pods/attach,
 * pods/portforward or "pods/" + "*" holds it for review. An allow list still
 * needs nodes/proxy named.
 */
static bool kubelet_stream_entry(const char *e, const struct k8s_request *r)
{
	return !r->api_group[0] && strcmp(r->resource, "nodes") == 0 &&
	       strcmp(r->subresource, "proxy") == 0 && strcmp(r->verb, "create") == 0 &&
	       (strcmp(e, "pods/exec") == 0 || strcmp(e, "pods/attach") == 0 ||
		strcmp(e, "pods/portforward") == 0 || strcmp(e, "pods/*") == 0);
}

/* named: see resource_entry_matches(); false only to explain a denial. */
static bool action_matches(const struct policy_action *a, const struct k8s_request *r, bool review,
			   bool named)
{
	if (!a || !r || !a->present || !r->verb[0] ||
	    !(review ? review_verb_listed(&a->verbs, r) : verb_listed(&a->verbs, r->verb)))
		return false;
	for (size_t i = 0; i < a->resources.n; i++) {
		const char *e = a->resources.v[i];

		if (!e || !e[0])
			continue;
		if (r->resource_request ? resource_entry_matches(e, r, named && !review, review) ||
					  (review && kubelet_stream_entry(e, r))
					: path_entry_matches(e, r->path))
			return r->resource_request ? namespace_listed(&a->namespaces, r->namespace_, review)
						   : true;
	}
	return false;
}

bool k8s_action_matches(const struct policy_action *a, const struct k8s_request *r)
{
	return action_matches(a, r, false, true);
}

int k8s_resource_string(const struct k8s_request *r, char *out, size_t outlen)
{
	int n;

	if (!r || !out || outlen == 0)
		return -EINVAL;
	if (!r->resource_request)
		n = snprintf(out, outlen, "%s", r->path);
	else
		n = snprintf(out, outlen, "%s%s%s%s%s", r->resource, r->api_group[0] ? "." : "",
			     r->api_group, r->subresource[0] ? "/" : "", r->subresource);
	return n < 0 ? -EINVAL : (size_t)n >= outlen ? -ENOSPC : 0;
}

static void describe(const struct k8s_request *r, char *out, size_t outlen)
{
	char res[200];

	k8s_resource_string(r, res, sizeof(res));
	if (!r->resource_request)
		snprintf(out, outlen, "%s %s", r->verb, res);
	else if (r->namespace_[0])
		snprintf(out, outlen, "%s %s in namespace '%s'", r->verb, res, r->namespace_);
	else
		snprintf(out, outlen, "%s %s cluster-wide", r->verb, res);
}

void k8s_note_create(struct k8s_request *r, const char *method, bool apply_patch)
{
	r->may_create = r->resource_request && r->name[0] && !r->subresource[0] &&
			(strcmp(method, "PUT") == 0 || (strcmp(method, "PATCH") == 0 && apply_patch));
}

static enum k8s_verdict decide_one(const struct policy_rule *const *rules, size_t n,
				   const struct k8s_request *r, const struct policy_rule **which,
				   char *reason, size_t reasonlen);

enum k8s_verdict k8s_decide(const struct policy_rule *const *rules, size_t n,
			    const struct k8s_request *r, const struct policy_rule **which,
			    char *reason, size_t reasonlen)
{
	enum k8s_verdict v = decide_one(rules, n, r, which, reason, reasonlen), cv;
	struct k8s_request cr;
	char what[400];

	if (!r || !r->may_create || v == K8S_DENY)
		return v;
	cr = *r;
	snprintf(cr.verb, sizeof(cr.verb), "create");
	cv = decide_one(rules, n, &cr, NULL, NULL, 0);
	if (cv == K8S_DENY) {
		if (which)
			*which = NULL;
		if (reason && reasonlen) {
			describe(&cr, what, sizeof(what));
			snprintf(reason, reasonlen, "no rule allows %s (a %s creates the object when it does "
				 "not exist, and the apiserver then authorizes create too)", what,
				 strcmp(r->verb, "update") == 0 ? "PUT" : "server-side apply PATCH");
		}
	}
	return k8s_verdict_both(v, cv);
}

static enum k8s_verdict decide_one(const struct policy_rule *const *rules, size_t n,
				   const struct k8s_request *r, const struct policy_rule **which,
				   char *reason, size_t reasonlen)
{
	const struct policy_rule *allow = NULL, *review = NULL;
	enum k8s_verdict v = K8S_DENY;
	const struct policy_rule *by = NULL;
	char what[400];

	for (size_t i = 0; rules && r && i < n && !review; i++) {
		const struct policy_rule *rule = rules[i];

		if (!rule)
			continue;
		if (action_matches(&rule->review, r, true, true))
			review = rule;
		else if (!allow && k8s_action_matches(&rule->allow, r))
			allow = rule;
	}
	if (review) {
		v = K8S_REVIEW;
		by = review;
	} else if (allow) {
		v = K8S_ALLOW;
		by = allow;
	}
	if (which)
		*which = by;
	if (!reason || reasonlen == 0)
		return v;
	if (!r) {
		snprintf(reason, reasonlen, "no request");
		return v;
	}
	describe(r, what, sizeof(what));
	if (by) {
		snprintf(reason, reasonlen, "%s %s by role '%s' rule %d", what,
			 v == K8S_REVIEW ? "needs review" : "allowed", by->role ? by->role : "?",
			 by->index + 1);
		return v;
	}
	/* Say so when a wildcard would have allowed the stream: the fix is
	 * to name the subresource. */
	for (size_t i = 0; r->upgrade && rules && i < n; i++) {
		const struct policy_rule *rule = rules[i];
		char res[200];

		if (!rule || !action_matches(&rule->allow, r, false, false))
			continue;
		k8s_resource_string(r, res, sizeof(res));
		/* the hint first: a long request is cut at the end */
		snprintf(reason, reasonlen, K8S_STREAM_HINT "%s: role '%s' rule %d "
			 "covers %s only by a wildcard", res, rule->role ? rule->role : "?", rule->index + 1,
			 what);
		return v;
	}
	snprintf(reason, reasonlen, "no rule allows %s", what);
	return v;
}

enum k8s_verdict k8s_verdict_both(enum k8s_verdict agent, enum k8s_verdict user)
{
	if (agent == K8S_DENY || user == K8S_DENY)
		return K8S_DENY;
	if (agent == K8S_REVIEW || user == K8S_REVIEW)
		return K8S_REVIEW;
	if (agent == K8S_ALLOW && user == K8S_ALLOW)
		return K8S_ALLOW;
	return K8S_DENY;
}

const char *k8s_verdict_name(enum k8s_verdict v)
{
	switch (v) {
	case K8S_ALLOW:
		return "allow";
	case K8S_REVIEW:
		return "review";
	default:
		return "deny";
	}
}

/* ---- checking rules ---------------------------------------------------- */

static int fail(char *out, size_t outlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *out, size_t outlen, const char *fmt, ...)
{
	va_list ap;

	if (out && outlen) {
		va_start(ap, fmt);
		vsnprintf(out, outlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static bool cstr_all(const char *s, size_t n, bool (*ok)(unsigned char))
{
	return all_of((struct span){ s, n }, ok);
}

static bool in_list(const char *v, const char *const *list)
{
	for (size_t i = 0; list[i]; i++)
		if (strcmp(v, list[i]) == 0)
			return true;
	return false;
}

/* The verbs a resource request gets (requestinfo.go), and those of a
 * /path: its HTTP method in lower case (resolve_nonresource()). */
static const char *const resource_verbs[] = {
	"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "proxy", NULL };
static const char *const path_verbs[] = { "get", "head", "post", "put", "patch", "delete", NULL };

static bool check_verb(const char *v)
{
	return strcmp(v, "*") == 0 || in_list(v, resource_verbs) || in_list(v, path_verbs);
}

/* The core group's resources (v1): a name without a group is one of them,
 * or it matched nothing (review, stop 43: a denylist of other groups'
 * names was never complete). Custom resources always have a group. */
static bool is_core_resource(const char *r, size_t n)
{
	static const char *const core[] = {
		"bindings", "componentstatuses", "configmaps", "endpoints", "events", "limitranges",
		"namespaces", "nodes", "persistentvolumeclaims", "persistentvolumes", "pods",
		"podtemplates", "replicationcontrollers", "resourcequotas", "secrets", "serviceaccounts",
		"services",
	};

	for (size_t i = 0; i < sizeof(core) / sizeof(core[0]); i++)
		if (strlen(core[i]) == n && memcmp(r, core[i], n) == 0)
			return true;
	return false;
}

/* Well-known resources outside the core group: named without their group
 * they are core resources, which do not exist, and matched nothing (a
 * review of them let the request through under allow: review, stop 43). */
static const char *group_of_known(const char *r, size_t n)
{
	static const struct { const char *r, *g; } known[] = {
		{ "deployments", "apps" }, { "statefulsets", "apps" }, { "daemonsets", "apps" },
		{ "replicasets", "apps" }, { "controllerrevisions", "apps" },
		{ "jobs", "batch" }, { "cronjobs", "batch" },
		{ "ingresses", "networking.k8s.io" }, { "networkpolicies", "networking.k8s.io" },
		{ "ingressclasses", "networking.k8s.io" },
		{ "roles", "rbac.authorization.k8s.io" }, { "rolebindings", "rbac.authorization.k8s.io" },
		{ "clusterroles", "rbac.authorization.k8s.io" },
		{ "clusterrolebindings", "rbac.authorization.k8s.io" },
		{ "customresourcedefinitions", "apiextensions.k8s.io" },
		{ "horizontalpodautoscalers", "autoscaling" },
		{ "poddisruptionbudgets", "policy" },
		{ "storageclasses", "storage.k8s.io" }, { "volumeattachments", "storage.k8s.io" },
		{ "csidrivers", "storage.k8s.io" }, { "csinodes", "storage.k8s.io" },
		{ "leases", "coordination.k8s.io" },
		{ "certificatesigningrequests", "certificates.k8s.io" },
		{ "validatingwebhookconfigurations", "admissionregistration.k8s.io" },
		{ "mutatingwebhookconfigurations", "admissionregistration.k8s.io" },
		{ "priorityclasses", "scheduling.k8s.io" },
		{ "endpointslices", "discovery.k8s.io" },
		{ "tokenreviews", "authentication.k8s.io" },
		{ "subjectaccessreviews", "authorization.k8s.io" },
		{ "selfsubjectaccessreviews", "authorization.k8s.io" },
	};

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strlen(known[i].r) == n && memcmp(r, known[i].r, n) == 0)
			return known[i].g;
	return NULL;
}

/*
 * The apiserver's own API groups (Kubernetes 1.33). An entry spelling one
 * whole ("events.k8s.io") reads as resource "events" of a group "k8s.io"
 * that does not exist, and matched nothing (in a review list: let the
 * request through under allow); the Events of that group are
 * "events.events.k8s.io" (stop 67).
 */
static bool is_builtin_group(const char *g, size_t n)
{
	static const char *const groups[] = {
		"admissionregistration.k8s.io", "apiextensions.k8s.io", "apiregistration.k8s.io",
		"authentication.k8s.io", "authorization.k8s.io", "certificates.k8s.io", "coordination.k8s.io",
		"discovery.k8s.io", "events.k8s.io", "flowcontrol.apiserver.k8s.io",
		"internal.apiserver.k8s.io", "metrics.k8s.io", "networking.k8s.io", "node.k8s.io",
		"rbac.authorization.k8s.io", "resource.k8s.io", "scheduling.k8s.io", "storage.k8s.io",
		"storagemigration.k8s.io",
	};

	for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
		if (strlen(groups[i]) == n && memcmp(g, groups[i], n) == 0)
			return true;
	return false;
}

/* In a rule: lower case only. The apiserver's resources and subresources
 * are (CRD plurals must be); an upper-case entry matched nothing, and in a
 * review list silently let the request through under allow (review, stop 28). */
static bool rule_resource_char(unsigned char c)
{
	return is_lower_digit(c) || c == '_' || c == '-';
}

static bool star_or(const char *p, size_t n, bool (*ok)(unsigned char))
{
	return (n == 1 && p[0] == '*') || cstr_all(p, n, ok);
}

static bool check_resource(const char *e)
{
	const char *slash, *dot;
	size_t n = strlen(e), rglen, rlen;

	if (strcmp(e, "*") == 0)
		return true;
	if (e[0] == '/') {
		for (size_t i = 1; i < n; i++)
			if (!(is_pchar((unsigned char)e[i]) || e[i] == '/') ||
			    (e[i] == '*' && i != n - 1))
				return false;
		return true;
	}
	slash = strchr(e, '/');
	rglen = slash ? (size_t)(slash - e) : n;
	dot = memchr(e, '.', rglen);
	rlen = dot ? (size_t)(dot - e) : rglen;
	if (!star_or(e, rlen, rule_resource_char))
		return false;
	if (dot) {
		const char *g = dot + 1;
		size_t gl = rglen - rlen - 1;

		if (!star_or(g, gl, group_char) || g[0] == '.' || g[gl - 1] == '.')
			return false;
	}
	return !slash || star_or(slash + 1, strlen(slash + 1), rule_resource_char);
}

static bool check_namespace(const char *ns)
{
	size_t n = strlen(ns);

	if (strcmp(ns, "*") == 0 || strcmp(ns, K8S_NS_CLUSTER) == 0)
		return true;
	return n <= 63 && cstr_all(ns, n, label_char) && ns[0] != '-' && ns[n - 1] != '-';
}

int k8s_action_check(const struct policy_action *a, char *whybuf, size_t whylen)
{
	bool only_paths = a && a->resources.n > 0;

	if (whybuf && whylen)
		whybuf[0] = '\0';
	if (!a || !a->present)
		return 0;
	if (!a->verbs.n && !a->resources.n && !a->namespaces.n && a->http.n)
		return 0;   /* an http-only action is the HTTP module's */
	for (size_t i = 0; i < a->verbs.n; i++)
		if (!a->verbs.v[i] || !check_verb(a->verbs.v[i]))
			return fail(whybuf, whylen, "unknown kubernetes verb '%.64s' (get, list, watch, "
				    "create, update, patch, delete, deletecollection, proxy, head, post, "
				    "put or *)", a->verbs.v[i] ? a->verbs.v[i] : "");
	bool any_resource = false;

	for (size_t i = 0; i < a->resources.n; i++) {
		const char *e = a->resources.v[i];

		if (!e || !e[0] || !check_resource(e))
			return fail(whybuf, whylen, "bad kubernetes resource '%.64s' (resource[.group]"
				    "[/subresource], each part a name or *; or a /path, optionally "
				    "ending in *)", e ? e : "");
		if (e[0] == '/')
			continue;
		only_paths = false;
		any_resource = true;

		size_t rglen = strcspn(e, "/"), rlen = strcspn(e, "./");
		const char *g = e[rlen] == '.' ? e + rlen + 1 : NULL, *known;
		size_t gl = g ? rglen - rlen - 1 : 0;

		if (g && is_builtin_group(e, rglen))
			return fail(whybuf, whylen, "kubernetes resource '%.64s' is an API group's name: as "
				    "resource.group it names resource %.*s of a group %.*s, which does not "
				    "exist (the Events of events.k8s.io are events.events.k8s.io)", e,
				    (int)rlen, e, (int)gl, g);
		if (g && ((gl == 4 && memcmp(g, "core", 4) == 0) || (gl == 2 && memcmp(g, "v1", 2) == 0)))
			return fail(whybuf, whylen, "kubernetes resource '%.64s': the core group has no "
				    "name in a rule (write the resource alone, e.g. pods)", e);
		if (!g && !(rlen == 1 && e[0] == '*') && !is_core_resource(e, rlen)) {
			if ((known = group_of_known(e, rlen)))
				return fail(whybuf, whylen, "kubernetes resource '%.64s' names no group, so it "
					    "is a core resource, which %.*s is not: write %.*s.%s%s", e, (int)rlen,
					    e, (int)rlen, e, known, e + rlen);
			return fail(whybuf, whylen, "kubernetes resource '%.64s' names no group, so it is "
				    "a core resource, which %.*s is not (custom resources always have a "
				    "group): write it as resource.group", e, (int)rlen, e);
		}
	}
	for (size_t i = 0; i < a->namespaces.n; i++)
		if (!a->namespaces.v[i] || !check_namespace(a->namespaces.v[i]))
			return fail(whybuf, whylen, "bad kubernetes namespace '%.64s' (a namespace name, "
				    "* or " K8S_NS_CLUSTER ")",
				    a->namespaces.v[i] ? a->namespaces.v[i] : "");
	if (!a->verbs.n)
		return fail(whybuf, whylen, "a kubernetes rule needs verbs (* for any)");
	if (!a->resources.n)
		return fail(whybuf, whylen, "a kubernetes rule needs resources (* for any)");
	if (!a->namespaces.n && !only_paths)
		return fail(whybuf, whylen, "a kubernetes rule needs namespaces (* for any, "
			    K8S_NS_CLUSTER " for the cluster scope only)");
	/* A verb no entry's requests ever get matched nothing (in a review
	 * list: let the request through under allow; review, stop 43). */
	bool any_path = false;

	for (size_t k = 0; k < a->resources.n; k++)
		any_path |= a->resources.v[k][0] == '/';
	for (size_t i = 0; i < a->verbs.n; i++) {
		const char *v = a->verbs.v[i];

		if (strcmp(v, "*") == 0 || (any_resource && in_list(v, resource_verbs)) ||
		    (any_path && in_list(v, path_verbs)))
			continue;
		if (any_resource)
			return fail(whybuf, whylen, "kubernetes verb '%.64s' never matches a resource "
				    "request (%s)%s", v,
				    strcmp(v, "post") == 0 ? "POST is create" :
				    strcmp(v, "put") == 0 ? "PUT is update, or create" :
				    strcmp(v, "head") == 0 ? "HEAD is get" : "it is an HTTP method",
				    any_path ? "; for /paths the verbs are the HTTP methods in lower case" : "");
		return fail(whybuf, whylen, "kubernetes verb '%.64s' never matches a /path: their verbs "
			    "are the HTTP methods in lower case (get, head, post, put, patch, delete)", v);
	}
	return 0;
}

/* ---- identity headers -------------------------------------------------- */

static bool imp_value_ok(const char *s)
{
	size_t n;

	if (!s)
		return false;
	n = strnlen(s, IMP_MAX + 1);
	if (n == 0 || n > IMP_MAX || s[0] == ' ' || s[n - 1] == ' ' ||
	    strncmp(s, "system:", 7) == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

static int append(char *buf, size_t buflen, size_t *off, const char *hdr, const char *val)
{
	int n = snprintf(buf + *off, buflen - *off, "%s: %s\r\n", hdr, val);

	if (n < 0 || (size_t)n >= buflen - *off)
		return -ENOSPC;
	*off += (size_t)n;
	return 0;
}

int k8s_impersonation_headers(const char *user, const char *const *groups, size_t ngroups,
			      char *buf, size_t buflen)
{
	size_t off = 0;
	int r = -EINVAL;

	if (!buf || buflen == 0)
		return -ENOSPC;
	buf[0] = '\0';
	if (!imp_value_ok(user) || (ngroups && !groups))
		return -EINVAL;
	for (size_t i = 0; i < ngroups; i++)
		if (!imp_value_ok(groups[i]))
			return -EINVAL;
	r = append(buf, buflen, &off, "Impersonate-User", user);
	for (size_t i = 0; r == 0 && i < ngroups; i++)
		r = append(buf, buflen, &off, "Impersonate-Group", groups[i]);
	if (r < 0) {
		buf[0] = '\0';
		return r;
	}
	return (int)off;
}

bool k8s_header_is_identity(const char *name, size_t len)
{
	static const char *const prefixes[] = { "impersonate-", "x-remote-" };

	if (!name)
		return false;
	if (len == strlen("authorization") && strncasecmp(name, "authorization", len) == 0)
		return true;
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		size_t pl = strlen(prefixes[i]);

		if (len > pl && strncasecmp(name, prefixes[i], pl) == 0)
			return true;
	}
	return false;
}
