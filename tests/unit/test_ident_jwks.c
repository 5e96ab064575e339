/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ident_jwks without a network: URL rules, the cache TTL from Cache-Control,
 * one refetch per 30 s for an unknown kid, the last known good key set while
 * the issuer is down (24 h bound), and discovery refusals, through an
 * injected clock and fetcher. The key set is one the test OpenID provider
 * (tests/oidc) published: public keys only.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "ident_jwks.h"
#include "unit.h"

static const char JWKS[] =
	"{\"keys\":[{\"kty\":\"RSA\",\"use\":\"sig\",\"kid\":\"rs1\",\"alg\":\"RS256\",\"e\":\"AQAB"
	"\",\"n\":\"21f71cxNPccnbScjYZ9F_VtiDt7gjyLPjsf0Xm0bv7HCcLWT_aKE4h2dCgAG-ZyZQN0weqbqSyeBG4d"
	"nXaoW4gNxnZurpaUdqsw1U3pkIIpT4VUT1u0x1euzmcxnWkqfOIrv4vczidGqm2JuBdDflF_dFlRVqzVRbmqUqDv0N"
	"DOQ-tCm2fE6bstb0lHtSBWpK9SBEyRBgaY2YRwu7ThsgTzHYRCzEsvzXoMnqHMY3Xdk8pdwVCc2Mk_q8pRRU7qwikF"
	"cfJiNjc71TyBRk2sfXWAbUrVIQfU5_gphWUDYBKxx0gnmsjyfHZM7cYrOSeSJPjv1AC7Uoe0lWzkP0EOZhQ\"},{\""
	"kty\":\"EC\",\"use\":\"sig\",\"kid\":\"ec1\",\"alg\":\"ES256\",\"crv\":\"P-256\",\"x\":\"m"
	"COmetmsehNaor0mTCB1mhVhk3Pgw30K-3iLnNwaQ2E\",\"y\":\"5__mQV1ZY_v6Oy4UU48xAXbO4wbCmdw-8MAud"
	"Pugwyk\"},{\"kty\":\"OKP\",\"use\":\"sig\",\"kid\":\"ed1\",\"alg\":\"EdDSA\",\"crv\":\"Ed2"
	"5519\",\"x\":\"7U7xtzeAdmPRdVG03i2kB8h22IcmSPz1f0UCbuhRNTM\"}]}";

static int64_t T = 1000;
static int64_t mono(void *c) { return T; }
static int64_t real(void *c) { return 1700000000 + T; }
static int fetches, fail;
static const char *cc = "", *disc_iss = "http://127.0.0.1:9", *juri = "http://127.0.0.1:9/jwks";
static const char *jwks_text = JWKS;

static int fake(void *ctx, const char *url, const char *ca, struct ident_http_resp *r, char *why, size_t wl)
{
	fetches++;
	if (fail) { snprintf(why, wl, "Failed to connect"); return -EHOSTUNREACH; }
	r->status = 200;
	if (strstr(url, "/.well-known/openid-configuration")) {
		char b[512];
		snprintf(b, sizeof(b), "{\"issuer\":\"%s\",\"jwks_uri\":\"%s\"}", disc_iss, juri);
		r->body = strdup(b);
		snprintf(r->content_type, sizeof(r->content_type), "application/json; charset=utf-8");
	} else {
		r->body = strdup(jwks_text);
		snprintf(r->content_type, sizeof(r->content_type), "application/jwk-set+json");
		snprintf(r->cache_control, sizeof(r->cache_control), "%s", cc);
	}
	r->len = strlen(r->body);
	return 0;
}

/* header {"alg":"RS256","typ":"at+jwt","kid":"zzz"} . {} . junk */
static const char *UNK = "eyJhbGciOiJSUzI1NiIsInR5cCI6ImF0K2p3dCIsImtpZCI6Inp6eiJ9.e30.AAAA";

static struct ident_issuer *mk(void)
{
	struct issuer_opts o = { .now_mono = mono, .now_real = real, .fetch = fake };
	char why[256];
	struct ident_issuer *i = issuer_new("http://127.0.0.1:9", &o, why, sizeof(why));
	CHECK(i != NULL);
	return i;
}

