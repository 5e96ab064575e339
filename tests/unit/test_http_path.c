// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for userspace/http_path.c: the canonical request target (the
 * path cases of /work/shared/cases/http.txt by id, and the nginx bypasses of
 * notes/postgres-http.md §5.2), authorities, rule checks and matching.
 *
 *   test_http_path                      run the tests
 *   test_http_path --write-corpus DIR   also write each named target to DIR
 */
#include "http_path.h"
#include "unit.h"

struct canon_case {
	const char *id;
	const char *target;
	const char *want;          /* canonical path, or NULL: refused */
	const char *query;         /* expected query, NULL: none */
};

static const struct canon_case cases[] = {
	{ "H01", "/v1/invoices/42", "/v1/invoices/42", NULL },
	/* best-fit forms of '\\' and '%' (stop 59) */
	{ "set-minus", "/public/%E2%88%96..%E2%88%96admin", NULL, NULL },
	{ "arabic-percent", "/v1/invoices/%D9%AA2e%D9%AA2e", NULL, NULL },
	{ "division-slash", "/v1/invoices/42%E2%88%95admin", NULL, NULL },
	{ "H03", "/v1/invoices/../admin/users", NULL, NULL },
	{ "H05", "/v1/invoices/..%2fadmin/users", NULL, NULL },
	{ "H05-upper", "/v1/invoices/..%2Fadmin/users", NULL, NULL },
	{ "H07", "/v1/invoices/%252e%252e/admin", NULL, NULL },
	{ "H09", "/v1/invoices\\..\\admin", NULL, NULL },
	{ "H11", "/v1//invoices/42", NULL, NULL },
	{ "H13", "/v1/invoices/42%00.json", NULL, NULL },
	{ "H15", "/v1/invoices/42#/../../admin", NULL, NULL },
	{ "H17", "/v1/invoices/42?next=/../../admin", "/v1/invoices/42", "next=/../../admin" },
	{ "H19", "http://evil.internal/v1/invoices/42", "/v1/invoices/42", NULL },
	/* nginx §5.2: what it blocked and what it forwarded raw */
	{ "dot", "/v1/invoices/.", NULL, NULL },
	{ "dot-mid", "/v1/./invoices", NULL, NULL },
	{ "dotdot-end", "/v1/invoices/..", NULL, NULL },
	/* dots and spaces alone: Windows drops trailing ones (review, stop 64) */
	{ "dotdot-space", "/static/..%20/web.config", NULL, NULL },
	{ "three-dots", "/static/.../web.config", NULL, NULL },
	{ "dot-space-dot", "/static/.%20./x", NULL, NULL },
	{ "dotdot-space-end", "/static/..%20", NULL, NULL },
	{ "space-dotdot", "/static/%20../x", NULL, NULL },
	{ "dots-in-name", "/static/a..b/...c", "/static/a..b/...c", NULL },
	/* dots and Unicode white space that a trim drops (Java's strip(),
	 * .NET's Trim(), Python's strip(), Go's TrimSpace): a dot segment to a
	 * server that trims a segment first (review, stop 67) */
	{ "dotdot-nbsp", "/static/..%C2%A0/web.config", NULL, NULL },
	{ "dotdot-nbsp-lower", "/static/..%c2%a0/web.config", NULL, NULL },
	{ "dotdot-nbsp-end", "/v1/invoices/..%C2%A0", NULL, NULL },
	{ "dot-nbsp", "/v1/invoices/.%C2%A0/x", NULL, NULL },
	{ "nbsp-dotdot", "/v1/invoices/%C2%A0../admin", NULL, NULL },
	{ "dotdot-nel", "/v1/invoices/..%C2%85/admin", NULL, NULL },
	{ "dotdot-ideographic", "/v1/invoices/..%E3%80%80/admin", NULL, NULL },
	{ "em-space-dotdot", "/v1/invoices/%E2%80%83../admin", NULL, NULL },
	{ "dotdot-ogham", "/v1/invoices/..%E1%9A%80/admin", NULL, NULL },
	{ "dotdot-mongolian", "/v1/invoices/..%E1%A0%8E/admin", NULL, NULL },
	{ "dotdot-zwsp", "/v1/invoices/..%E2%80%8B/admin", NULL, NULL },
	{ "dotdot-line-sep", "/v1/invoices/..%E2%80%A8/admin", NULL, NULL },
	{ "dotdot-para-sep", "/v1/invoices/..%E2%80%A9/admin", NULL, NULL },
	{ "dotdot-nnbsp", "/v1/invoices/..%E2%80%AF/admin", NULL, NULL },
	{ "dotdot-mmsp", "/v1/invoices/..%E2%81%9F/admin", NULL, NULL },
	{ "dotdot-bom", "/v1/invoices/..%EF%BB%BF/admin", NULL, NULL },
	{ "dotdot-mixed-space", "/v1/invoices/%20%C2%A0..%E3%80%80%20/admin", NULL, NULL },
	/* the other trailing forms were refused before: controls, NUL, ';' */
	{ "dotdot-space-20", "/v1/invoices/..%20/admin", NULL, NULL },
	{ "dot-tab", "/v1/invoices/.%09/admin", NULL, NULL },
	{ "dotdot-lf", "/v1/invoices/..%0A/admin", NULL, NULL },
	{ "dotdot-vt", "/v1/invoices/..%0B/admin", NULL, NULL },
	{ "dotdot-nul", "/v1/invoices/..%00/admin", NULL, NULL },
	{ "dotdot-semicolon-param", "/v1/invoices/..;x=1/admin", NULL, NULL },
	{ "dot-semicolon", "/v1/invoices/.;/admin", NULL, NULL },
	{ "dotdot-enc-semicolon", "/v1/invoices/..%3B/admin", NULL, NULL },
	/* white space, or dots, with other text stays a name */
	{ "nbsp-in-name", "/v1/invoices/a%C2%A0b", "/v1/invoices/a%C2%A0b", NULL },
	{ "nbsp-only", "/v1/invoices/%C2%A0", "/v1/invoices/%C2%A0", NULL },
	{ "dotdot-nbsp-name", "/v1/invoices/..%C2%A0x", "/v1/invoices/..%C2%A0x", NULL },
	{ "dotdot-other-char", "/v1/invoices/..%C2%A1", "/v1/invoices/..%C2%A1", NULL },
	{ "dotdot-zwj", "/v1/invoices/..%E2%80%8D", "/v1/invoices/..%E2%80%8D", NULL },
	{ "space-only", "/static/%20/x", "/static/%20/x", NULL },
	{ "dot-file", "/static/.well-known/x", "/static/.well-known/x", NULL },
	{ "enc-dot", "/v1/invoices/%2e%2e/admin", NULL, NULL },
	{ "enc-dot-upper", "/v1/invoices/%2E%2E%2Fadmin", NULL, NULL },
	{ "half-enc-dot", "/v1/invoices/.%2e/admin", NULL, NULL },
	{ "enc-dot-in-name", "/v1/invoices/a%2ejson", NULL, NULL },
	{ "dotdot-semicolon", "/v1/invoices/42/..;/..;/admin", NULL, NULL },
	{ "semicolon", "/v1/invoices/42;jsessionid=1", NULL, NULL },
	{ "enc-backslash", "/v1/invoices/%5c..%5cadmin", NULL, NULL },
	{ "overlong-dot", "/v1/invoices/%C0%AE%C0%AE/admin", NULL, NULL },
	{ "overlong-slash", "/v1/invoices/%C0%AF", NULL, NULL },
	{ "overlong-e0", "/v1/%E0%80%AF", NULL, NULL },
	{ "overlong-f0", "/v1/%F0%80%80%AF", NULL, NULL },
	{ "surrogate", "/v1/%ED%A0%80", NULL, NULL },
	{ "above-max", "/v1/%F4%90%80%80", NULL, NULL },
	{ "f5", "/v1/%F5%80%80%80", NULL, NULL },
	{ "lone-cont", "/v1/%80", NULL, NULL },
	{ "truncated-utf8", "/v1/%C3", NULL, NULL },
	{ "truncated-utf8-raw", "/v1/%C3a", NULL, NULL },
	{ "utf8-ok", "/v1/caf%c3%a9", "/v1/caf%C3%A9", NULL },
	{ "utf8-4", "/v1/%F0%9F%98%80", "/v1/%F0%9F%98%80", NULL },
	{ "unreserved-decoded", "/v1/%61dmin", "/v1/admin", NULL },
	{ "tilde-decoded", "/%7euser", "/~user", NULL },
	{ "space-kept", "/v1/a%20b", "/v1/a%20b", NULL },
	{ "hex-upper", "/v1/%7b%7d", "/v1/%7B%7D", NULL },
	{ "lt-kept", "/v1/%3cx%3E", "/v1/%3Cx%3E", NULL },
	{ "enc-reserved-at", "/v1/%40", NULL, NULL },
	{ "enc-reserved-q", "/v1/a%3Fb", NULL, NULL },
	{ "enc-reserved-hash", "/v1/a%23b", NULL, NULL },
	{ "enc-reserved-semi", "/v1/a%3bb", NULL, NULL },
	{ "enc-pct", "/v1/%25", NULL, NULL },
	{ "enc-ctl", "/v1/%0a", NULL, NULL },
	{ "enc-del", "/v1/%7F", NULL, NULL },
	{ "bad-pct", "/v1/%zz", NULL, NULL },
	{ "short-pct", "/v1/%4", NULL, NULL },
	{ "short-pct-end", "/v1/%", NULL, NULL },
	{ "raw-bracket", "/v1/[x]", NULL, NULL },
	{ "raw-pipe", "/v1/a|b", NULL, NULL },
	{ "raw-quote", "/v1/a\"b", NULL, NULL },
	{ "raw-brace", "/v1/{x}", NULL, NULL },
	{ "sub-delims", "/v1/a!$&'()*+,=:@b", "/v1/a!$&'()*+,=:@b", NULL },
	{ "root", "/", "/", NULL },
	{ "trailing-slash", "/v1/invoices/", "/v1/invoices/", NULL },
	{ "double-trailing", "/v1/invoices//", NULL, NULL },
	{ "leading-double", "//v1/admin", NULL, NULL },
	{ "case-kept", "/V1/ADMIN", "/V1/ADMIN", NULL },
	{ "no-slash", "v1/invoices", NULL, NULL },
	{ "empty-query", "/v1?", "/v1", "" },
	{ "query-pct", "/v1?a=%2F%2e%00", "/v1", "a=%2F%2e%00" },
	{ "query-bad-pct", "/v1?a=%g0", NULL, NULL },
	{ "query-hash", "/v1?a=1#frag", NULL, NULL },
	{ "query-qmark", "/v1?a=?/b", "/v1", "a=?/b" },
	{ "path-in-query-enc", "/v1/x%3F?a", NULL, NULL },
	{ "abs", "http://api.internal/v1/invoices/42?x=1", "/v1/invoices/42", "x=1" },
	{ "abs-upper-scheme", "HTTP://api.internal/v1", "/v1", NULL },
	{ "abs-https", "https://api.internal:8443/v1", "/v1", NULL },
	{ "abs-no-path", "http://api.internal", "/", NULL },
	{ "abs-no-path-query", "http://api.internal?x", "/", "x" },
	{ "abs-dotdot", "http://api.internal/v1/../admin", NULL, NULL },
	{ "abs-userinfo", "http://user@api.internal/v1", NULL, NULL },
	{ "abs-empty-host", "http:///v1", NULL, NULL },
	{ "abs-hash-host", "http://api.internal#/v1", NULL, NULL },
	{ "abs-ftp", "ftp://api.internal/v1", NULL, NULL },
	{ "abs-ipv6", "http://[::1]:8080/v1", "/v1", NULL },
	{ "asterisk", "*", "*", NULL },
	{ "authority-not-connect", "api.internal:443", NULL, NULL },
};

