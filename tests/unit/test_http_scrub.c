// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for userspace/http_scrub.c: an injected credential is starred
 * in answers as written, percent-encoded and JSON-escaped; the text around
 * it, other text and short secrets are left alone; a stream that keeps
 * back scrub_hold() bytes finds an occurrence split across reads.
 */
#include "http_scrub.h"
#include "unit.h"

static const char TOKEN[] = "s3cr3t-upstream-token";
static const char B64[] = "dXNlcjpwYS/zcy+3b3JkPQ==";   /* base64 with '/', '+', '=' */

/* Scrubs a copy of in; the result must equal want (a NUL-terminated copy). */
static unsigned scrub_str(const struct scrub *z, const char *in, char *out, size_t cap)
{
	size_t n = strlen(in);
	unsigned hits;

	if (n >= cap)
		abort();
	memcpy(out, in, n + 1);
	hits = scrub_buf(z, (uint8_t *)out, n);
	return hits;
}

static void test_forms(void)
{
	struct scrub z = { 0 };
	char out[512];

	CHECK(scrub_add(&z, (const uint8_t *)TOKEN, strlen(TOKEN)) == 0);
	CHECK(scrub_add(&z, (const uint8_t *)B64, strlen(B64)) == 0);
	CHECK(z.n == 2);
	CHECK(scrub_add(&z, (const uint8_t *)TOKEN, strlen(TOKEN)) == 0 && z.n == 2);   /* no duplicate */

	CHECK(scrub_str(&z, "Authorization: Bearer s3cr3t-upstream-token\r\n", out, sizeof(out)) == 1);
	CHECK_STR(out, "Authorization: Bearer *********************\r\n");
	/* twice, and back to back */
	CHECK(scrub_str(&z, "s3cr3t-upstream-tokens3cr3t-upstream-token", out, sizeof(out)) == 2);
	CHECK(strchr(out, 's') == NULL);
	/* percent-encoded, either case, any mix; the starred run covers the encoding */
	CHECK(scrub_str(&z, "/login?t=dXNlcjpwYS%2Fzcy%2B3b3JkPQ%3D%3D&x=1", out, sizeof(out)) == 1);
	CHECK_STR(out, "/login?t=********************************&x=1");
	CHECK(scrub_str(&z, "t=dXNlcjpwYS%2fzcy+3b3JkPQ%3d%3d", out, sizeof(out)) == 1);
	CHECK(scrub_str(&z, "t=dXNlcjpwYS%2Fzcy+3b3JkPQ==", out, sizeof(out)) == 1);
	CHECK(scrub_str(&z, "t=dXNlcjpwYS/zcy%2B3b3JkPQ%3D=", out, sizeof(out)) == 1);
	CHECK(strstr(out, "dXNl") == NULL);
	/* JSON-escaped */
	CHECK(scrub_str(&z, "{\"auth\":\"Basic dXNlcjpwYS\\/zcy+3b3JkPQ==\"}", out, sizeof(out)) == 1);
	CHECK_STR(out, "{\"auth\":\"Basic *************************\"}");
	CHECK(scrub_str(&z, "{\"a\":\"dXNlcjpwYS\\u002fzcy\\u002B3b3JkPQ\\u003D=\"}", out, sizeof(out)) == 1);
	CHECK(strstr(out, "dXNl") == NULL);
	/* almost: one byte differs, or cut short */
	CHECK(scrub_str(&z, "s3cr3t-upstream-tokeN s3cr3t-upstream-toke", out, sizeof(out)) == 0);
	CHECK_STR(out, "s3cr3t-upstream-tokeN s3cr3t-upstream-toke");
	CHECK(scrub_str(&z, "dXNlcjpwYS%2Gzcy+3b3JkPQ==", out, sizeof(out)) == 0);
	CHECK(scrub_str(&z, "", out, sizeof(out)) == 0);
	scrub_clear(&z);
	CHECK(z.n == 0);
}

static void test_limits(void)
{
	struct scrub z = { 0 };
	char out[128], big[SCRUB_SECRET_MAX + 2];

	/* short secrets are not searched for; nor over-long ones */
	CHECK(scrub_add(&z, (const uint8_t *)"pw", 2) == 0 && z.n == 0);
	memset(big, 'a', sizeof(big));
	CHECK(scrub_add(&z, (const uint8_t *)big, sizeof(big)) == 0 && z.n == 0);
	CHECK(scrub_hold(&z) == 0);
	CHECK(scrub_str(&z, "pw pw", out, sizeof(out)) == 0);
	/* the newest SCRUB_MAX stay */
	for (int i = 0; i < SCRUB_MAX + 2; i++) {
		char s[32];

		snprintf(s, sizeof(s), "secret-number-%d", i);
		CHECK(scrub_add(&z, (const uint8_t *)s, strlen(s)) == 0);
	}
	CHECK(z.n == SCRUB_MAX);
	CHECK(scrub_str(&z, "secret-number-0 secret-number-5", out, sizeof(out)) == 1);
	CHECK_STR(out, "secret-number-0 ***************");
	CHECK(scrub_hold(&z) == strlen("secret-number-5") * SCRUB_ENC_MAX - 1);
	scrub_clear(&z);
}