static int ver(struct ident_issuer *i, char *why, size_t wl)
{
	const char *aud[] = { "urn:agentgate" };
	struct jwt_policy p = { .issuer = "http://127.0.0.1:9", .audiences = aud, .naud = 1, .now = real(NULL) };
	struct jwt_claims c;
	int r = issuer_verify(i, UNK, strlen(UNK), &p, &c, why, wl);
	jwt_claims_free(&c);
	return r;
}

/* Worker-side verification never fetches: it says when a fetch is due. */
static void test_verify_cached(void)
{
	const char *aud[] = { "urn:agentgate" };
	struct jwt_policy p = { .issuer = "http://127.0.0.1:9", .audiences = aud, .naud = 1, .now = real(NULL) };
	struct ident_issuer *i = mk();
	struct jwt_claims c;
	bool want = false;
	char why[512];

	fetches = 0;
	CHECK(issuer_verify_cached(i, UNK, strlen(UNK), &p, &c, &want, why, sizeof(why)) == -EHOSTUNREACH);
	CHECK(want && fetches == 0);
	CHECK(issuer_refresh(i, true, why, sizeof(why)) == 0 && fetches == 2);
	T += 1;
	CHECK(issuer_verify_cached(i, UNK, strlen(UNK), &p, &c, &want, why, sizeof(why)) == -ENOKEY);
	CHECK(!want && fetches == 2 && strstr(why, "rate limited"));   /* within the refetch window */
	/* forced, with keys: the limit holds too (a rewritten token file with
	 * an unknown kid forced one fetch per rewrite; found by review) */
	CHECK(issuer_refresh(i, true, why, sizeof(why)) == -EAGAIN && fetches == 2);
	T += 31;
	CHECK(issuer_verify_cached(i, UNK, strlen(UNK), &p, &c, &want, why, sizeof(why)) == -ENOKEY);
	CHECK(want && fetches == 2);                                   /* asked, not fetched */
	T += 600;
	CHECK(issuer_verify_cached(i, UNK, strlen(UNK), &p, &c, &want, why, sizeof(why)) == -ENOKEY && want);
	issuer_free(i);
}

static void test_url_rules(void)
{
	char why[512];

	/* URL rules */
	CHECK(ident_url_check("https://idp.example.com", NULL, why, sizeof(why)) == 0);
	CHECK(ident_url_check("http://127.0.0.1:8080/x", NULL, why, sizeof(why)) == 0);
	CHECK(ident_url_check("http://127.255.1.2", NULL, why, sizeof(why)) == 0);
	CHECK(ident_url_check("http://[::1]:80", NULL, why, sizeof(why)) == 0);
	CHECK(ident_url_check("http://localhost", NULL, why, sizeof(why)) == -EPROTO);
	CHECK(ident_url_check("http://127.1", NULL, why, sizeof(why)) == -EPROTO);
	CHECK(ident_url_check("http://[::ffff:127.0.0.1]", NULL, why, sizeof(why)) == -EPROTO);
	CHECK(ident_url_check("http://128.0.0.1", NULL, why, sizeof(why)) == -EPROTO);
	CHECK(ident_url_check("ftp://127.0.0.1", NULL, why, sizeof(why)) == -EPROTO);
	CHECK(ident_url_check("http://127.0.0.1@evil.com", NULL, why, sizeof(why)) == -EINVAL);
	CHECK(ident_url_check("https://idp/?q", NULL, why, sizeof(why)) == -EINVAL);
	CHECK(ident_url_check("http://127.0.0.1:99999", NULL, why, sizeof(why)) == -EINVAL);
	CHECK(ident_url_check("http://127.0.0.1/jwks", "https://idp", why, sizeof(why)) == -EPROTO);
	CHECK(ident_url_check("https://idp/jwks", "http://127.0.0.1", why, sizeof(why)) == -EPROTO);
	CHECK(ident_url_check("https://other/jwks", "https://idp", why, sizeof(why)) == 0);
	CHECK(!issuer_new("http://192.0.2.1", NULL, why, sizeof(why)) && errno == EPROTO);

}