static void test_canon(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct canon_case *c = &cases[i];
		size_t len = strlen(c->target);
		uint8_t *copy = malloc(len);
		char out[512];
		struct http_target r;
		int rc;

		memcpy(copy, c->target, len);
		rc = http_target_canon(copy, len, false, out, len + 2, &r);
		if ((rc == 0) != (c->want != NULL) || (rc == 0 && strcmp(out, c->want) != 0))
			fprintf(stderr, "  case %s: rc %d (%s) out '%s' want '%s'\n", c->id, rc,
				rc ? r.error : "", rc ? "" : out, c->want ? c->want : "(refused)");
		if (c->want) {
			CHECK(rc == 0);
			CHECK(rc == 0 && strcmp(out, c->want) == 0);
			CHECK(rc == 0 && r.path_len == strlen(c->want));
			CHECK(rc == 0 && r.path_len <= len);
			if (c->query)
				CHECK(rc == 0 && r.query && r.query_len == strlen(c->query) &&
				      memcmp(r.query, c->query, r.query_len) == 0);
			else
				CHECK(rc == 0 && r.query == NULL);
		} else {
			CHECK(rc == -EINVAL);
			CHECK(rc != 0 && r.error != NULL);
		}
		unit_seed(c->id, c->target, len);
		free(copy);
	}
}

