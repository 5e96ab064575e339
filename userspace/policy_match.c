/* SPDX-License-Identifier: Apache-2.0 */
/*
 * policy_match: questions asked of a loaded policy on the connection path
 * (which target is this destination, may this name be resolved), plus the
 * small parsers and formatters shared with policy_load.c.
 *
 * Everything here that takes a struct policy is pure and allocation-free: it
 * runs for every accepted connection and every DNS query. policy_warnings(),
 * run at load only, also stats the secret files (policy_secrets.c).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy.h"

#define ADDR_MAX_LEN 300   /* longest "host:port" we look at: 253 + brackets + port */
#define DNS_NAME_MAX 253

static const uint8_t v4_mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/* ---- naming ------------------------------------------------------------ */

const char *policy_proto_name(enum policy_proto p)
{
	static const char *const names[PROTO__COUNT] = {
		[PROTO_TCP] = "tcp",
		[PROTO_TLS] = "tls",
		[PROTO_POSTGRES] = "postgres",
		[PROTO_HTTP] = "http",
		[PROTO_KUBERNETES] = "kubernetes",
	};

	if ((unsigned)p >= PROTO__COUNT)
		return "unknown";
	return names[p];
}

enum policy_tls_check policy_tls_check(const struct policy_upstream *u)
{
	if (!u->tls || strcmp(u->tls, "disable") == 0)
		return POLICY_TLS_OFF;
	if (strcmp(u->tls, "require") == 0)
		return u->ca_file ? POLICY_TLS_CHAIN : POLICY_TLS_NONE;
	return POLICY_TLS_FULL;   /* verify-full, and anything unknown: the most checked */
}

void policy_error_format(const struct policy_error *e, char *out, size_t outlen)
{
	if (!out || outlen == 0)
		return;
	if (!e) {
		out[0] = '\0';
		return;
	}
	/* Editors and CI annotators parse "file:line:col:", so only print the
	 * parts we actually know rather than a misleading ":0". */
	if (e->line > 0 && e->col > 0)
		snprintf(out, outlen, "%s:%d:%d: %s", e->file, e->line, e->col, e->msg);
	else if (e->line > 0)
		snprintf(out, outlen, "%s:%d: %s", e->file, e->line, e->msg);
	else
		snprintf(out, outlen, "%s: %s", e->file, e->msg);
}

int policy_agent_index(const struct policy *p, const char *name)
{
	if (!p || !name)
		return -1;
	for (size_t i = 0; i < p->nagents; i++)
		if (p->agents[i].name && strcmp(p->agents[i].name, name) == 0)
			return (int)i;
	return -1;
}