static void test_ttl(void)
{
	struct issuer_status st;
	char why[512];

	/* TTL clamp */
	const char *ccs[] = { "", "max-age=5", "public, max-age=99999", "no-store", "max-age=900" };
	int64_t want[] = { 600, 60, 3600, 60, 900 };
	for (int k = 0; k < 5; k++) {
		struct ident_issuer *i = mk();
		cc = ccs[k];
		CHECK(ver(i, why, sizeof(why)) == -ENOKEY);
		issuer_status(i, &st);
		CHECK(st.ttl_s == want[k] && st.nkeys == 3);
		issuer_free(i);
	}
	cc = "";

}

/* The cache state runs through the next two tests in order. */
static struct ident_issuer *shared;

static void test_unknown_kid_refetch(void)
{
	char why[512];
	struct ident_issuer *i = mk();

	/* unknown kid: one refetch per 30 s, no storm */
	fetches = 0;
	CHECK(ver(i, why, sizeof(why)) == -ENOKEY && fetches == 2);       /* first fetch */
	T += 1;
	CHECK(ver(i, why, sizeof(why)) == -ENOKEY && fetches == 2 && strstr(why, "rate limited"));
	T += 30;
	CHECK(ver(i, why, sizeof(why)) == -ENOKEY && fetches == 4);       /* one refetch */
	for (int k = 0; k < 1000; k++)
		CHECK(ver(i, why, sizeof(why)) == -ENOKEY);
	CHECK(fetches == 4);

	shared = i;
}

static void test_issuer_down(void)
{
	struct issuer_status st;
	char why[512];
	struct ident_issuer *i = shared;

	/* issuer down: last known good until 24 h, then -ESTALE */
	fail = 1;
	T += 700;                               /* past the TTL */
	CHECK(ver(i, why, sizeof(why)) == -ENOKEY && fetches == 5);
	issuer_status(i, &st);
	CHECK(st.have_keys && st.stale && strstr(st.last_error, "Failed to connect"));
	T += 10;                                /* failed refresh retried at most every 30 s */
	CHECK(ver(i, why, sizeof(why)) == -ENOKEY && fetches == 5);
	T += 86400;
	CHECK(ver(i, why, sizeof(why)) == -ESTALE && strstr(why, "over the 86400 s bound"));
	fail = 0;
	T += 30;
	CHECK(ver(i, why, sizeof(why)) == -ENOKEY);                     /* back */
	issuer_status(i, &st);
	CHECK(st.age_s == 0 && st.last_error[0] == 0);
	issuer_free(i);

}

/* A well-formed key set with no usable key is the issuer withdrawing the
 * keys we hold: they go at once (with the copy on disk), not after a day as
 * the last known good. An unreadable answer is an outage: the keys stay. */
static void test_keys_withdrawn(void)
{
	char dir[] = "/tmp/ag-jwks-XXXXXX", path[64], why[512];
	struct issuer_opts o = { .now_mono = mono, .now_real = real, .fetch = fake, .cache_file = path };
	struct issuer_status st;
	struct ident_issuer *i;
	const char *bad[] = { "not json", "{\"keys\":7}", "{\"keys\":[]}",
			      "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AAAA\"}]}" };

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/jwks.json", dir);
	for (int k = 0; k < 4; k++) {
		bool statement = k >= 2;

		jwks_text = JWKS;
		i = issuer_new("http://127.0.0.1:9", &o, why, sizeof(why));
		CHECK(i != NULL);
		CHECK(ver(i, why, sizeof(why)) == -ENOKEY);          /* keys held, kid unknown */
		CHECK(access(path, F_OK) == 0);
		jwks_text = bad[k];
		T += 700;                                            /* past the TTL */
		if (statement) {
			CHECK(ver(i, why, sizeof(why)) == -EHOSTUNREACH && strstr(why, "withdrew its keys"));
			issuer_status(i, &st);
			CHECK(!st.have_keys && st.nkeys == 0);
			CHECK(access(path, F_OK) < 0 && errno == ENOENT);
		} else {
			CHECK(ver(i, why, sizeof(why)) == -ENOKEY);   /* still the old keys */
			issuer_status(i, &st);
			CHECK(st.have_keys && st.nkeys == 3 && !strstr(st.last_error, "withdrew"));
			CHECK(access(path, F_OK) == 0);
		}
		issuer_free(i);
		/* a restart finds no withdrawn keys on disk to trust */
		jwks_text = bad[2];
		fail = 1;
		i = issuer_new("http://127.0.0.1:9", &o, why, sizeof(why));
		CHECK(i != NULL);
		issuer_status(i, &st);
		CHECK(st.have_keys == !statement);
		issuer_free(i);
		fail = 0;
		unlink(path);
	}
	jwks_text = JWKS;
	rmdir(dir);
}