/* The canonical form is a fixed point: canonicalising it again changes nothing. */
static void test_idempotent(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[512], again[512];
		struct http_target r;
		size_t len = strlen(cases[i].target);

		if (http_target_canon((const uint8_t *)cases[i].target, len, false, out, sizeof(out), &r) < 0 ||
		    r.form == HTTP_FORM_ASTERISK)
			continue;
		CHECK(http_target_canon((const uint8_t *)out, r.path_len, false, again, sizeof(again), &r) == 0);
		CHECK(strcmp(out, again) == 0);
	}
}

static void test_forms(void)
{
	struct http_target r;
	char out[64];
	const char *t;

	t = "http://API.internal:80/v1";
	CHECK(http_target_canon((const uint8_t *)t, strlen(t), false, out, sizeof(out), &r) == 0);
	CHECK(r.form == HTTP_FORM_ABSOLUTE && !r.https);
	CHECK(r.authority_len == 15 && memcmp(r.authority, "API.internal:80", 15) == 0);
	t = "api.internal:443";
	CHECK(http_target_canon((const uint8_t *)t, strlen(t), true, out, sizeof(out), &r) == 0);
	CHECK(r.form == HTTP_FORM_AUTHORITY && r.authority_len == strlen(t));
	t = "api.internal";   /* CONNECT needs a port */
	CHECK(http_target_canon((const uint8_t *)t, strlen(t), true, out, sizeof(out), &r) == -EINVAL);
	t = "/v1";            /* and only authority-form */
	CHECK(http_target_canon((const uint8_t *)t, strlen(t), true, out, sizeof(out), &r) == -EINVAL);
	t = "*";
	CHECK(http_target_canon((const uint8_t *)t, 1, false, out, sizeof(out), &r) == 0);
	CHECK(r.form == HTTP_FORM_ASTERISK);
	/* a buffer that is too small is an error, never an overflow */
	t = "/v1/invoices";
	CHECK(http_target_canon((const uint8_t *)t, strlen(t), false, out, 5, &r) == -EINVAL);
	CHECK(http_target_canon((const uint8_t *)"", 0, false, out, sizeof(out), &r) == -EINVAL);
	t = "/a\x01";
	CHECK(http_target_canon((const uint8_t *)t, 3, false, out, sizeof(out), &r) == -EINVAL);
}

static void test_authority(void)
{
	static const struct { const char *in; int rc; const char *host; uint16_t port; } c[] = {
		{ "api.internal", 0, "api.internal", 0 },
		{ "API.Internal:8080", 0, "api.internal", 8080 },
		{ "127.0.0.1:80", 0, "127.0.0.1", 80 },
		{ "[::1]:443", 0, "::1", 443 },
		{ "[FE80::1]", 0, "fe80::1", 0 },
		{ "a_b.c", 0, "a_b.c", 0 },
		{ "", -EINVAL, NULL, 0 },
		{ ":80", -EINVAL, NULL, 0 },
		{ "a:", -EINVAL, NULL, 0 },
		{ "a:0", -EINVAL, NULL, 0 },
		{ "a:65536", -EINVAL, NULL, 0 },
		{ "a:123456", -EINVAL, NULL, 0 },
		{ "a:8x", -EINVAL, NULL, 0 },
		{ "a:80:80", -EINVAL, NULL, 0 },
		{ "user@a", -EINVAL, NULL, 0 },
		{ "a b", -EINVAL, NULL, 0 },
		{ ".a", -EINVAL, NULL, 0 },
		{ "a.", -EINVAL, NULL, 0 },
		{ "a..b", -EINVAL, NULL, 0 },
		{ "[::1", -EINVAL, NULL, 0 },
		{ "[::1]x", -EINVAL, NULL, 0 },
		{ "[]", -EINVAL, NULL, 0 },
		{ "[g::1]", -EINVAL, NULL, 0 },
	};

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		char host[256];
		uint16_t port = 7;
		int rc = http_authority_parse((const uint8_t *)c[i].in, strlen(c[i].in), host, sizeof(host), &port);

		if (rc != c[i].rc)
			fprintf(stderr, "  authority '%s': %d\n", c[i].in, rc);
		CHECK(rc == c[i].rc);
		if (!rc && c[i].rc == 0) {
			CHECK_STR(host, c[i].host);
			CHECK(port == c[i].port);
		}
	}
}

