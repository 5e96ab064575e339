// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer target for userspace/ident_jwt.c. The first byte picks what the
 * input is (a compact JWS never starts with '{' or '!', which are not
 * base64url, so a token corpus needs no prefix):
 *
 *   '{'   a JWKS: jwks_parse() on the input; when it parses, the fixed
 *         ANCHOR token (signed at start-up by the "ed1" key) is verified
 *         against that set, to exercise key choice over fuzzed keys.
 *   '!'   "!HEADER\nPAYLOAD": both base64url-encoded and signed here with
 *         the fixed Ed25519 key, then verified. A signature cannot be
 *         guessed, so without this mode the claim checks would be out of
 *         the fuzzer's reach.
 *   else  the input is the token, verified as is against JWKS below.
 *
 * Every verdict is checked against the promises of ident_jwt.h: a closed
 * set of errors (-EIO would mean a token broke OpenSSL's use), a reason
 * exactly when refused, and for an accepted token every claim rule of the
 * policy (the jwt.md issuer: RS256/ES256/EdDSA, aud urn:agentgate, at+jwt,
 * 60 s leeway, 1 h max age, clock NOW).
 *
 * Keys are published test vectors, never secrets, so the seeds can be
 * re-made by anyone: "rs1" is RFC 7515 A.2's RSA key, "ec1" RFC 7515 A.3's
 * P-256 key, "ed1" RFC 8037 A.1's Ed25519 key (whose private seed signs
 * the '!' inputs). Seeds come from the unit test:
 *   test_ident_jwt --write-corpus tests/fuzz/corpus/jwt
 * tests/fuzz/replay.c runs this on the corpus without libFuzzer.
 */
#include "ident_jwt.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW      INT64_C(1750000000)   /* same clock as tests/unit/test_ident_jwt.c */
#define ISSUER   "https://idp.example"
#define AUDIENCE "urn:agentgate"

static const char JWKS[] =
	"{\"keys\":["
	"{\"kty\":\"RSA\",\"kid\":\"rs1\",\"alg\":\"RS256\",\"use\":\"sig\",\"e\":\"AQAB\",\"n\":"
	"\"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-"
	"SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-"
	"UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2eth"
	"FkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ\"},"
	"{\"kty\":\"EC\",\"kid\":\"ec1\",\"alg\":\"ES256\",\"use\":\"sig\",\"crv\":\"P-256\","
	"\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\",\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"},"
	"{\"kty\":\"OKP\",\"kid\":\"ed1\",\"alg\":\"EdDSA\",\"use\":\"sig\",\"crv\":\"Ed25519\","
	"\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}"
	"]}";

/* RFC 8037 A.1 (= RFC 8032 §7.1 test 1) private seed of "ed1". Public. */
static const uint8_t ED1_SEED[32] = {
	0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4,
	0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60,
};

static const char *const ALGS[] = { "RS256", "ES256", "EdDSA" };
static const char *const AUDS[] = { AUDIENCE };
static const struct jwt_policy POL = {
	.issuer = ISSUER, .audiences = AUDS, .naud = 1, .algs = ALGS, .nalgs = 3,
	.typ = "at+jwt", .leeway_s = 60, .max_age_s = 3600, .now = NOW,
};

/* Built once: no key generation or parsing of fixed data per input. */
static struct jwks *keys;
static EVP_PKEY *ed1;
static char *anchor;

static void must(int cond)
{
	if (!cond)
		abort();
}

static char *b64url(const uint8_t *p, size_t n)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	char *out = malloc(n / 3 * 4 + 5), *o = out;
	size_t i = 0;

	must(out != NULL);
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];

		*o++ = a[v >> 18];
		*o++ = a[(v >> 12) & 63];
		*o++ = a[(v >> 6) & 63];
		*o++ = a[v & 63];
	}
	if (n - i == 1) {
		*o++ = a[p[i] >> 2];
		*o++ = a[(p[i] & 3) << 4];
	} else if (n - i == 2) {
		*o++ = a[p[i] >> 2];
		*o++ = a[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
		*o++ = a[(p[i + 1] & 15) << 2];
	}
	*o = '\0';
	return out;
}

/* b64url(hdr) "." b64url(pay) "." Ed25519 signature by ed1. */
static char *sign(const uint8_t *hdr, size_t hlen, const uint8_t *pay, size_t plen)
{
	char *h = b64url(hdr, hlen), *p = b64url(pay, plen), *s, *tok;
	size_t hl = strlen(h), pl = strlen(p), siglen = 64;
	uint8_t sig[64];
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	tok = malloc(hl + 1 + pl + 1 + 87);
	must(tok && md);
	memcpy(tok, h, hl);
	tok[hl] = '.';
	memcpy(tok + hl + 1, p, pl);
	must(EVP_DigestSignInit_ex(md, NULL, NULL, NULL, NULL, ed1, NULL) == 1);
	must(EVP_DigestSign(md, sig, &siglen, (const uint8_t *)tok, hl + 1 + pl) == 1 && siglen == 64);
	s = b64url(sig, 64);
	tok[hl + 1 + pl] = '.';
	memcpy(tok + hl + 1 + pl + 1, s, 87);   /* 86 chars and the NUL */
	EVP_MD_CTX_free(md);
	free(h);
	free(p);
	free(s);
	return tok;
}