/* ---- a held token checked again when the keys change (issuer_recheck) ---- */

static void must(int ok)
{
	if (!ok) {
		fprintf(stderr, "test setup failed (OpenSSL or memory)\n");
		abort();
	}
}

static char *b64u(const unsigned char *p, size_t n)
{
	char *out = malloc(4 * ((n + 2) / 3) + 1);
	int len;

	must(out != NULL);
	len = EVP_EncodeBlock((unsigned char *)out, p, (int)n);
	while (len > 0 && out[len - 1] == '=')
		len--;
	out[len] = 0;
	for (char *c = out; *c; c++)
		*c = *c == '+' ? '-' : *c == '/' ? '_' : *c;
	return out;
}

/* A JWKS text of one Ed25519 key under kid (the caller frees it). */
static char *jwk_ed(EVP_PKEY *k, const char *kid)
{
	unsigned char pub[32];
	size_t pl = sizeof(pub);
	char *x, *j = malloc(256);

	must(j && EVP_PKEY_get_raw_public_key(k, pub, &pl) == 1 && pl == 32);
	x = b64u(pub, pl);
	snprintf(j, 256, "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"%s\",\"x\":\"%s\"}", kid, x);
	free(x);
	return j;
}

static char *signed_token(EVP_PKEY *k, const char *kid)
{
	char hdr[64], pay[256], *h, *p, *s, *msg, *tok;
	unsigned char sig[64];
	size_t sl = sizeof(sig);
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	if (kid)
		snprintf(hdr, sizeof(hdr), "{\"alg\":\"EdDSA\",\"kid\":\"%s\"}", kid);
	else
		snprintf(hdr, sizeof(hdr), "{\"alg\":\"EdDSA\"}");
	snprintf(pay, sizeof(pay), "{\"iss\":\"http://127.0.0.1:9\",\"aud\":\"urn:agentgate\",\"sub\":\"a\","
		 "\"iat\":%lld,\"exp\":%lld}", (long long)real(NULL), (long long)real(NULL) + 86400);
	h = b64u((const unsigned char *)hdr, strlen(hdr));
	p = b64u((const unsigned char *)pay, strlen(pay));
	msg = malloc(strlen(h) + strlen(p) + 2);
	must(md && msg);
	sprintf(msg, "%s.%s", h, p);
	must(EVP_DigestSignInit(md, NULL, NULL, NULL, k) == 1 &&
	     EVP_DigestSign(md, sig, &sl, (const unsigned char *)msg, strlen(msg)) == 1);
	s = b64u(sig, sl);
	tok = malloc(strlen(msg) + strlen(s) + 2);
	must(tok != NULL);
	sprintf(tok, "%s.%s", msg, s);
	EVP_MD_CTX_free(md);
	free(h);
	free(p);
	free(s);
	free(msg);
	return tok;
}

/* Two Ed25519 keys and the key sets the recheck tests rotate through:
 * set1 (k1 as "k1"), set12 (k2 rotated in), set2 (k1 rotated away) and
 * swapped (k2 under k1's kid). */
struct rot {
	EVP_PKEY *k1, *k2;
	char *j1, *j2, *j2as1;
	char set1[400], set12[800], set2[400], swapped[400];
};

static void rot_init(struct rot *r)
{
	r->k1 = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	r->k2 = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	must(r->k1 && r->k2);
	r->j1 = jwk_ed(r->k1, "k1");
	r->j2 = jwk_ed(r->k2, "k2");
	r->j2as1 = jwk_ed(r->k2, "k1");   /* another key under the token's kid */
	snprintf(r->set1, sizeof(r->set1), "{\"keys\":[%s]}", r->j1);
	snprintf(r->set12, sizeof(r->set12), "{\"keys\":[%s,%s]}", r->j1, r->j2);
	snprintf(r->set2, sizeof(r->set2), "{\"keys\":[%s]}", r->j2);
	snprintf(r->swapped, sizeof(r->swapped), "{\"keys\":[%s]}", r->j2as1);
}