static void test_rule_check(void)
{
	static const struct { const char *rule; bool ok; } c[] = {
		{ "GET /v1/invoices", true },
		{ "GET /v1/invoices/*", true },
		{ "GET /v1/**", true },
		{ "* /v1/**", true },
		{ "DELETE /v1/invoices/*/lines/*", true },
		{ "UPGRADE /ws", true },
		{ "GET /", true },
		{ "GET /v1/invoices/", true },
		{ "GET /caf%C3%A9", true },
		{ "get /v1", false },
		{ "GET v1", false },
		{ "GET", false },
		{ " /v1", false },
		{ "GET  /v1", false },
		{ "GET /v1/inv*", false },
		{ "GET /v1/***", false },
		{ "GET /v1/*a", false },
		{ "GET /v1/../admin", false },
		{ "GET /v1//x", false },
		{ "GET /v1?x=1", false },
		{ "GET /v1/%61dmin", false },     /* not canonical: "a" is written raw */
		{ "GET /caf%c3%a9", false },      /* not canonical: upper-case hex */
		{ "GET /v1;x", false },
		{ "GET /v1/%2F", false },
		{ "CONNECT /x", false },
		{ "ABCDEFGHIJKLMNOPQRSTU /v1", false },
	};

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		const char *why = NULL;
		int rc = http_rule_check(c[i].rule, &why);

		if ((rc == 0) != c[i].ok)
			fprintf(stderr, "  rule '%s': %d %s\n", c[i].rule, rc, why ? why : "");
		CHECK((rc == 0) == c[i].ok);
		CHECK(c[i].ok || why != NULL);
	}
}

static bool m(const char *rule, const char *method, const char *path)
{
	return http_rule_match(rule, method, strlen(method), false, path, strlen(path));
}

static void test_match(void)
{
	/* the policy of cases/http.txt */
	CHECK(m("GET /v1/invoices/*", "GET", "/v1/invoices/42"));
	CHECK(m("GET /v1/invoices", "GET", "/v1/invoices"));
	CHECK(!m("GET /v1/invoices/*", "GET", "/v1/invoices"));
	CHECK(!m("GET /v1/invoices/*", "GET", "/v1/invoices/"));
	CHECK(!m("GET /v1/invoices/*", "GET", "/v1/invoices/42/lines"));
	CHECK(!m("GET /v1/invoices", "GET", "/v1/invoices/"));
	CHECK(!m("GET /v1/invoices/*", "DELETE", "/v1/invoices/1"));   /* H29 second */
	CHECK(!m("GET /v1/invoices/*", "HEAD", "/v1/invoices/1"));
	CHECK(!m("GET /v1/invoices/*", "GET", "/V1/invoices/1"));
	CHECK(!m("GET /v1/invoices/*", "GET", "/v1/admin/users"));
	CHECK(!m("GET /v1/invoices/*", "GE", "/v1/invoices/1"));
	CHECK(!m("GET /v1/invoices/*", "GETX", "/v1/invoices/1"));
	CHECK(!m("GET /v1/invoices/*", "GET", "/v1/invoices42"));
	CHECK(!m("GET /v1/invoices", "GET", "/v1/invoicesX"));
	CHECK(!m("GET /v1/invoice", "GET", "/v1/invoices"));
	/* ** at any depth */
	CHECK(m("GET /v1/**", "GET", "/v1"));
	CHECK(m("GET /v1/**", "GET", "/v1/"));
	CHECK(m("GET /v1/**", "GET", "/v1/a/b/c"));
	CHECK(!m("GET /v1/**", "GET", "/v2/a"));
	CHECK(!m("GET /v1/**", "GET", "/v10"));
	CHECK(m("GET /**", "GET", "/"));
	CHECK(m("GET /**", "GET", "/anything/at/all"));
	CHECK(m("GET /a/**/z", "GET", "/a/z"));
	CHECK(m("GET /a/**/z", "GET", "/a/b/c/z"));
	CHECK(m("GET /a/**/z", "GET", "/a/z/z"));
	CHECK(!m("GET /a/**/z", "GET", "/a/b/c/z/y"));
	CHECK(!m("GET /a/**/z", "GET", "/a/b"));
	CHECK(m("GET /a/**/*/z", "GET", "/a/b/c/z"));
	CHECK(!m("GET /a/**/*/z", "GET", "/a/z"));
	CHECK(m("GET /**/b/**", "GET", "/x/y/b/z"));
	CHECK(!m("GET /**/b/**", "GET", "/x/y/c/z"));
	CHECK(m("GET /a/*/c", "GET", "/a/b/c"));
	CHECK(!m("GET /a/*/c", "GET", "/a/c"));
	CHECK(m("GET /", "GET", "/"));
	CHECK(!m("GET /*", "GET", "/"));
	CHECK(m("GET /v1/invoices/", "GET", "/v1/invoices/"));
	/* any method, but not CONNECT or TRACE, and never an upgrade */
	CHECK(m("* /v1/**", "DELETE", "/v1/x"));
	CHECK(m("* /v1/**", "PATCH", "/v1/x"));
	CHECK(!m("* /v1/**", "CONNECT", "/v1/x"));
	CHECK(!m("* /v1/**", "TRACE", "/v1/x"));
	CHECK(!http_rule_match("* /ws", "GET", 3, true, "/ws", 3));
	CHECK(!http_rule_match("GET /ws", "GET", 3, true, "/ws", 3));
	CHECK(http_rule_match("UPGRADE /ws", "GET", 3, true, "/ws", 3));
	CHECK(!http_rule_match("UPGRADE /ws", "POST", 4, true, "/ws", 3));
	CHECK(!http_rule_match("UPGRADE /ws", "GET", 3, true, "/ws2", 4));
	CHECK(!http_rule_match("UPGRADE /ws", "GET", 3, false, "/ws", 3));
	CHECK(!http_rule_match("UPGRADE /ws", "UPGRADE", 7, false, "/ws", 3));
	/* malformed rules match nothing */
	CHECK(!m("GET", "GET", "/"));
	CHECK(!m("GET v1", "GET", "v1"));
}