/* A secret that starts with escapable bytes has no memmem() needle: every
 * position is tried. A '%' in the secret reads two ways. */
static void test_no_plain_prefix(void)
{
	struct scrub z = { 0 };
	char out[256];
	const char *s = "/+%25abc/def==";

	CHECK(scrub_add(&z, (const uint8_t *)s, strlen(s)) == 0);
	CHECK(scrub_str(&z, "x /+%25abc/def== y", out, sizeof(out)) == 1);
	CHECK_STR(out, "x ************** y");
	CHECK(scrub_str(&z, "x %2F%2B%2525abc%2Fdef%3D%3D y", out, sizeof(out)) == 1);
	CHECK(strchr(out, 'a') == NULL && strchr(out, '%') == NULL);
	CHECK(scrub_str(&z, "x \\/+%25abc\\/def== y", out, sizeof(out)) == 1);
	CHECK(scrub_str(&z, "x /+%26abc/def== y", out, sizeof(out)) == 0);
	scrub_clear(&z);
}

/* The stream rule: keep back scrub_hold() bytes of each read; an
 * occurrence split at every possible place, in every encoding, is found. */
static void test_stream_split(void)
{
	const char *bodies[] = {
		"{\"echo\":\"Bearer s3cr3t-upstream-token\",\"n\":1}",
		"..dXNlcjpwYS%2Fzcy%2B3b3JkPQ%3D%3D..",
		"..dXNlcjpwYS\\u002fzcy+3b3JkPQ==..",
	};
	struct scrub z = { 0 };

	scrub_add(&z, (const uint8_t *)TOKEN, strlen(TOKEN));
	scrub_add(&z, (const uint8_t *)B64, strlen(B64));
	for (size_t b = 0; b < sizeof(bodies) / sizeof(bodies[0]); b++) {
		size_t n = strlen(bodies[b]), hold = scrub_hold(&z);

		for (size_t cut = 0; cut <= n; cut++) {
			uint8_t carry[1024], sent[1024];
			size_t clen = 0, slen = 0;
			const char *parts[2] = { bodies[b], bodies[b] + cut };
			size_t plen[2] = { cut, n - cut };

			for (int k = 0; k < 2; k++) {
				memcpy(carry + clen, parts[k], plen[k]);
				clen += plen[k];
				scrub_buf(&z, carry, clen);
				size_t out = clen - scrub_keep(&z, carry, clen);

				CHECK(clen - out <= hold);

				memcpy(sent + slen, carry, out);
				slen += out;
				memmove(carry, carry + out, clen - out);
				clen -= out;
			}
			memcpy(sent + slen, carry, clen);   /* the end of the body */
			slen += clen;
			sent[slen] = 0;
			CHECK(slen == n);
			CHECK(strstr((char *)sent, "s3cr3t") == NULL && strstr((char *)sent, "dXNl") == NULL);
		}
	}
	scrub_clear(&z);
}

/* What a stream keeps back: only an end that could begin an occurrence,
 * so events and tokens of a streamed answer are not delayed. */
static void test_keep(void)
{
	struct scrub z = { 0 };
	const char *t;

	scrub_add(&z, (const uint8_t *)TOKEN, strlen(TOKEN));
	scrub_add(&z, (const uint8_t *)B64, strlen(B64));
	t = "data: {\"token\": \"hello\"}\n\n";
	CHECK(scrub_keep(&z, (const uint8_t *)t, strlen(t)) == 0);
	t = "{\"echo\": \"Bearer s3cr";
	CHECK(scrub_keep(&z, (const uint8_t *)t, strlen(t)) == 4);
	t = "x=abc%2";
	CHECK(scrub_keep(&z, (const uint8_t *)t, strlen(t)) == 2);   /* "%2" could be any escaped byte */
	t = "x=dXNlcjpwYS%2";
	CHECK(scrub_keep(&z, (const uint8_t *)t, strlen(t)) == 12);
	t = "x=dXNlcjpwYS\\u00";
	CHECK(scrub_keep(&z, (const uint8_t *)t, strlen(t)) == 14);
	t = "x=dXNlcjpwYS\\/zcy+3b3JkPQ=";   /* B64 less its last byte, JSON-escaped */
	CHECK(scrub_keep(&z, (const uint8_t *)t, strlen(t)) == strlen(t) - 2);
	t = "s3cr3t-upstream-tokeX";   /* broken: nothing kept */
	CHECK(scrub_keep(&z, (const uint8_t *)t, strlen(t)) == 0);
	scrub_clear(&z);
}

int main(void)
{
	RUN(test_forms);
	RUN(test_limits);
	RUN(test_no_plain_prefix);
	RUN(test_stream_split);
	RUN(test_keep);
	UNIT_DONE("http_scrub");
}