static void rot_free(struct rot *r)
{
	jwks_text = JWKS;
	free(r->j1);
	free(r->j2);
	free(r->j2as1);
	EVP_PKEY_free(r->k1);
	EVP_PKEY_free(r->k2);
}

/* Review (stop 48): a token the agent held stayed good until its exp when
 * the issuer withdrew its key; now the keys are refreshed at their TTL and
 * the token checked again whenever they change. */
static void test_recheck(void)
{
	const char *aud[] = { "urn:agentgate" };
	struct jwt_policy p = { .issuer = "http://127.0.0.1:9", .audiences = aud, .naud = 1, .leeway_s = 60 };
	struct rot r;
	char *set1 = r.set1, *set12 = r.set12, *set2 = r.set2, *swapped = r.swapped, why[512];
	struct jwt_claims c;
	struct ident_issuer *i;
	uint64_t gen = 0;
	char *tok;
	int f;

	rot_init(&r);
	tok = signed_token(r.k1, "k1");
	p.now = real(NULL);

	jwks_text = set1;
	i = mk();
	CHECK(issuer_verify(i, tok, strlen(tok), &p, &c, why, sizeof(why)) == 0);
	jwt_claims_free(&c);
	CHECK(issuer_recheck(i, &gen, tok, strlen(tok), &p, why, sizeof(why)) == 0 && gen != 0);
	f = fetches;
	T += 10;   /* within the TTL, the keys unchanged: nothing fetched, nothing to say */
	CHECK(issuer_recheck(i, &gen, tok, strlen(tok), &p, why, sizeof(why)) == 0 && fetches == f);
	jwks_text = set12;   /* a key rotated in: the token's key is still published */
	T += 700;
	CHECK(issuer_recheck(i, &gen, tok, strlen(tok), &p, why, sizeof(why)) == 0 && fetches > f);
	fail = 1;            /* an outage keeps the keys and the token */
	T += 700;
	f = fetches;
	CHECK(issuer_recheck(i, &gen, tok, strlen(tok), &p, why, sizeof(why)) == 0 && fetches > f);
	f = fetches;         /* and is not tried again before another TTL (the main loop waits) */
	T += 31;
	CHECK(issuer_recheck(i, &gen, tok, strlen(tok), &p, why, sizeof(why)) == 0 && fetches == f);
	fail = 0;
	jwks_text = set2;    /* the token's key rotated away */
	T += 700;
	CHECK(issuer_recheck(i, &gen, tok, strlen(tok), &p, why, sizeof(why)) == -EKEYREVOKED);
	issuer_free(i);

	/* every key withdrawn (a well-formed set with none usable) */
	jwks_text = set1;
	gen = 0;
	i = mk();
	CHECK(issuer_recheck(i, &gen, tok, strlen(tok), &p, why, sizeof(why)) == 0);   /* no keys yet: no fetch here */
	CHECK(issuer_verify(i, tok, strlen(tok), &p, &c, why, sizeof(why)) == 0);
	jwt_claims_free(&c);
	CHECK(issuer_recheck(i, &gen, tok, strlen(tok), &p, why, sizeof(why)) == 0);
	jwks_text = "{\"keys\":[]}";
	T += 700;
	CHECK(issuer_recheck(i, &gen, tok, strlen(tok), &p, why, sizeof(why)) == -EKEYREVOKED &&
	      strstr(why, "withdrew") != NULL);
	issuer_free(i);

	/* another key under the same kid: the signature fails */
	jwks_text = set1;
	gen = 0;
	i = mk();
	CHECK(issuer_verify(i, tok, strlen(tok), &p, &c, why, sizeof(why)) == 0);
	jwt_claims_free(&c);
	CHECK(issuer_recheck(i, &gen, tok, strlen(tok), &p, why, sizeof(why)) == 0);
	jwks_text = swapped;
	T += 700;
	CHECK(issuer_recheck(i, &gen, tok, strlen(tok), &p, why, sizeof(why)) < 0);
	issuer_free(i);

	free(tok);
	rot_free(&r);
}