/* Decisions use canonical bytes: the bypasses of §5.2 never reach a match. */
static void test_decide_on_canonical(void)
{
	static const char *bypass[] = {
		"/v1/invoices/42/..;/..;/admin", "/v1/invoices/%252e%252e/admin",
		"/v1/invoices/%5c..%5cadmin", "/v1/invoices/%C0%AE%C0%AE/admin",
		"/v1/invoices/42#/../../admin", "/v1/invoices//../admin",
	};

	for (size_t i = 0; i < sizeof(bypass) / sizeof(bypass[0]); i++) {
		char out[128];
		struct http_target r;

		CHECK(http_target_canon((const uint8_t *)bypass[i], strlen(bypass[i]), false, out,
					sizeof(out), &r) == -EINVAL);
	}
	{
		char out[128];
		struct http_target r;
		const char *t = "/v1/%69nvoices/%34%32";

		CHECK(http_target_canon((const uint8_t *)t, strlen(t), false, out, sizeof(out), &r) == 0);
		CHECK_STR(out, "/v1/invoices/42");
		CHECK(m("GET /v1/invoices/*", "GET", out));
	}
}

/* Method overrides in a form body, fed in pieces (found by review, stop 17:
 * Symfony, Laravel, Rails and ASP.NET read _method from a form). */
static bool form_finds(const char *body, size_t piece)
{
	struct http_form_scan f;
	size_t n = strlen(body);

	http_form_scan_init(&f);
	for (size_t i = 0; i < n; i += piece)
		if (http_form_scan(&f, (const uint8_t *)body + i, n - i < piece ? n - i : piece))
			return true;
	return false;
}

/* Each body of list, fed in pieces of every size up to 9 bytes and whole:
 * finds() answers want for every one. */
static void expect_finds(bool (*finds)(const char *, size_t), const char *const *list, size_t n, bool want)
{
	for (size_t i = 0; i < n; i++)
		for (size_t piece = 1; piece <= 10; piece++) {
			size_t p = piece == 10 ? 4096 : piece;

			if (finds(list[i], p) != want)
				fprintf(stderr, "  %s: %s (pieces of %zu)\n", want ? "missed" : "false hit", list[i], p);
			CHECK(finds(list[i], p) == want);
		}
}

static void test_form_scan(void)
{
	static const char *const found[] = {
		"_method=DELETE", "a=1&_method=PUT", "a=1;_method=PUT", "_METHOD=patch", "%5Fmethod=DELETE",
		"_%6d%65thod=DELETE", ".method=DELETE", "+_method=DELETE", "%20%20_method=DELETE",
		"[method=DELETE", "X-HTTP-Method-Override=DELETE", "x_http_method=PUT", "x.method.override=PUT",
		"++++++++++++++++++++++++++++++++++++++++++++++++_method=DELETE",
		/* PHP ends a name at a decoded NUL (review, stop 34) */
		"_method%00aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=DELETE", "_method%00=DELETE",
		"a=1&x_http_method%00zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz=PUT",
		/* qs (Express) reads an array's first element (review, stop 43) */
		"_method[]=DELETE", "a=1&_method[0]=PUT", "_method%5B%5D=DELETE", "X-HTTP-Method-Override[x]=PUT",
		"_method[aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]=DELETE",
	};
	static const char *const not_found[] = {
		"a=_method=DELETE", "q=1&x_method=DELETE", "_method", "a=1&_methods=DELETE", "method=DELETE",
		"%zz_method=DELETE", "_method_=x", "a=%26_method=DELETE",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_method=DELETE",
		"x%00_method=DELETE", "_meth%00od=DELETE", "x[_method]=DELETE", "_meth[od]=DELETE",
	};

	expect_finds(form_finds, found, sizeof(found) / sizeof(found[0]), true);
	expect_finds(form_finds, not_found, sizeof(not_found) / sizeof(not_found[0]), false);
}

/* Method overrides in JSON and multipart bodies (review, stop 59), fed
 * in pieces of every size up to 9 bytes and whole. */
static bool json_finds(const char *body, size_t piece)
{
	struct http_json_scan j;
	size_t n = strlen(body);

	http_json_scan_init(&j);
	for (size_t i = 0; i < n; i += piece)
		if (http_json_scan(&j, (const uint8_t *)body + i, n - i < piece ? n - i : piece))
			return true;
	return false;
}