int policy_target_index(const struct policy *p, const char *name)
{
	if (!p || !name)
		return -1;
	for (size_t i = 0; i < p->ntargets; i++)
		if (p->targets[i].name && strcmp(p->targets[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* ---- matching ---------------------------------------------------------- */

static bool prefix_contains(const uint8_t net[16], unsigned prefixlen, const uint8_t addr[16])
{
	unsigned full = prefixlen / 8, rest = prefixlen % 8;

	if (prefixlen > 128)
		return false;
	if (memcmp(net, addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (net[full] & mask) == (addr[full] & mask);
}

int policy_match_target(const struct policy *p, const uint8_t addr[16], uint16_t port,
			policy_host_resolved_fn resolved, void *ctx)
{
	int best = -1;
	unsigned best_len = 0;

	if (!p || !addr)
		return -1;

	for (size_t i = 0; i < p->ntargets; i++) {
		const struct policy_addr *a = &p->targets[i].addr;

		if (a->kind == ADDR_IP && a->port == port && memcmp(a->addr, addr, 16) == 0)
			return (int)i;
	}

	/* Longest prefix wins so a narrow target carved out of a wide one gets
	 * its own rules; ties go to the target written first. */
	for (size_t i = 0; i < p->ntargets; i++) {
		const struct policy_addr *a = &p->targets[i].addr;

		if (a->kind != ADDR_CIDR || a->port != port)
			continue;
		if (!prefix_contains(a->addr, a->prefixlen, addr))
			continue;
		if (best < 0 || a->prefixlen > best_len) {
			best = (int)i;
			best_len = a->prefixlen;
		}
	}
	if (best >= 0)
		return best;

	if (!resolved)
		return -1;
	for (size_t i = 0; i < p->ntargets; i++) {
		const struct policy_addr *a = &p->targets[i].addr;

		if (a->kind == ADDR_HOST && a->port == port && a->host &&
		    resolved(ctx, a->host, addr))
			return (int)i;
	}
	return -1;
}

bool policy_dns_allowed(const struct policy *p, const char *name)
{
	size_t len;

	if (!name)
		return false;
	if (!p || p->dns_allow.n == 0)
		return true;

	len = strnlen(name, DNS_NAME_MAX + 2);
	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || len > DNS_NAME_MAX)
		return false;

	for (size_t i = 0; i < p->dns_allow.n; i++) {
		const char *e = p->dns_allow.v[i];
		size_t elen = strlen(e);

		if (elen > 2 && e[0] == '*' && e[1] == '.') {
			/* "*.example.com": strictly below, so the dot before the
			 * suffix must be in the name and something before it. */
			size_t slen = elen - 2;

			if (len > slen + 1 && name[len - slen - 1] == '.' &&
			    strncasecmp(name + len - slen, e + 2, slen) == 0)
				return true;
		} else if (elen == len && strncasecmp(name, e, len) == 0) {
			return true;
		}
	}
	return false;
}

/*
 * The metadata class: the link-local ranges cloud instance metadata and
 * credential services live in (169.254.0.0/16: AWS/GCP/Azure IMDS, ECS task
 * credentials at 169.254.170.2; fe80::/10), AWS's IPv6 IMDS fd00:ec2::254 and
 * Alibaba's 100.100.100.200. Twin of is_metadata() in bpf/agentgate.bpf.c.
 */
bool policy_is_metadata_addr(const uint8_t addr[16])
{
	static const uint8_t v4map[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	static const uint8_t aws_v6[16] = { 0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0,
					    0, 0, 0, 0, 0, 0, 0x02, 0x54 };

	if (!addr)
		return false;
	if (memcmp(addr, v4map, 12) == 0)
		return (addr[12] == 169 && addr[13] == 254) ||
		       (addr[12] == 100 && addr[13] == 100 && addr[14] == 100 && addr[15] == 200);
	return memcmp(addr, aws_v6, 16) == 0 || (addr[0] == 0xfe && (addr[1] & 0xc0) == 0x80);
}

/* ---- address parsing --------------------------------------------------- */

static int fail(char *why, size_t whylen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (why && whylen) {
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static int parse_port(const char *s, uint16_t *port)
{
	unsigned long v = 0;
	size_t n = 0;

	for (; s[n]; n++) {
		if (s[n] < '0' || s[n] > '9' || n >= 5)
			return -1;
		v = v * 10 + (unsigned long)(s[n] - '0');
	}
	if (n == 0 || v < 1 || v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

static int parse_prefixlen(const char *s, unsigned max, unsigned *out)
{
	unsigned v = 0;
	size_t n = 0;

	for (; s[n]; n++) {
		if (s[n] < '0' || s[n] > '9' || n >= 3)
			return -1;
		v = v * 10 + (unsigned)(s[n] - '0');
	}
	if (n == 0 || v > max)
		return -1;
	*out = v;
	return 0;
}

static bool host_bits_zero(const uint8_t a[16], unsigned prefixlen)
{
	for (unsigned bit = prefixlen; bit < 128; bit++)
		if (a[bit / 8] & (0x80 >> (bit % 8)))
			return false;
	return true;
}

/* RFC 1123 names, plus '_' which internal zones use. The last label must not
 * be all digits, so a mistyped IPv4 address is not taken for a host name. */
static bool valid_host_name(const char *h, size_t len)
{
	size_t label = 0;
	bool all_digits = true;

	if (len == 0 || len > DNS_NAME_MAX)
		return false;
	for (size_t i = 0; i <= len; i++) {
		char c = i < len ? h[i] : '.';

		if (c == '.') {
			if (label == 0 || label > 63 || h[i - 1] == '-')
				return false;
			if (i == len && all_digits)
				return false;
			label = 0;
			all_digits = true;
			continue;
		}
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			     (c >= '0' && c <= '9');
		if (!alnum && c != '-' && c != '_')
			return false;
		if (label == 0 && c == '-')
			return false;
		if (c < '0' || c > '9')
			all_digits = false;
		label++;
	}
	return true;
}

static int parse_ip_or_cidr(char *host, bool v6, struct policy_addr *out,
			    char *why, size_t whylen)
{
	char *slash = strchr(host, '/');
	unsigned plen = 0;

	if (slash)
		*slash = '\0';
	if (v6) {
		if (inet_pton(AF_INET6, host, out->addr) != 1)
			return fail(why, whylen, "'%s' is not an IPv6 address", host);
	} else {
		memcpy(out->addr, v4_mapped_prefix, 12);
		if (inet_pton(AF_INET, host, out->addr + 12) != 1)
			return fail(why, whylen, "'%s' is not an IPv4 address", host);
	}
	out->is_v4 = memcmp(out->addr, v4_mapped_prefix, 12) == 0;
	if (!slash) {
		out->kind = ADDR_IP;
		out->prefixlen = 128;
		return 0;
	}
	if (parse_prefixlen(slash + 1, v6 ? 128 : 32, &plen) < 0)
		return fail(why, whylen, "bad prefix length '/%s'", slash + 1);
	out->kind = ADDR_CIDR;
	out->prefixlen = (uint8_t)(v6 ? plen : 96 + plen);
	if (v6 && plen < 96) {
		uint8_t mapped[16] = { 0 };
		unsigned bits = plen;
		size_t i = 0;

		out->is_v4 = false;
		/* IPv4 destinations are kept IPv4-mapped (::ffff:a.b.c.d), here
		 * and in the kernel's allow set: a prefix over ::ffff:0:0/96
		 * would take in every IPv4 address too */
		memcpy(mapped, v4_mapped_prefix, 12);
		for (; bits >= 8 && out->addr[i] == mapped[i]; bits -= 8)
			i++;
		if (bits < 8 && (bits == 0 || ((out->addr[i] ^ mapped[i]) >> (8 - bits)) == 0))
			return fail(why, whylen, "'%s/%u' also covers every IPv4 address (::ffff:0:0/96): "
				    "use a narrower IPv6 prefix (such as 2000::/3), and IPv4 addresses for IPv4",
				    host, plen);
	}
	/* A set host bit usually means the author meant a single address or
	 * mistyped the prefix; guessing either way would widen or narrow the
	 * target silently. */
	if (!host_bits_zero(out->addr, out->prefixlen))
		return fail(why, whylen, "'%s/%u' has host bits set beyond the prefix length",
			    host, plen);
	return 0;
}

int policy_parse_addr(const char *s, struct policy_addr *out, char *why, size_t whylen)
{
	char host[ADDR_MAX_LEN + 1];
	const char *port_s;
	size_t len, hlen;
	bool bracketed = false;

	if (why && whylen)
		why[0] = '\0';
	if (!out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (!s || !*s)
		return fail(why, whylen, "empty address");
	len = strnlen(s, ADDR_MAX_LEN + 1);
	if (len > ADDR_MAX_LEN)
		return fail(why, whylen, "address longer than %d characters", ADDR_MAX_LEN);

	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close)
			return fail(why, whylen, "missing ']' after IPv6 address");
		if (close[1] != ':')
			return fail(why, whylen, "missing port after ']' (expected [addr]:port)");
		bracketed = true;
		hlen = (size_t)(close - s - 1);
		memcpy(host, s + 1, hlen);
		port_s = close + 2;
	} else {
		const char *colon = strrchr(s, ':');

		if (!colon)
			return fail(why, whylen, "missing port (expected host:port)");
		hlen = (size_t)(colon - s);
		memcpy(host, s, hlen);
		port_s = colon + 1;
	}
	host[hlen] = '\0';

	if (hlen == 0)
		return fail(why, whylen, "missing host before ':'");
	if (!bracketed && memchr(host, ':', hlen))
		return fail(why, whylen, "IPv6 addresses need brackets, e.g. [2001:db8::1]:443");
	if (parse_port(port_s, &out->port) < 0)
		return fail(why, whylen, "bad port '%s' (expected 1..65535)", port_s);

	if (bracketed)
		return parse_ip_or_cidr(host, true, out, why, whylen);
	if (strchr(host, '/'))
		return parse_ip_or_cidr(host, false, out, why, whylen);

	memcpy(out->addr, v4_mapped_prefix, 12);
	if (inet_pton(AF_INET, host, out->addr + 12) == 1) {
		out->kind = ADDR_IP;
		out->prefixlen = 128;
		out->is_v4 = true;
		return 0;
	}
	memset(out->addr, 0, sizeof(out->addr));

	if (hlen > 1 && host[hlen - 1] == '.')
		host[--hlen] = '\0';
	if (!valid_host_name(host, hlen))
		return fail(why, whylen, "'%s' is not a valid IP address or host name", host);
	for (size_t i = 0; i < hlen; i++)
		if (host[i] >= 'A' && host[i] <= 'Z')
			host[i] = (char)(host[i] - 'A' + 'a');
	out->host = strdup(host);
	if (!out->host) {
		fail(why, whylen, "out of memory");
		return -ENOMEM;
	}
	out->kind = ADDR_HOST;
	return 0;
}

const char *policy_rule_label(const struct policy_rule *r, char *buf, size_t len)
{
	if (r->label)
		return r->label;
	snprintf(buf, len, "role '%s' rule %d (line %d)", r->role ? r->role : "?", r->index + 1, r->line);
	return buf;
}

/* ---- warnings ----------------------------------------------------------- */

/* An address only this host can answer: 127.0.0.0/8 (as v4-mapped), ::1,
 * or the name localhost (RFC 6761: always the loopback). */
static bool addr_on_host(const struct policy_addr *a)
{
	static const uint8_t v4m[12] = { [10] = 0xff, [11] = 0xff };
	static const uint8_t v6lo[16] = { [15] = 1 };

	if (a->kind == ADDR_HOST)
		return a->host && strcmp(a->host, "localhost") == 0;
	if (a->is_v4)
		return !memcmp(a->addr, v4m, sizeof(v4m)) && a->addr[12] == 127 && a->prefixlen >= 104;
	return !memcmp(a->addr, v6lo, sizeof(v6lo)) && a->prefixlen == 128;
}

void policy_warnings(const struct policy *p, void (*fn)(void *arg, const char *msg), void *arg)
{
	for (size_t i = 0; i < p->ntargets; i++) {
		const struct policy_target *t = &p->targets[i];
		const struct policy_upstream *u = &t->upstream;
		const struct policy_addr *to = u->has_address ? &u->address : &t->addr;
		const char *cred = u->bearer_token_file ? "bearer_token_file" :
				   u->basic_auth_file ? "basic_auth_file" :
				   u->header_value_file ? "header" :
				   u->bearer_agent_token ? "bearer: agent_token" : NULL;
		enum policy_tls_check chk = policy_tls_check(u);
		const char *how = chk == POLICY_TLS_CHAIN ? ", with ca_file: its chain is checked, not its name" : "";
		char msg[512];

		/* Host is checked against the target's names (proto_http.c
		 * host_ok()); one with none forwards any (audited) */
		if ((t->proto == PROTO_HTTP || t->proto == PROTO_KUBERNETES) && t->addr.kind != ADDR_HOST &&
		    !u->server_name && !(u->has_address && u->address.kind == ADDR_HOST)) {
			snprintf(msg, sizeof(msg), "target '%s': it has no name (an address, no "
				 "upstream.server_name), so the agent's Host is forwarded as sent, and an "
				 "upstream serving several sites there picks one by it; set "
				 "upstream.server_name to accept that name only", t->name);
			fn(arg, msg);
		}
		if (chk == POLICY_TLS_FULL || addr_on_host(to))
			continue;
		/* A postgres password goes in clear only to a verified server
		 * (proto_pg.c); but md5 and SCRAM answers are made with a salt
		 * (and for SCRAM a nonce and iteration count) the server picks,
		 * and an impostor can test guesses of the password against them
		 * offline. */
		if (t->proto == PROTO_POSTGRES && u->password_file) {
			snprintf(msg, sizeof(msg), "target '%s': the server is not verified (tls: %s%s): whoever "
				 "answers for the upstream address gets an md5 or SCRAM answer made from its "
				 "password, against which guesses of the password can be tested offline; set "
				 "tls: verify-full", t->name, u->tls ? u->tls : "disable", how);
			fn(arg, msg);
			continue;
		}
		if ((t->proto != PROTO_HTTP && t->proto != PROTO_KUBERNETES) || !cred)
			continue;
		snprintf(msg, sizeof(msg), "target '%s': its credential (%s) is sent upstream over %s: whoever "
			 "answers for the upstream address can read it; set tls: verify-full", t->name, cred,
			 chk == POLICY_TLS_CHAIN ? "TLS whose server name is not verified (tls: require, with "
						   "ca_file: its chain is checked, not its name)" :
			 chk == POLICY_TLS_NONE ? "TLS that is not verified (tls: require)" : "plain TCP (no tls)");
		fn(arg, msg);
	}
	policy_secret_warnings(p, fn, arg);
}