/* A fresh issuer on set1 that verified tok: the ref of the key that did,
 * and the key generation reset for issuer_key_check(). */
static struct ident_issuer *verified_on_set1(const char *set1, const char *tok, const struct jwt_policy *p,
					     struct jwt_keyref *ref, uint64_t *gen)
{
	struct ident_issuer *i;
	struct jwt_claims c;
	char why[512];

	jwks_text = set1;
	*gen = 0;
	i = mk();
	CHECK(issuer_verify(i, tok, strlen(tok), p, &c, why, sizeof(why)) == 0);
	*ref = c.key;
	jwt_claims_free(&c);
	return i;
}

/* The same for a user token a postgres session holds without keeping it
 * (issuer_key_check, by the key that verified it): it never fetches (a
 * worker calls it), asks for a fetch once the TTL has passed, and says
 * -EKEYREVOKED once the key is gone, withdrawn, or replaced under its kid. */
static void test_key_check(void)
{
	const char *aud[] = { "urn:agentgate" };
	struct jwt_policy p = { .issuer = "http://127.0.0.1:9", .audiences = aud, .naud = 1, .leeway_s = 60 };
	struct rot r;
	char *set1 = r.set1, *set12 = r.set12, why[512];
	const char *sets[] = { r.set2, "{\"keys\":[]}", r.swapped };
	struct jwt_keyref ref;
	struct ident_issuer *i;
	uint64_t gen;
	bool want;
	char *tok;
	int f;

	rot_init(&r);
	tok = signed_token(r.k1, "k1");
	p.now = real(NULL);
	for (size_t n = 0; n < sizeof(sets) / sizeof(sets[0]); n++) {
		i = verified_on_set1(set1, tok, &p, &ref, &gen);
		CHECK(ref.set);
		CHECK(issuer_key_check(i, &gen, &ref, &want, why, sizeof(why)) == 0 && gen != 0 && !want);
		f = fetches;
		T += 700;   /* past the TTL: a fetch is asked for, not made */
		CHECK(issuer_key_check(i, &gen, &ref, &want, why, sizeof(why)) == 0 && want && fetches == f);
		jwks_text = set12;   /* a key rotated in: the token's key is still there */
		CHECK(issuer_refresh(i, false, why, sizeof(why)) == 0);
		CHECK(issuer_key_check(i, &gen, &ref, &want, why, sizeof(why)) == 0 && !want);
		fail = 1;            /* an outage keeps the keys */
		T += 700;
		issuer_refresh(i, false, why, sizeof(why));
		CHECK(issuer_key_check(i, &gen, &ref, &want, why, sizeof(why)) == 0);
		fail = 0;
		jwks_text = sets[n];  /* rotated away; withdrawn; another key under its kid */
		T += 700;
		issuer_refresh(i, false, why, sizeof(why));
		CHECK(issuer_key_check(i, &gen, &ref, &want, why, sizeof(why)) == -EKEYREVOKED);
		CHECK(strstr(why, n == 1 ? "withdrew" : "no longer publishes the token's key") != NULL);
		issuer_free(i);
	}
	memset(&ref, 0, sizeof(ref));
	jwks_text = set1;
	i = mk();
	gen = 0;
	CHECK(issuer_key_check(i, &gen, &ref, &want, why, sizeof(why)) == -EINVAL);   /* no ref: refused */
	issuer_free(i);

	/* a token without a kid, verified by the set's only key: a second key
	 * rotated in makes jwt_verify refuse it (which key?), and so here */
	free(tok);
	tok = signed_token(r.k1, NULL);
	p.now = real(NULL);
	i = verified_on_set1(set1, tok, &p, &ref, &gen);
	CHECK(ref.set && !ref.has_kid);
	CHECK(issuer_key_check(i, &gen, &ref, &want, why, sizeof(why)) == 0);
	jwks_text = set12;
	T += 700;
	issuer_refresh(i, false, why, sizeof(why));
	CHECK(issuer_key_check(i, &gen, &ref, &want, why, sizeof(why)) == -EKEYREVOKED &&
	      strstr(why, "no longer verify") != NULL);
	issuer_free(i);

	free(tok);
	rot_free(&r);
}