static void test_json_scan(void)
{
	static const char *const found[] = {
		"{\"_method\":\"DELETE\"}", " {\"a\": 1, \"_method\": \"PUT\"}", "{\"\\u005fmethod\":1}",
		"{\"_\\u006Dethod\":1}", "{\"_METHOD\":\"patch\"}", "{\"X-HTTP-Method-Override\":\"DELETE\"}",
		"{\"a\":[1,{\"b\":2}],\"_method\":\"DELETE\"}", "{\"a\":{\"b\":{}},\n\t\"_method\" :1}",
		"{\"a\":\"x\\\"y\",\"_method\":1}", "{\"x_http_method\":\"PUT\"}",
	};
	static const char *const not_found[] = {
		"{\"a\":\"_method\"}", "{\"a\":{\"_method\":\"DELETE\"}}", "[\"_method\"]", "[{\"_method\":1}]",
		"{\"a\":[\"_method\"]}", "\"_method\"", "{\"_method_x\":1}", "{\"x_method\":1}",
		"{\"_methodx\":1}", "{\"a\":\"\\\"_method\\\"\"}", "{\"a\":1}{\"b\":2}", "{\"_meth\":\"od\"}",
		/* a key is not a form name: exact, but for case and '-' */
		"{\"_method=\":\"x\"}", "{\"_method[]\":[\"DELETE\"]}", "{\"%5Fmethod\":1}", "{\".method\":1}",
		"{\"_method\\u0000\":1}",
	};

	expect_finds(json_finds, found, sizeof(found) / sizeof(found[0]), true);
	expect_finds(json_finds, not_found, sizeof(not_found) / sizeof(not_found[0]), false);
}

static int multipart_finds(const char *ctype, const char *body, size_t piece)
{
	struct http_multipart_scan m;
	size_t n = strlen(body);

	if (http_multipart_scan_init(&m, ctype, strlen(ctype)) < 0)
		return -1;
	for (size_t i = 0; i < n; i += piece)
		if (http_multipart_scan(&m, (const uint8_t *)body + i, n - i < piece ? n - i : piece))
			return 1;
	return 0;
}

static const char mp_ct[] = "multipart/form-data; boundary=XyZ";

static bool mp_finds(const char *body, size_t piece)
{
	int r = multipart_finds(mp_ct, body, piece);

	CHECK(r >= 0);
	return r == 1;
}

static void test_multipart_scan(void)
{
	const char *ct = mp_ct;
	static const char *const found[] = {
		"--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XyZ--\r\n",
		"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n"
		"--XyZ\r\nContent-Disposition: form-data; name=_method\r\n\r\nPUT\r\n--XyZ--\r\n",
		"--XyZ\r\nContent-Disposition: form-data; NAME = \"_METHOD\"\r\n\r\nPUT\r\n--XyZ--",
		"--XyZ\r\ncontent-disposition: form-data;\r\n name=\"_method\"\r\n\r\nPUT\r\n--XyZ--",
		"--XyZ\nContent-Disposition: form-data; name=\"_method\"\n\nPUT\n--XyZ--",
		"--XyZ\r\nContent-Disposition: form-data; name*=UTF-8''%5Fmethod\r\n\r\nPUT\r\n--XyZ--",
		"--XyZ\r\nContent-Disposition: form-data; name=\"_me\\thod\"\r\n\r\nPUT\r\n--XyZ--",
		"--XyZ\r\nContent-Disposition: form-data; name=\"X-HTTP-Method-Override\"\r\n\r\nPUT\r\n--XyZ--",
		"--XyZ\r\nContent-Disposition: form-data; name=\"a\"; filename=\"f.txt\"\r\nContent-Type: text/plain"
		"\r\n\r\nname=\"_method\"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nX\r\n--XyZ--",
		/* PHP takes a line that starts with the delimiter for one */
		"--XyZw\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nx\r\n",
	};
	static const char *const not_found[] = {
		"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n_method\r\n--XyZ--\r\n",
		"--XyZ\r\nContent-Disposition: form-data; name=\"a\"; filename=\"_method\"\r\n\r\nx\r\n--XyZ--",
		"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nContent-Disposition: form-data; "
		"name=\"_method\"\r\n--XyZ--",
		"--XyZ\r\nContent-Disposition: form-data; name=\"_method_x\"\r\n\r\nx\r\n--XyZ--",
		"--XyZ\r\nContent-Disposition: form-data; name=\"payment_method\"\r\n\r\ncard\r\n--XyZ--",
		"Content-Disposition: form-data; name=\"_method\"\r\n\r\nno boundary line before it",
	};

	expect_finds(mp_finds, found, sizeof(found) / sizeof(found[0]), true);
	expect_finds(mp_finds, not_found, sizeof(not_found) / sizeof(not_found[0]), false);
	/* the boundary: quoted, other parameters around it; none or too long: refused */
	CHECK(multipart_finds("Multipart/Mixed; charset=x; boundary=\"a b;c\"",
			      "--a b;c\r\nContent-Disposition: form-data; name=_method\r\n\r\nx", 3) == 1);
	CHECK(multipart_finds("multipart/form-data", "--x\r\n", 1) == -1);
	CHECK(multipart_finds("multipart/form-data; boundary=", "--x\r\n", 1) == -1);
	CHECK(multipart_finds("multipart/form-data; boundary=\"unclosed", "--x\r\n", 1) == -1);
	CHECK(multipart_finds("application/json", "{}", 1) == -1);
	{
		char b[HTTP_MP_BOUNDARY_MAX + 40];

		memset(b, 'a', sizeof(b) - 1);
		b[sizeof(b) - 1] = '\0';
		memcpy(b, "multipart/form-data; boundary=", 30);
		CHECK(multipart_finds(b, "x", 1) == -1);
	}
	/* a part head past HTTP_MP_HEAD_MAX is not passed (fail closed) */
	{
		static char big[HTTP_MP_HEAD_MAX + 64];
		size_t o = (size_t)snprintf(big, sizeof(big), "--XyZ\r\nX-Pad: ");

		memset(big + o, 'p', sizeof(big) - o - 1);
		big[sizeof(big) - 1] = '\0';
		CHECK(multipart_finds(ct, big, 7) == 1);
	}
}