static void init(void)
{
	static const char hdr[] = "{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\",\"kid\":\"ed1\"}";
	static const char pay[] = "{\"iss\":\"" ISSUER "\",\"sub\":\"agent-a\",\"aud\":\"" AUDIENCE "\","
		"\"client_id\":\"agent-a\",\"jti\":\"id-1\",\"iat\":1749999900,\"exp\":1750000300}";

	must(jwks_parse(JWKS, sizeof(JWKS) - 1, &keys, NULL, 0) == 0 && jwks_usable(keys) == 3);
	ed1 = EVP_PKEY_new_raw_private_key_ex(NULL, "ED25519", NULL, ED1_SEED, sizeof(ED1_SEED));
	must(ed1 != NULL);
	anchor = sign((const uint8_t *)hdr, sizeof(hdr) - 1, (const uint8_t *)pay, sizeof(pay) - 1);
	must(jwt_verify(anchor, strlen(anchor), keys, &POL, NULL, NULL, 0) == 0);
}

static void check_verdict(int err, const char *why, size_t whylen, const struct jwt_claims *c,
			  size_t len)
{
	bool ours = false;

	must(memchr(why, '\0', whylen) != NULL);
	switch (err) {
	case 0:
		break;
	case -EMSGSIZE: case -EINVAL: case -ENOTSUP: case -ENOKEY: case -EKEYREJECTED:
	case -EBADMSG: case -EKEYEXPIRED: case -EACCES:
		must(why[0] != '\0' && c->json == NULL && c->iss == NULL);
		return;
	default:
		abort();   /* -EIO, -ENOMEM or anything else: a finding */
	}
	must(why[0] == '\0' && len <= JWT_MAX_TOKEN && c->json && json_is_object(c->json));
	must(strcmp(c->alg, "RS256") == 0 || strcmp(c->alg, "ES256") == 0 || strcmp(c->alg, "EdDSA") == 0);
	must(c->iss && strcmp(c->iss, ISSUER) == 0);
	must(c->sub && c->sub[0] && c->client_id && c->jti);
	must(c->naud >= 1);
	for (size_t i = 0; i < c->naud; i++)
		ours |= strcmp(c->aud[i], AUDIENCE) == 0;
	must(ours);
	must(NOW < c->exp + POL.leeway_s);
	must(!c->has_nbf || c->nbf <= NOW + POL.leeway_s);
	must(c->has_iat && c->iat <= NOW + POL.leeway_s && NOW - c->iat - POL.leeway_s <= POL.max_age_s);
	must(strlen(c->kid) <= JWT_KID_MAX);
	for (size_t i = 0; i < c->ngroups; i++)
		must(c->groups[i] != NULL);
}

static void verify(const char *tok, size_t len, const struct jwks *set)
{
	struct jwt_claims c;
	char why[160];
	int err = jwt_verify(tok, len, set, &POL, &c, why, sizeof(why));

	check_verdict(err, why, sizeof(why), &c, len);
	jwt_claims_free(&c);
}

static void fuzz_jwks(const uint8_t *data, size_t size)
{
	struct jwks *set = NULL;
	struct jwks_key_info info;
	char why[160];
	int err = jwks_parse((const char *)data, size, &set, why, sizeof(why));
	size_t usable = 0;

	must(memchr(why, '\0', sizeof(why)) != NULL);
	if (err) {
		must(set == NULL && why[0] != '\0');
		must(err == -EMSGSIZE || err == -EINVAL || err == -E2BIG || err == -ENOKEY);
		return;
	}
	must(jwks_size(set) <= JWKS_MAX_KEYS && jwks_usable(set) >= 1);
	for (size_t i = 0; i < jwks_size(set); i++) {
		must(jwks_key(set, i, &info) == 0);
		must((info.refused == NULL) == (info.bits > 0));
		if (info.kid)
			must(strlen(info.kid) >= 1 && strlen(info.kid) <= JWT_KID_MAX);
		usable += info.refused == NULL;
	}
	must(usable == jwks_usable(set));
	must(jwks_key(set, jwks_size(set), &info) == -ERANGE);
	verify(anchor, strlen(anchor), set);
	jwks_free(set);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!keys)
		init();
	if (size > 0 && data[0] == '{') {
		fuzz_jwks(data, size);
	} else if (size > 0 && data[0] == '!') {
		const uint8_t *nl = memchr(data + 1, '\n', size - 1);
		size_t hlen = nl ? (size_t)(nl - data - 1) : size - 1;
		const uint8_t *pay = nl ? nl + 1 : data + size;
		char *tok = sign(data + 1, hlen, pay, (size_t)(data + size - pay));

		verify(tok, strlen(tok), keys);
		free(tok);
	} else {
		verify((const char *)data, size, keys);
	}
	return 0;
}