/* ---- the owner of a plain-http issuer's port (real sockets) ---- */

static int listen_on(int family, int port)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t sl;
	int one = 1, fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sl = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		a->sin6_addr = in6addr_loopback;
		sl = sizeof(*a);
	}
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 4) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int port_of(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	getsockname(fd, (struct sockaddr *)&ss, &sl);
	return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port :
		     ((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* Accepts one connection, answers {} if a request came; returns the
 * number of request bytes read (0: the client sent nothing). */
static ssize_t serve_one(int lfd)
{
	static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
				 "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
	struct pollfd p;
	char buf[2048];
	ssize_t n, got = 0;
	int c = accept(lfd, NULL, NULL);

	if (c < 0)
		return -1;
	p = (struct pollfd){ .fd = c, .events = POLLIN };
	while (poll(&p, 1, 3000) == 1 && (n = read(c, buf, sizeof(buf))) > 0) {
		got += n;
		if (memmem(buf, (size_t)n, "\r\n\r\n", 4)) {
			if (write(c, ok, sizeof(ok) - 1) < 0)
				got = -1;
			break;
		}
	}
	close(c);
	return got;
}

static void *serve_thread(void *arg)
{
	return (void *)(intptr_t)serve_one(*(int *)arg);
}

static int fetch_once(int port, char *why, size_t wl)
{
	struct ident_http_resp r;
	char url[64];
	int ret;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/jwks", port);
	ret = ident_http(url, NULL, NULL, NULL, &r, why, wl);
	if (ret == 0 && (r.status != 200 || !r.body || strcmp(r.body, "{}") != 0))
		ret = -EBADMSG;
	ident_http_resp_clear(&r);
	return ret;
}

/* The first owner of 127.0.0.1:port (root here) is pinned: the same port
 * answered by a socket of uid 65534 (a local process that bound it while
 * the issuer was down) is refused before the request is sent, and the
 * issuer back under its own uid is fetched from again. */
static void test_loopback_owner_pinned(void)
{
	char why[256];
	int lfd = listen_on(AF_INET, 0), port, sync[2];
	pthread_t t;
	void *got;
	pid_t pid;

	CHECK(lfd >= 0);
	port = port_of(lfd);
	CHECK(pthread_create(&t, NULL, serve_thread, &lfd) == 0);
	CHECK(fetch_once(port, why, sizeof(why)) == 0);
	pthread_join(t, &got);
	CHECK((intptr_t)got > 0);
	close(lfd);

	CHECK(pipe(sync) == 0);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		ssize_t n;
		int fd;

		if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534))
			_exit(2);
		fd = listen_on(AF_INET, port);
		if (write(sync[1], fd >= 0 ? "1" : "0", 1) != 1 || fd < 0)
			_exit(3);
		n = serve_one(fd);
		_exit(n == 0 ? 0 : 4);            /* 0: not a byte of the request came */
	}
	{
		char c = 0;
		int st = -1;

		CHECK(read(sync[0], &c, 1) == 1 && c == '1');
		CHECK(fetch_once(port, why, sizeof(why)) == -EPERM);
		CHECK(strstr(why, "uid 65534, not uid 0") != NULL);
		CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	close(sync[0]);
	close(sync[1]);

	lfd = listen_on(AF_INET, port);
	CHECK(lfd >= 0);
	CHECK(pthread_create(&t, NULL, serve_thread, &lfd) == 0);
	CHECK(fetch_once(port, why, sizeof(why)) == 0);
	pthread_join(t, &got);
	close(lfd);
}

/* The lookup itself, over IPv6 too: the server's end of a connection made
 * here is root's. */
static void test_loopback_owner_lookup(void)
{
	int fams[] = { AF_INET, AF_INET6 };

	for (int k = 0; k < 2; k++) {
		int lfd = listen_on(fams[k], 0), c, s;
		struct sockaddr_storage ss = { 0 };
		socklen_t sl;
		char sip[64], cip[64];
		uid_t uid = 12345;

		CHECK(lfd >= 0);
		if (lfd < 0)
			continue;
		c = socket(fams[k], SOCK_STREAM | SOCK_CLOEXEC, 0);
		sl = sizeof(ss);
		getsockname(lfd, (struct sockaddr *)&ss, &sl);
		CHECK(connect(c, (struct sockaddr *)&ss, sl) == 0);
		s = accept(lfd, NULL, NULL);
		inet_ntop(fams[k], fams[k] == AF_INET ? (void *)&((struct sockaddr_in *)&ss)->sin_addr :
			  (void *)&((struct sockaddr_in6 *)&ss)->sin6_addr, sip, sizeof(sip));
		sl = sizeof(ss);
		getsockname(c, (struct sockaddr *)&ss, &sl);
		inet_ntop(fams[k], fams[k] == AF_INET ? (void *)&((struct sockaddr_in *)&ss)->sin_addr :
			  (void *)&((struct sockaddr_in6 *)&ss)->sin6_addr, cip, sizeof(cip));
		CHECK(ident_loopback_owner(sip, port_of(lfd), cip, port_of(c), &uid) == 0 && uid == 0);
		/* no such connection */
		CHECK(ident_loopback_owner(sip, port_of(lfd), cip, port_of(c) ^ 1, &uid) == -ENOENT);
		CHECK(ident_loopback_owner("not an ip", 1, cip, 1, &uid) == -EINVAL);
		close(s);
		close(c);
		close(lfd);
	}
}

/* A dual-stack listener (an IPv6 socket taking IPv4, as Node's default
 * listen() makes) answers 127.0.0.1 from /proc/net/tcp6, as ::ffff:
 * 127.0.0.1: its owner was not found and every fetch failed (review,
 * stop 34). */
static void test_loopback_owner_dual_stack(void)
{
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6 };
	struct sockaddr_in a4 = { .sin_family = AF_INET };
	socklen_t sl = sizeof(a6);
	int off = 0, lfd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0), c, s;
	uid_t uid = 12345;
	char cip[64];

	CHECK(lfd >= 0);
	setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
	CHECK(inet_pton(AF_INET6, "::ffff:127.0.0.1", &a6.sin6_addr) == 1);
	CHECK(bind(lfd, (struct sockaddr *)&a6, sizeof(a6)) == 0 && listen(lfd, 4) == 0);
	CHECK(getsockname(lfd, (struct sockaddr *)&a6, &sl) == 0);
	a4.sin_port = a6.sin6_port;
	a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(connect(c, (struct sockaddr *)&a4, sizeof(a4)) == 0);
	s = accept(lfd, NULL, NULL);
	sl = sizeof(a4);
	getsockname(c, (struct sockaddr *)&a4, &sl);
	inet_ntop(AF_INET, &a4.sin_addr, cip, sizeof(cip));
	CHECK(ident_loopback_owner("127.0.0.1", ntohs(a6.sin6_port), cip, ntohs(a4.sin_port), &uid) == 0 &&
	      uid == 0);
	close(s);
	close(c);
	close(lfd);
}

static void test_discovery_refusals(void)
{
	char why[512];
	struct ident_issuer *i;

	/* discovery: other issuer, refused jwks_uri */
	disc_iss = "http://127.0.0.1:10";
	i = mk();
	CHECK(ver(i, why, sizeof(why)) == -EPROTO && strstr(why, "issuer differs"));
	issuer_free(i);
	disc_iss = "http://127.0.0.1:9";
	juri = "http://10.0.0.1/jwks";
	i = mk();
	fetches = 0;
	CHECK(ver(i, why, sizeof(why)) == -EPROTO && strstr(why, "jwks_uri refused") && fetches == 1);
	issuer_free(i);
}

int main(void)
{
	RUN(test_url_rules);
	RUN(test_verify_cached);
	RUN(test_ttl);
	RUN(test_unknown_kid_refetch);
	RUN(test_issuer_down);
	RUN(test_keys_withdrawn);
	RUN(test_recheck);
	RUN(test_key_check);
	RUN(test_loopback_owner_lookup);
	RUN(test_loopback_owner_dual_stack);
	RUN(test_loopback_owner_pinned);
	RUN(test_discovery_refusals);
	UNIT_DONE("ident_jwks");
}