/* Review rules take what upstreams route alike (review, stop 34). */
static void test_review_match(void)
{
#define RV(rule, m, path) http_review_match(rule, m, strlen(m), false, path, strlen(path))
#define AL(rule, m, path) http_rule_match(rule, m, strlen(m), false, path, strlen(path))
	CHECK(RV("DELETE /v1/invoices/*", "DELETE", "/v1/invoices/1"));
	CHECK(RV("DELETE /v1/invoices/*", "DELETE", "/v1/invoices/1/"));
	CHECK(RV("DELETE /v1/invoices/*", "DELETE", "/v1/INVOICES/1"));
	CHECK(RV("DELETE /v1/Invoices/*", "DELETE", "/v1/invoices/1"));
	CHECK(RV("GET /v1/secrets/**", "HEAD", "/v1/Secrets/a"));
	CHECK(!RV("DELETE /v1/invoices/*", "DELETE", "/v1/orders/1"));
	CHECK(!RV("DELETE /v1/invoices/*", "GET", "/v1/invoices/1"));
	CHECK(!RV("DELETE /v1/invoices/*", "DELETE", "/v1/invoices/1//"));
	/* a format suffix, and PUT and PATCH for each other (review, stop 43) */
	CHECK(RV("POST /v1/payouts", "POST", "/v1/payouts.json"));
	CHECK(RV("POST /v1/payouts", "POST", "/v1/Payouts.JSON/"));
	CHECK(RV("POST /v1/invoices/*/refund", "POST", "/v1/invoices/42/refund.json"));
	CHECK(RV("PUT /v1/invoices/*", "PATCH", "/v1/invoices/42"));
	CHECK(RV("PATCH /v1/invoices/*", "PUT", "/v1/invoices/42.xml"));
	CHECK(RV("POST /v1/payouts", "POST", "/v1/payouts.x-y"));
	CHECK(RV("POST /v1/payouts", "POST", "/v1/payouts.~x"));
	CHECK(RV("POST /v1/payouts", "POST", "/v1/payouts.aaaaaaaaaaaaaaaaaaaaaa"));
	CHECK(RV("POST /v1/payouts", "POST", "/v1/payouts.a.json"));
	CHECK(RV("POST /v1/payouts.a", "POST", "/v1/payouts.a.json"));
	CHECK(!RV("POST /v1/payouts", "POST", "/v1/payouts.json/x"));
	CHECK(!RV("POST /v1/payouts", "POST", "/v1/payouts/.json"));
	CHECK(!RV("POST /v1/payouts", "GET", "/v1/payouts.json"));
	CHECK(!RV("PUT /v1/invoices/*", "POST", "/v1/invoices/42"));
	CHECK(!AL("POST /v1/payouts", "POST", "/v1/payouts.json"));
	CHECK(!AL("PUT /v1/x", "PATCH", "/v1/x"));
	/* a review of "*" holds TRACE, which "*" leaves out of an allow */
	CHECK(RV("* /v1/admin/**", "TRACE", "/v1/admin/x"));
	CHECK(!AL("* /v1/admin/**", "TRACE", "/v1/admin/x"));
	CHECK(!RV("* /v1/admin/**", "TRACE", "/v1/public/x"));
	CHECK(!RV("GET /v1/admin/**", "TRACE", "/v1/admin/x"));
	/* a combining mark composes with the character before it (NFC):
	 * "e%CC%81" is U+00E9 (review, stop 64) */
	CHECK(RV("DELETE /v1/caf%C3%A9/*", "DELETE", "/v1/cafe%CC%81/1"));
	CHECK(RV("DELETE /v1/caf%C3%A9/*", "DELETE", "/v1/CAFE%CC%81/1/"));
	CHECK(RV("DELETE /v1/cafe/*", "DELETE", "/v1/cafe%CC%81/1"));
	CHECK(!RV("DELETE /v1/caf%C3%A9/*", "DELETE", "/v1/cafe/1"));
	CHECK(!RV("DELETE /v1/caf%C3%A9/*", "DELETE", "/v1/tea%CC%81/1"));
	CHECK(!AL("DELETE /v1/caf%C3%A9/*", "DELETE", "/v1/cafe%CC%81/1"));
	/* an upgraded GET is held by a GET or "*" review too: an upstream with
	 * no WebSocket there answers it as the GET (review, stop 64); allow
	 * rules keep needing UPGRADE */
#define RVU(rule, path) http_review_match(rule, "GET", 3, true, path, strlen(path))
#define ALU(rule, path) http_rule_match(rule, "GET", 3, true, path, strlen(path))
	CHECK(RVU("GET /v1/secrets/*", "/v1/secrets/1"));
	CHECK(RVU("GET /v1/secrets/*", "/v1/Secrets/1/"));
	CHECK(RVU("* /v1/admin/**", "/v1/admin/users"));
	CHECK(RVU("UPGRADE /v1/admin/**", "/v1/admin/users"));
	CHECK(!RVU("POST /v1/secrets/*", "/v1/secrets/1"));
	CHECK(!RVU("GET /v1/secrets/*", "/v1/public/1"));
	CHECK(!http_review_match("UPGRADE /v1/admin/**", "GET", 3, false, "/v1/admin/users", 15));
	CHECK(ALU("UPGRADE /v1/**", "/v1/secrets/1"));
	CHECK(!ALU("GET /v1/**", "/v1/secrets/1"));
	CHECK(!ALU("* /v1/**", "/v1/secrets/1"));
#undef RVU
#undef ALU
	/* characters that fold or normalise to ASCII letters (review, stop 46):
	 * an encoded non-ASCII run may stand for any text of its segment */
	CHECK(RV("DELETE /v2/keys/*", "DELETE", "/v2/%E2%84%AAeys/1"));        /* KELVIN SIGN */
	CHECK(RV("DELETE /v2/keys/*", "DELETE", "/v2/%e2%84%aaEYS/1"));
	CHECK(RV("DELETE /v2/invoices/*", "DELETE", "/v2/%C4%B0nvoices/42"));  /* U+0130 */
	CHECK(RV("DELETE /v2/invoices/*", "DELETE", "/v2/%C4%B1nvoices/42/")); /* U+0131 */
	CHECK(RV("POST /v2/payouts", "POST", "/v2/payout%C5%BF"));            /* LONG S */
	CHECK(RV("POST /v2/payouts", "POST", "/v2/%EF%BD%90ayouts"));         /* fullwidth p */
	CHECK(RV("POST /v2/payouts", "POST", "/v2/pay%EF%BD%8F%EF%BD%95ts.json"));
	CHECK(RV("POST /v2/payouts", "POST", "/v2/%EF%AC%81"));               /* any text */
	CHECK(RV("POST /v2/payouts", "POST", "/v2/p%C3%A9y%C3%A9uts"));
	CHECK(RV("GET /v2/a/*/b", "HEAD", "/v2/%C3%A9/7/%C3%A9b"));
	CHECK(RV("POST /v2/payouts/**", "POST", "/v2/payout%C5%BF/x/y"));
	/* within one segment only, and the rest must still match */
	CHECK(!RV("DELETE /v2/keys/*", "DELETE", "/v2/%E2%84%AA/1/2"));
	CHECK(!RV("DELETE /v2/keys/*", "DELETE", "/v2/%E2%84%AAeys"));
	CHECK(!RV("POST /v2/payouts", "POST", "/v2/payouts%C3%A9x"));
	CHECK(!RV("POST /v2/payouts", "POST", "/v2/x%C5%BF"));
	CHECK(!RV("POST /v2/payouts", "GET", "/v2/payout%C5%BF"));
	CHECK(!RV("POST /v2/payouts", "POST", "/v2/payout%7F"));               /* ASCII: exact */
	CHECK(RV("POST /v2/payouts", "POST", "/v2/payout%C5"));                /* any byte over 0x7F */
	/* Windows file names (review, stop 59): trailing dots and spaces
	 * dropped, ':' starts a data stream, "~1" ends a short name */
	CHECK(RV("GET /files/secret.txt", "GET", "/files/secret.txt%20"));
	CHECK(RV("GET /files/secret.txt", "GET", "/files/secret.txt%20."));
	CHECK(RV("GET /files/secret.txt", "GET", "/files/secret.txt.%20.%20"));
	CHECK(RV("GET /files/secret.txt", "GET", "/files/SECRET.TXT%20"));
	CHECK(RV("GET /files/secret.txt", "HEAD", "/files/secret.txt%20"));
	CHECK(RV("GET /files/secret.txt", "GET", "/files/secret.txt::$DATA"));
	CHECK(RV("GET /files/secret.txt", "GET", "/files/secret.txt:s:$DATA"));
	CHECK(RV("GET /files/secret.txt", "GET", "/files/SECRE~1.TXT"));
	CHECK(RV("GET /files/secret.txt", "GET", "/FILES~2/secret.txt"));
	CHECK(RV("GET /admin/**", "GET", "/admin::$INDEX_ALLOCATION/users"));
	CHECK(RV("GET /admin/*", "GET", "/admin%20./users"));
	CHECK(RV("POST /v1/payouts", "POST", "/v1/payouts%20"));
	CHECK(RV("POST /v1/payouts", "POST", "/v1/payouts::$DATA"));
	CHECK(RV("POST /v1/payouts", "POST", "/v1/payouts.json%20"));
	CHECK(RV("DELETE /v1/invoices/*", "DELETE", "/v1/invoices./42"));
	CHECK(RV("DELETE /v1/invoices/*", "DELETE", "/v1/INVOIC~1/42"));
	/* and nothing else */
	CHECK(!RV("GET /files/secret.txt", "GET", "/files/secret.txt%20x"));
	CHECK(!RV("GET /files/secret.txt", "GET", "/files/other.txt%20"));
	CHECK(!RV("GET /files/secret.txt", "GET", "/files/secret~x.txt"));
	CHECK(!RV("GET /files/secret.txt", "GET", "/files/:secret.txt"));
	CHECK(!RV("GET /files/secret.txt", "GET", "/files/x/secret.txt%20"));
	CHECK(!RV("GET /files/secret.txt", "GET", "/files/SECRE~1.TXT/x"));
	CHECK(!RV("GET /files/secret.txt", "POST", "/files/secret.txt::$DATA"));
	CHECK(!RV("DELETE /v1/invoices/*", "DELETE", "/v1/invoices./42/x"));
	/* allow rules stay exact */
	CHECK(!AL("GET /files/secret.txt", "GET", "/files/secret.txt%20"));
	CHECK(!AL("GET /files/secret.txt", "GET", "/files/secret.txt::$DATA"));
	CHECK(!AL("GET /files/secret.txt", "GET", "/files/SECRE~1.TXT"));
	CHECK(!AL("POST /v2/payouts", "POST", "/v2/payout%C5%BF"));
	CHECK(!AL("DELETE /v1/invoices/*", "DELETE", "/v1/INVOICES/1"));
	CHECK(!AL("GET /v1/x", "HEAD", "/v1/x"));
#undef RV
#undef AL
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
		unit_corpus_dir = argv[2];
	else if (argc != 1) {
		fprintf(stderr, "usage: %s [--write-corpus DIR]\n", argv[0]);
		return 2;
	}
	RUN(test_canon);
	RUN(test_json_scan);
	RUN(test_multipart_scan);
	RUN(test_idempotent);
	RUN(test_forms);
	RUN(test_authority);
	RUN(test_rule_check);
	RUN(test_match);
	RUN(test_decide_on_canonical);
	RUN(test_form_scan);
	RUN(test_review_match);
	UNIT_DONE("http_path");
}
