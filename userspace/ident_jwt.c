// SPDX-License-Identifier: Apache-2.0
/*
 * ident_jwt: JWS/JWT verification on OpenSSL 3 EVP and jansson. See
 * ident_jwt.h for what is accepted and why.
 *
 * Shape: jwt_verify() walks the token once, cheapest and most structural
 * checks first (length, segments, base64url, header JSON, header rules, key
 * choice), then the signature, and only then reads the claims, so nothing
 * an attacker wrote in the payload is interpreted before it is authentic.
 *
 * The bytes we decode are, together, the bearer token itself (header,
 * payload and signature reassemble it), so they are wiped before they are
 * freed. Reasons never quote the token: kid, iss, aud and friends are
 * attacker-chosen text that would otherwise land in logs and audit events.
 *
 * OpenSSL errors raised while we work are ours to discard: every entry
 * point brackets its work with ERR_set_mark()/ERR_pop_to_mark(), so a
 * refused token leaves nothing in the caller's thread error queue.
 */
#include "ident_jwt.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

/* ======================================================================
 * Algorithms and keys
 * ====================================================================== */

enum kty { KTY_OTHER, KTY_RSA, KTY_EC, KTY_OKP };

enum alg_id { ALG_RS256, ALG_PS256, ALG_ES256, ALG_EDDSA, ALG_ED25519, ALG_COUNT };

/* Everything this file can verify. A name not here (none, HS256, RS512,
 * "rs256") is refused before the policy or the JWKS are even consulted. */
static const struct alg_info {
	const char *name;
	enum kty kty;
} alg_table[ALG_COUNT] = {
	[ALG_RS256]   = { "RS256",   KTY_RSA },
	[ALG_PS256]   = { "PS256",   KTY_RSA },
	[ALG_ES256]   = { "ES256",   KTY_EC },
	[ALG_EDDSA]   = { "EdDSA",   KTY_OKP },
	[ALG_ED25519] = { "Ed25519", KTY_OKP },   /* RFC 9864's name for EdDSA over Ed25519 */
};

static const char *const kty_names[] = {
	[KTY_OTHER] = "other", [KTY_RSA] = "RSA", [KTY_EC] = "EC", [KTY_OKP] = "OKP",
};

#define JWK_REASON_MAX 96
#define JWK_ALG_MAX    16

struct jwk {
	char kid[JWT_KID_MAX + 1];
	bool has_kid;
	enum kty kty;
	bool kty_known;             /* kty was RSA, EC or OKP */
	int alg;                    /* enum alg_id, or -1 when the JWK has no alg */
	char alg_name[JWK_ALG_MAX]; /* the JWK's alg as written (truncated), for jwks_key() */
	bool has_alg;
	EVP_PKEY *pkey;             /* NULL when refused */
	unsigned char fp[32];       /* SHA-256 of pkey's SubjectPublicKeyInfo (jwt_keyref) */
	int bits;
	char reason[JWK_REASON_MAX];/* "" when usable */
};

struct jwks {
	size_t n, usable;
	struct jwk keys[];
};

/* ======================================================================
 * Small helpers
 * ====================================================================== */

__attribute__((format(printf, 4, 5)))
static int fail(char *why, size_t whylen, int err, const char *fmt, ...)
{
	va_list ap;

	if (why && whylen) {
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return err;
}

static int alg_find(const char *name)
{
	for (int i = 0; i < ALG_COUNT; i++)
		if (strcmp(alg_table[i].name, name) == 0)
			return i;
	return -1;
}

/* EdDSA and Ed25519 name the same algorithm once the key is Ed25519. */
static bool alg_same(int a, int b)
{
	if (a == ALG_ED25519)
		a = ALG_EDDSA;
	if (b == ALG_ED25519)
		b = ALG_EDDSA;
	return a == b;
}

static int b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* Bytes that n base64url characters decode to; n % 4 == 1 never happens in
 * a valid encoding, and the callers refuse it before trusting this. */
static size_t b64url_decoded_len(size_t n)
{
	return n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
}

/*
 * Strict base64url (RFC 4648 §5, RFC 7515 §2): the URL-safe alphabet only,
 * no padding, no whitespace, and the unused low bits of the last character
 * zero (RFC 4648 §3.5), so every byte string has exactly one encoding and a
 * token cannot be re-encoded into a "different" token with the same bytes.
 * Returns 0, -EINVAL, or -E2BIG when the result would exceed cap.
 */
static int b64url_decode(const char *in, size_t n, unsigned char *out, size_t cap, size_t *outlen)
{
	uint32_t acc = 0;
	unsigned bits = 0;
	size_t o = 0;

	if (n % 4 == 1)
		return -EINVAL;
	if (b64url_decoded_len(n) > cap)
		return -E2BIG;
	for (size_t i = 0; i < n; i++) {
		int v = b64url_value((unsigned char)in[i]);

		if (v < 0)
			return -EINVAL;
		acc = (acc << 6) | (uint32_t)v;   /* only the low `bits` bits matter */
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	if (acc & ((1u << bits) - 1))
		return -EINVAL;
	*outlen = o;
	return 0;
}

/* Wipe and free; see the file comment for why decoded parts are wiped. */
static void free_wiped(unsigned char *p, size_t n)
{
	if (!p)
		return;
	OPENSSL_cleanse(p, n);
	free(p);
}

/* Decode into a fresh buffer (never NULL on success, even when empty). */
static int b64url_decode_alloc(const char *in, size_t n, unsigned char **out, size_t *outlen)
{
	size_t cap = n % 4 == 1 ? 0 : b64url_decoded_len(n);
	unsigned char *buf = malloc(cap ? cap : 1);
	int err;

	*out = NULL;
	if (!buf)
		return -ENOMEM;
	err = b64url_decode(in, n, buf, cap, outlen);
	if (err) {
		free_wiped(buf, cap ? cap : 1);
		return err;
	}
	*out = buf;
	return 0;
}

static bool printable_ascii(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

/* Media-type comparison for typ/cty (RFC 7515 §4.1.9, §4.1.10):
 * case-insensitive, "application/" optional on either side. */
static bool media_type_is(const char *a, const char *b)
{
	static const char app[] = "application/";

	if (strncasecmp(a, app, sizeof(app) - 1) == 0)
		a += sizeof(app) - 1;
	if (strncasecmp(b, app, sizeof(app) - 1) == 0)
		b += sizeof(app) - 1;
	return strcasecmp(a, b) == 0;
}

/* A reason for a jansson failure that never quotes the input: jansson's own
 * text can include a fragment of the document ("near '...'"). */
static const char *json_failure(const json_error_t *je)
{
	switch (json_error_code(je)) {
	case json_error_duplicate_key:
		return "has a duplicate member";
	case json_error_invalid_utf8:
		return "is not valid UTF-8";
	case json_error_null_character:
	case json_error_null_byte_in_key:
		return "contains a NUL character";
	case json_error_numeric_overflow:
		return "has a number out of range";
	case json_error_end_of_input_expected:
		return "has data after the JSON value";
	case json_error_wrong_type:
		return "is not a JSON object";
	default:
		return "is not valid JSON";
	}
}

/* ======================================================================
 * JWKS
 * ====================================================================== */

__attribute__((format(printf, 2, 3)))
static void refuse(struct jwk *k, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(k->reason, sizeof(k->reason), fmt, ap);
	va_end(ap);
	EVP_PKEY_free(k->pkey);
	k->pkey = NULL;
	k->bits = 0;
}

/*
 * Fetch base64url member `name` of a JWK into out[0..cap).
 * Returns 0, -ENOENT (absent), -EINVAL (not a string, not base64url),
 * -E2BIG (longer than cap).
 */
static int jwk_b64(json_t *jwk, const char *name, unsigned char *out, size_t cap, size_t *outlen)
{
	json_t *v = json_object_get(jwk, name);

	if (!v)
		return -ENOENT;
	if (!json_is_string(v))
		return -EINVAL;
	return b64url_decode(json_string_value(v), json_string_length(v), out, cap, outlen);
}

/* SHA-256 of the DER SubjectPublicKeyInfo of pkey: names a key across two
 * JWKS fetches (jwt_key_still). 0 or -1. */
static int key_fingerprint(EVP_PKEY *pkey, unsigned char fp[32])
{
	unsigned char *der = NULL;
	unsigned int mdlen = 0;
	int n = i2d_PUBKEY(pkey, &der), ok;

	if (n <= 0)
		return -1;
	ok = EVP_Digest(der, (size_t)n, fp, &mdlen, EVP_sha256(), NULL) == 1 && mdlen == 32;
	OPENSSL_free(der);
	return ok ? 0 : -1;
}

/* Build a public key of OpenSSL type `type` from params; NULL on refusal. */
static EVP_PKEY *key_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	EVP_PKEY *pkey = NULL;

	if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pkey = NULL;
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return pkey;
}

static void jwk_rsa(json_t *j, struct jwk *k)
{
	/* One spare byte: some issuers prefix n with a zero octet. */
	unsigned char nb[JWT_RSA_MAX_BITS / 8 + 1], eb[8];
	size_t nlen = 0, elen = 0;
	BIGNUM *n = NULL, *e = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	int err, bits;

	err = jwk_b64(j, "n", nb, sizeof(nb), &nlen);
	if (err == -E2BIG) {
		refuse(k, "RSA modulus longer than %d bits", JWT_RSA_MAX_BITS);
		return;
	}
	if (err || nlen == 0) {
		refuse(k, "RSA n missing or not base64url");
		return;
	}
	err = jwk_b64(j, "e", eb, sizeof(eb), &elen);
	if (err || elen == 0) {
		refuse(k, "RSA e missing, not base64url, or longer than 64 bits");
		return;
	}
	n = BN_bin2bn(nb, (int)nlen, NULL);
	e = BN_bin2bn(eb, (int)elen, NULL);
	bld = OSSL_PARAM_BLD_new();
	if (!n || !e || !bld) {
		refuse(k, "out of memory");
		goto out;
	}
	bits = BN_num_bits(n);
	if (bits < JWT_RSA_MIN_BITS) {
		refuse(k, "RSA key of %d bits; at least %d required", bits, JWT_RSA_MIN_BITS);
		goto out;
	}
	if (bits > JWT_RSA_MAX_BITS) {
		refuse(k, "RSA modulus longer than %d bits", JWT_RSA_MAX_BITS);
		goto out;
	}
	/* e = 1 makes every message its own signature; an even n or e is not
	 * an RSA key. OpenSSL's import does not check either. */
	if (!BN_is_odd(n) || !BN_is_odd(e) || BN_num_bits(e) < 2) {
		refuse(k, "RSA n or e is not a valid public key value");
		goto out;
	}
	if (!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e)) {
		refuse(k, "out of memory");
		goto out;
	}
	k->pkey = key_from_params("RSA", bld);
	if (!k->pkey)
		refuse(k, "OpenSSL refused the RSA key");
	else
		k->bits = EVP_PKEY_get_bits(k->pkey);
out:
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
}

/* crv must be a string equal to want; false otherwise. */
static bool jwk_crv_is(json_t *j, const char *want)
{
	json_t *crv = json_object_get(j, "crv");

	return json_is_string(crv) && strcmp(json_string_value(crv), want) == 0;
}

static void jwk_ec(json_t *j, struct jwk *k)
{
	unsigned char pub[1 + 64];   /* uncompressed point: 0x04 || x || y */
	size_t xlen = 0, ylen = 0;
	OSSL_PARAM_BLD *bld;
	EVP_PKEY_CTX *chk;

	if (!jwk_crv_is(j, "P-256")) {
		refuse(k, "EC curve not supported (only P-256)");
		return;
	}
	if (jwk_b64(j, "x", pub + 1, 32, &xlen) || xlen != 32 ||
	    jwk_b64(j, "y", pub + 33, 32, &ylen) || ylen != 32) {
		refuse(k, "EC x and y must be 32 bytes of base64url each");
		return;
	}
	pub[0] = 0x04;
	bld = OSSL_PARAM_BLD_new();
	if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub))) {
		OSSL_PARAM_BLD_free(bld);
		refuse(k, "out of memory");
		return;
	}
	k->pkey = key_from_params("EC", bld);
	OSSL_PARAM_BLD_free(bld);
	if (!k->pkey) {
		refuse(k, "EC point is not on P-256");
		return;
	}
	/* The import decodes the point; the public check also refuses the
	 * point at infinity and a point outside the prime-order subgroup. */
	chk = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
	if (!chk || EVP_PKEY_public_check(chk) != 1)
		refuse(k, "EC point is not a valid P-256 public key");
	else
		k->bits = EVP_PKEY_get_bits(k->pkey);
	EVP_PKEY_CTX_free(chk);
}

/*
 * An Ed25519 public key of small order (the identity, or one of the other
 * seven points of the 8-torsion) verifies a fixed forged signature over
 * every message (R the point, S = 0), and OpenSSL's verify does not refuse
 * it (review, stop 48); neither does its import check that y is below p
 * (RFC 8032 5.1.3 says decoding fails). x is y in little-endian with x's
 * sign in the top bit. The small-order points' y values, worked out from
 * the curve equation (y(2P) = 0 for order 8): 1 (order 1), p - 1 (2), 0
 * (4), and the two below (8). With the sign bit ignored, these are every
 * encoding of those points; every y >= p (non-canonical) is refused too.
 */
static bool ed25519_weak(const unsigned char x[32])
{
	static const unsigned char small[][32] = {
		{ 1 },                                  /* y = 1: the identity */
		{ 0 },                                  /* y = 0: order 4 */
		{ 0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f },
		{ 0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0,
		  0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05 },
		{ 0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f,
		  0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a },
	};
	unsigned char y[32];
	bool high = true;

	memcpy(y, x, 32);
	y[31] &= 0x7f;
	/* y >= p = 2^255 - 19: ed ff .. ff 7f and above, little-endian */
	for (int i = 1; i < 31 && high; i++)
		high = y[i] == 0xff;
	if (high && y[31] == 0x7f && y[0] >= 0xed)
		return true;
	for (size_t i = 0; i < sizeof(small) / sizeof(small[0]); i++)
		if (memcmp(y, small[i], 32) == 0)
			return true;
	return false;
}

static void jwk_okp(json_t *j, struct jwk *k)
{
	unsigned char x[32];
	size_t xlen = 0;
	OSSL_PARAM_BLD *bld;

	if (!jwk_crv_is(j, "Ed25519")) {
		refuse(k, "OKP curve not supported (only Ed25519)");
		return;
	}
	if (jwk_b64(j, "x", x, sizeof(x), &xlen) || xlen != sizeof(x)) {
		refuse(k, "Ed25519 x must be 32 bytes of base64url");
		return;
	}
	if (ed25519_weak(x)) {
		refuse(k, "Ed25519 x is a small-order or non-canonical point (every message would verify)");
		return;
	}
	bld = OSSL_PARAM_BLD_new();
	if (!bld || !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, x, sizeof(x))) {
		OSSL_PARAM_BLD_free(bld);
		refuse(k, "out of memory");
		return;
	}
	k->pkey = key_from_params("ED25519", bld);
	OSSL_PARAM_BLD_free(bld);
	if (!k->pkey)
		refuse(k, "OpenSSL refused the Ed25519 key");
	else
		k->bits = EVP_PKEY_get_bits(k->pkey);
}

/* Read one JWK into *k. Never fails: a JWK we cannot use becomes a refused
 * entry with its reason (an allocation failure included). */
static void jwk_parse(json_t *j, struct jwk *k)
{
	static const char *const private_members[] = { "d", "p", "q", "dp", "dq", "qi", "oth", "k" };
	json_t *v;
	const char *kty;

	k->alg = -1;
	if (!json_is_object(j)) {
		refuse(k, "not a JSON object");
		return;
	}
	v = json_object_get(j, "kid");
	if (v) {
		if (!json_is_string(v) || json_string_length(v) == 0 ||
		    json_string_length(v) > JWT_KID_MAX ||
		    !printable_ascii(json_string_value(v), json_string_length(v))) {
			refuse(k, "kid must be 1..%d printable ASCII characters", JWT_KID_MAX);
			return;
		}
		memcpy(k->kid, json_string_value(v), json_string_length(v) + 1);
		k->has_kid = true;
	}
	v = json_object_get(j, "kty");
	if (!json_is_string(v)) {
		refuse(k, "kty missing or not a string");
		return;
	}
	kty = json_string_value(v);
	k->kty = strcmp(kty, "RSA") == 0 ? KTY_RSA :
		 strcmp(kty, "EC") == 0 ? KTY_EC :
		 strcmp(kty, "OKP") == 0 ? KTY_OKP : KTY_OTHER;
	k->kty_known = k->kty != KTY_OTHER;
	v = json_object_get(j, "alg");
	if (v) {
		if (!json_is_string(v)) {
			refuse(k, "alg is not a string");
			return;
		}
		snprintf(k->alg_name, sizeof(k->alg_name), "%s", json_string_value(v));
		k->has_alg = true;
		k->alg = alg_find(json_string_value(v));
	}
	for (size_t i = 0; i < sizeof(private_members) / sizeof(private_members[0]); i++)
		if (json_object_get(j, private_members[i])) {
			refuse(k, "carries private key material ('%s'): not used", private_members[i]);
			return;
		}
	if (!k->kty_known) {
		refuse(k, "kty not supported (only RSA, EC, OKP)");
		return;
	}
	v = json_object_get(j, "use");
	if (v && !(json_is_string(v) && (strcmp(json_string_value(v), "sig") == 0 ||
					 strcmp(json_string_value(v), "jwt-svid") == 0))) {
		refuse(k, "use is not \"sig\" or \"jwt-svid\"");
		return;
	}
	v = json_object_get(j, "key_ops");
	if (v) {
		bool verify = false;
		size_t i;
		json_t *op;

		if (!json_is_array(v)) {
			refuse(k, "key_ops is not an array");
			return;
		}
		json_array_foreach(v, i, op)
			if (json_is_string(op) && strcmp(json_string_value(op), "verify") == 0)
				verify = true;
		if (!verify) {
			refuse(k, "key_ops does not include \"verify\"");
			return;
		}
	}
	if (k->has_alg && k->alg < 0) {
		refuse(k, "alg not supported (RS256, PS256, ES256, EdDSA, Ed25519)");
		return;
	}
	if (k->alg >= 0 && alg_table[k->alg].kty != k->kty) {
		refuse(k, "alg %s does not fit kty %s", alg_table[k->alg].name, kty_names[k->kty]);
		return;
	}
	switch (k->kty) {
	case KTY_RSA:
		jwk_rsa(j, k);
		break;
	case KTY_EC:
		jwk_ec(j, k);
		break;
	case KTY_OKP:
		jwk_okp(j, k);
		break;
	case KTY_OTHER:
		break;
	}
}

void jwks_free(struct jwks *keys)
{
	if (!keys)
		return;
	for (size_t i = 0; i < keys->n; i++)
		EVP_PKEY_free(keys->keys[i].pkey);
	free(keys);
}

int jwks_parse(const char *json, size_t len, struct jwks **out, char *why, size_t whylen)
{
	json_error_t je;
	json_t *root = NULL, *arr;
	struct jwks *set = NULL;
	size_t n, first_refused = SIZE_MAX;
	int err = 0;

	fail(why, whylen, 0, "%s", "");
	if (!out)
		return fail(why, whylen, -EINVAL, "bad arguments");
	*out = NULL;
	if (!json && len)
		return fail(why, whylen, -EINVAL, "bad arguments");
	if (len > JWKS_MAX_JSON)
		return fail(why, whylen, -EMSGSIZE, "JWKS is %zu bytes, more than the %u allowed",
			    len, JWKS_MAX_JSON);
	root = json_loadb(json ? json : "", len, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return fail(why, whylen, -EINVAL, "JWKS %s", json_failure(&je));
	arr = json_object_get(root, "keys");
	if (!json_is_object(root) || !json_is_array(arr)) {
		err = fail(why, whylen, -EINVAL, "JWKS is not an object with a \"keys\" array");
		goto out;
	}
	n = json_array_size(arr);
	if (n > JWKS_MAX_KEYS) {
		err = fail(why, whylen, -E2BIG, "JWKS has %zu keys, more than the %d allowed",
			   n, JWKS_MAX_KEYS);
		goto out;
	}
	set = calloc(1, sizeof(*set) + n * sizeof(set->keys[0]));
	if (!set) {
		err = fail(why, whylen, -ENOMEM, "out of memory");
		goto out;
	}
	set->n = n;
	ERR_set_mark();
	for (size_t i = 0; i < n; i++) {
		struct jwk *k = &set->keys[i];

		jwk_parse(json_array_get(arr, i), k);
		/* First usable key of a (kid, kty) wins: deterministic, and the
		 * key that verifies a token never depends on hash order. */
		for (size_t j = 0; k->pkey && k->has_kid && j < i; j++) {
			const struct jwk *o = &set->keys[j];

			if (o->pkey && o->has_kid && o->kty == k->kty && strcmp(o->kid, k->kid) == 0)
				refuse(k, "duplicate kid; keys[%zu] is used", j);
		}
		if (k->pkey && key_fingerprint(k->pkey, k->fp))
			refuse(k, "cannot encode the key");
		if (k->pkey)
			set->usable++;
		else if (first_refused == SIZE_MAX)
			first_refused = i;
	}
	ERR_pop_to_mark();
	if (set->usable == 0) {
		if (first_refused != SIZE_MAX)
			err = fail(why, whylen, -ENOKEY, "JWKS has no usable key (keys[%zu]: %s)",
				   first_refused, set->keys[first_refused].reason);
		else
			err = fail(why, whylen, -ENOKEY, "JWKS has no keys");
		goto out;
	}
	if (first_refused != SIZE_MAX)
		fail(why, whylen, 0, "%zu of %zu keys refused; keys[%zu]: %s", set->n - set->usable,
		     set->n, first_refused, set->keys[first_refused].reason);
	*out = set;
	set = NULL;
out:
	jwks_free(set);
	json_decref(root);
	return err;
}

size_t jwks_size(const struct jwks *keys)
{
	return keys ? keys->n : 0;
}

size_t jwks_usable(const struct jwks *keys)
{
	return keys ? keys->usable : 0;
}

int jwks_key(const struct jwks *keys, size_t i, struct jwks_key_info *info)
{
	const struct jwk *k;

	if (!keys || !info || i >= keys->n)
		return -ERANGE;
	k = &keys->keys[i];
	info->kid = k->has_kid ? k->kid : NULL;
	info->kty = k->kty_known ? kty_names[k->kty] : NULL;
	info->alg = k->has_alg ? k->alg_name : NULL;
	info->bits = k->pkey ? k->bits : 0;
	info->refused = k->pkey ? NULL : k->reason;
	return 0;
}

/* ======================================================================
 * Verification
 * ====================================================================== */

/* Everything jwt_verify() holds, so one cleanup path frees it all. */
struct vstate {
	unsigned char *hdr_raw, *pay_raw, *sig;
	size_t hdr_len, pay_len, sig_len;
	size_t signed_len;        /* bytes of header "." payload, as received */
	json_t *hdr;
	int alg;
	bool rfc9068;             /* policy wants at+jwt: RFC 9068 claims required */
	const char *kid;          /* in hdr, or NULL */
	const struct jwk *key;
};

static int check_policy(const struct jwt_policy *pol, char *why, size_t whylen)
{
	if (!pol->issuer || !pol->issuer[0])
		return fail(why, whylen, -EINVAL, "policy: no issuer");
	if (!pol->audiences || pol->naud == 0)
		return fail(why, whylen, -EINVAL, "policy: no audience");
	for (size_t i = 0; i < pol->naud; i++)
		if (!pol->audiences[i])
			return fail(why, whylen, -EINVAL, "policy: audience %zu is NULL", i);
	if (pol->nalgs && !pol->algs)
		return fail(why, whylen, -EINVAL, "policy: algs is NULL");
	for (size_t i = 0; i < pol->nalgs; i++)
		if (!pol->algs[i])
			return fail(why, whylen, -EINVAL, "policy: alg %zu is NULL", i);
	/* Bounded so that no time arithmetic below can overflow int64. */
	if (pol->leeway_s < 0 || pol->leeway_s > JWT_LEEWAY_MAX)
		return fail(why, whylen, -EINVAL, "policy: leeway out of 0..%lld s",
			    (long long)JWT_LEEWAY_MAX);
	if (pol->max_age_s < 0 || pol->max_age_s > JWT_MAX_AGE_MAX)
		return fail(why, whylen, -EINVAL, "policy: max_age out of 0..%lld s",
			    (long long)JWT_MAX_AGE_MAX);
	if (pol->now < 0 || pol->now > JWT_TIME_MAX)
		return fail(why, whylen, -EINVAL, "policy: clock out of range");
	return 0;
}

static bool policy_allows(const struct jwt_policy *pol, int alg)
{
	static const int defaults[] = { ALG_RS256, ALG_PS256, ALG_ES256, ALG_EDDSA, ALG_ED25519 };

	if (pol->nalgs == 0) {
		for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
			if (defaults[i] == alg)
				return true;
		return false;
	}
	for (size_t i = 0; i < pol->nalgs; i++)
		if (strcmp(pol->algs[i], alg_table[alg].name) == 0)
			return true;
	return false;
}

/* Split into exactly three non-empty segments and decode each. */
static int split_and_decode(const char *tok, size_t len, struct vstate *st, char *why, size_t whylen)
{
	static const char *const names[3] = { "header", "payload", "signature" };
	size_t start[3] = { 0 }, end[3] = { 0 }, dots = 0;
	int err;

	for (size_t i = 0; i < len; i++) {
		if (tok[i] != '.')
			continue;
		if (++dots > 2)
			continue;
		end[dots - 1] = i;
		start[dots] = i + 1;
	}
	if (dots == 4)
		return fail(why, whylen, -EINVAL, "token has 5 segments: a JWE (encrypted), not a JWS");
	if (dots != 2)
		return fail(why, whylen, -EINVAL, "token has %zu segment%s; a JWS has exactly 3",
			    dots + 1, dots ? "s" : "");
	end[2] = len;
	st->signed_len = end[1];
	for (int s = 0; s < 3; s++) {
		unsigned char **dst = s == 0 ? &st->hdr_raw : s == 1 ? &st->pay_raw : &st->sig;
		size_t *dlen = s == 0 ? &st->hdr_len : s == 1 ? &st->pay_len : &st->sig_len;

		if (end[s] == start[s])
			return fail(why, whylen, -EINVAL, "token %s segment is empty", names[s]);
		err = b64url_decode_alloc(tok + start[s], end[s] - start[s], dst, dlen);
		if (err == -ENOMEM)
			return fail(why, whylen, err, "out of memory");
		if (err)
			return fail(why, whylen, -EINVAL, "token %s segment is not strict base64url",
				    names[s]);
	}
	return 0;
}

static int check_typ(const struct jwt_policy *pol, json_t *typv, struct vstate *st,
		     char *why, size_t whylen)
{
	const char *typ;

	if (typv && !json_is_string(typv))
		return fail(why, whylen, -EINVAL, "header typ is not a string");
	typ = typv ? json_string_value(typv) : NULL;
	if (!pol->typ) {
		if (typ && !media_type_is(typ, "JWT") && !media_type_is(typ, "JOSE") &&
		    !media_type_is(typ, "at+jwt"))
			return fail(why, whylen, -EACCES, "header typ is not one of JWT, JOSE, at+jwt");
		return 0;
	}
	if (media_type_is(pol->typ, "JWT")) {
		if (typ && !media_type_is(typ, "JWT") && !media_type_is(typ, "JOSE"))
			return fail(why, whylen, -EACCES, "header typ is not JWT or JOSE");
		return 0;
	}
	st->rfc9068 = media_type_is(pol->typ, "at+jwt");
	if (!typ)
		return fail(why, whylen, -EACCES, "header has no typ; '%.64s' is required", pol->typ);
	if (!media_type_is(typ, pol->typ))
		return fail(why, whylen, -EACCES, "header typ is not the required '%.64s'", pol->typ);
	return 0;
}

static int check_header(const struct jwt_policy *pol, struct vstate *st, char *why, size_t whylen)
{
	json_error_t je;
	json_t *v;
	int err;

	st->hdr = json_loadb((const char *)st->hdr_raw, st->hdr_len, JSON_REJECT_DUPLICATES, &je);
	if (!st->hdr)
		return fail(why, whylen, -EINVAL, "header %s", json_failure(&je));
	if (!json_is_object(st->hdr))
		return fail(why, whylen, -EINVAL, "header is not a JSON object");

	v = json_object_get(st->hdr, "alg");
	if (!v)
		return fail(why, whylen, -EINVAL, "header has no alg");
	if (!json_is_string(v))
		return fail(why, whylen, -EINVAL, "header alg is not a string");
	st->alg = alg_find(json_string_value(v));
	if (st->alg < 0)
		return fail(why, whylen, -ENOTSUP,
			    "header alg is not one this verifier accepts (RS256, PS256, ES256, EdDSA, "
			    "Ed25519; never none or HS*)");
	if (!policy_allows(pol, st->alg))
		return fail(why, whylen, -ENOTSUP, "alg %s is not in the issuer's allowlist",
			    alg_table[st->alg].name);

	/* RFC 7515 §4.1.11: a recipient that does not understand every listed
	 * extension must refuse; we understand none, and an empty crit is
	 * itself invalid. */
	if (json_object_get(st->hdr, "crit"))
		return fail(why, whylen, -ENOTSUP, "header has crit: no critical extension is supported");
	/* A JWT's payload is a claims set; cty exists for nested JWTs (RFC 7519
	 * §5.2), which would move the signature check to an inner token. */
	v = json_object_get(st->hdr, "cty");
	if (v) {
		if (json_is_string(v) && media_type_is(json_string_value(v), "JWT"))
			return fail(why, whylen, -ENOTSUP, "nested JWT (cty JWT) is not accepted");
		return fail(why, whylen, -ENOTSUP, "header has cty: the payload must be a JWT claims set");
	}
	err = check_typ(pol, json_object_get(st->hdr, "typ"), st, why, whylen);
	if (err)
		return err;

	/* kid is only ever a key into the in-memory set: never a path, URL or
	 * query. Bounded and printable so it is safe to carry in logs by the
	 * caller if it chooses to. */
	v = json_object_get(st->hdr, "kid");
	if (v) {
		if (!json_is_string(v))
			return fail(why, whylen, -EINVAL, "header kid is not a string");
		if (json_string_length(v) == 0 || json_string_length(v) > JWT_KID_MAX ||
		    !printable_ascii(json_string_value(v), json_string_length(v)))
			return fail(why, whylen, -EINVAL,
				    "header kid must be 1..%d printable ASCII characters", JWT_KID_MAX);
		st->kid = json_string_value(v);
	}
	/* jku, x5u, jwk, x5c, x5t, x5t#S256: deliberately not read. */
	return 0;
}

static int pick_key(const struct jwks *keys, struct vstate *st, char *why, size_t whylen)
{
	enum kty need = alg_table[st->alg].kty;
	const struct jwk *k = NULL, *other = NULL, *refused = NULL;

	if (!st->kid) {
		if (keys->usable == 0)
			return fail(why, whylen, -ENOKEY, "the JWKS has no usable key");
		if (keys->usable > 1)
			return fail(why, whylen, -EINVAL,
				    "header has no kid and the JWKS has %zu keys", keys->usable);
		for (size_t i = 0; i < keys->n && !k; i++)
			if (keys->keys[i].pkey)
				k = &keys->keys[i];
		if (k->kty != need)
			return fail(why, whylen, -EKEYREJECTED, "the JWKS key is %s; %s needs %s",
				    kty_names[k->kty], alg_table[st->alg].name, kty_names[need]);
	} else {
		for (size_t i = 0; i < keys->n && !k; i++) {
			const struct jwk *c = &keys->keys[i];

			if (!c->has_kid || strcmp(c->kid, st->kid) != 0)
				continue;
			if (!c->pkey)
				refused = refused ? refused : c;
			else if (c->kty == need)
				k = c;
			else
				other = other ? other : c;
		}
		if (!k && other)
			return fail(why, whylen, -EKEYREJECTED, "the key with this kid is %s; %s needs %s",
				    kty_names[other->kty], alg_table[st->alg].name, kty_names[need]);
		if (!k && refused)
			return fail(why, whylen, -EKEYREJECTED,
				    "the key with this kid was refused when the JWKS was read: %s",
				    refused->reason);
		if (!k)
			return fail(why, whylen, -ENOKEY, "no key in the JWKS has this kid");
	}
	/* A JWK that names its alg is for that alg only (RFC 7517 §4.4): an
	 * RS256 key never verifies PS256, whatever the token claims. */
	if (k->alg >= 0 && !alg_same(k->alg, st->alg))
		return fail(why, whylen, -EKEYREJECTED, "the key is for %s, the token says %s",
			    alg_table[k->alg].name, alg_table[st->alg].name);
	st->key = k;
	return 0;
}

/*
 * JWS ES256 signatures are r||s, 32 bytes each (RFC 7518 §3.4); OpenSSL
 * verifies DER. r = 0 or s = 0 is refused here explicitly (CVE-2022-21449),
 * though OpenSSL refuses it too. *der is OPENSSL_malloc'ed.
 */
static int es256_to_der(const unsigned char *sig, unsigned char **der, int *derlen,
			char *why, size_t whylen)
{
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
	int err = 0;

	*der = NULL;
	if (!es || !r || !s) {
		err = fail(why, whylen, -ENOMEM, "out of memory");
		goto out;
	}
	if (BN_is_zero(r) || BN_is_zero(s)) {
		err = fail(why, whylen, -EBADMSG, "ES256 signature has r or s equal to 0");
		goto out;
	}
	if (ECDSA_SIG_set0(es, r, s) != 1) {
		err = fail(why, whylen, -EIO, "OpenSSL could not build the ECDSA signature");
		goto out;
	}
	r = s = NULL;   /* owned by es now */
	*derlen = i2d_ECDSA_SIG(es, der);
	if (*derlen <= 0) {
		*der = NULL;
		err = fail(why, whylen, -EIO, "OpenSSL could not encode the ECDSA signature");
	}
out:
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(es);
	return err;
}

static int check_signature(const char *tok, size_t signed_len, const struct vstate *st,
			   char *why, size_t whylen)
{
	EVP_PKEY *pkey = st->key->pkey;
	const char *alg = alg_table[st->alg].name;
	const unsigned char *sig = st->sig;
	size_t sig_len = st->sig_len, want;
	unsigned char *der = NULL;
	int derlen = 0, err = 0, rc;
	EVP_MD_CTX *md = NULL;
	EVP_PKEY_CTX *pctx = NULL;

	want = alg_table[st->alg].kty == KTY_RSA ? (size_t)EVP_PKEY_get_size(pkey) : 64;
	if (sig_len != want)
		return fail(why, whylen, -EBADMSG, "%s signature is %zu bytes; %zu expected",
			    alg, sig_len, want);
	if (st->alg == ALG_ES256) {
		err = es256_to_der(sig, &der, &derlen, why, whylen);
		if (err)
			return err;
		sig = der;
		sig_len = (size_t)derlen;
	}
	md = EVP_MD_CTX_new();
	if (!md) {
		err = fail(why, whylen, -ENOMEM, "out of memory");
		goto out;
	}
	/* EdDSA hashes internally: no digest (RFC 8037 §3.1, one-shot only). */
	if (EVP_DigestVerifyInit_ex(md, &pctx, st->alg == ALG_EDDSA || st->alg == ALG_ED25519 ?
				    NULL : "SHA256", NULL, NULL, pkey, NULL) != 1) {
		err = fail(why, whylen, -EIO, "OpenSSL could not start %s verification", alg);
		goto out;
	}
	/* Padding is set explicitly for both RSA algorithms, so RS256 and
	 * PS256 never depend on a default. PSS: salt = digest length (32) and
	 * MGF1 with SHA-256, RFC 7518 §3.5; without the explicit salt length
	 * OpenSSL's verifier would accept any salt length. */
	if (st->alg == ALG_RS256 && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0)
		err = -EIO;
	if (st->alg == ALG_PS256 &&
	    (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
	     EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) <= 0 ||
	     EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, "SHA256", NULL) <= 0))
		err = -EIO;
	if (err) {
		err = fail(why, whylen, err, "OpenSSL could not set up %s padding", alg);
		goto out;
	}
	/* Over the exact bytes received: base64url(header) "." base64url(payload). */
	rc = EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)tok, signed_len);
	if (rc != 1)
		err = fail(why, whylen, -EBADMSG, "%s signature does not verify", alg);
out:
	EVP_MD_CTX_free(md);   /* frees pctx too */
	if (der) {
		OPENSSL_cleanse(der, (size_t)derlen);
		OPENSSL_free(der);
	}
	return err;
}

/* ---- claims ---- */

static int str_claim(json_t *c, const char *name, bool required, const char **out,
		     char *why, size_t whylen)
{
	json_t *v = json_object_get(c, name);

	*out = NULL;
	if (!v)
		return required ? fail(why, whylen, -EINVAL, "claim '%s' is missing", name) : 0;
	if (!json_is_string(v))
		return fail(why, whylen, -EINVAL, "claim '%s' is not a string", name);
	*out = json_string_value(v);
	return 0;
}

/* A string or an array of strings, as a list of pointers into c. */
static int list_claim(json_t *c, const char *name, bool required, const char ***out, size_t *n,
		      char *why, size_t whylen)
{
	json_t *v = json_object_get(c, name), *e;
	size_t i;

	*out = NULL;
	*n = 0;
	if (!v)
		return required ? fail(why, whylen, -EINVAL, "claim '%s' is missing", name) : 0;
	if (json_is_string(v)) {
		*out = malloc(sizeof(**out));
		if (!*out)
			return fail(why, whylen, -ENOMEM, "out of memory");
		(*out)[0] = json_string_value(v);
		*n = 1;
		return 0;
	}
	if (!json_is_array(v))
		return fail(why, whylen, -EINVAL, "claim '%s' is neither a string nor an array", name);
	if (required && json_array_size(v) == 0)
		return fail(why, whylen, -EINVAL, "claim '%s' is an empty array", name);
	json_array_foreach(v, i, e)
		if (!json_is_string(e))
			return fail(why, whylen, -EINVAL, "claim '%s' has a non-string element", name);
	/* Bounded by the token size: at most JWT_MAX_TOKEN / 3 elements. */
	*out = calloc(json_array_size(v) ? json_array_size(v) : 1, sizeof(**out));
	if (!*out)
		return fail(why, whylen, -ENOMEM, "out of memory");
	json_array_foreach(v, i, e)
		(*out)[i] = json_string_value(e);
	*n = json_array_size(v);
	return 0;
}

static int time_claim(json_t *c, const char *name, bool required, int64_t *out, bool *has,
		      char *why, size_t whylen)
{
	json_t *v = json_object_get(c, name);
	int64_t t;

	*out = 0;
	if (has)
		*has = false;
	if (!v)
		return required ? fail(why, whylen, -EINVAL, "claim '%s' is missing", name) : 0;
	if (json_is_integer(v)) {
		json_int_t x = json_integer_value(v);

		if (x < 0 || x > JWT_TIME_MAX)
			return fail(why, whylen, -EINVAL, "claim '%s' is out of range", name);
		t = (int64_t)x;
	} else if (json_is_real(v)) {
		double d = json_real_value(v);

		/* The comparison is false for NaN too; JWT_TIME_MAX < 2^53, exact. */
		if (!(d >= 0 && d <= (double)JWT_TIME_MAX))
			return fail(why, whylen, -EINVAL, "claim '%s' is out of range", name);
		t = (int64_t)d;
		if ((double)t != d)
			return fail(why, whylen, -EINVAL, "claim '%s' has a fractional part", name);
	} else {
		return fail(why, whylen, -EINVAL, "claim '%s' is not a number", name);
	}
	*out = t;
	if (has)
		*has = true;
	return 0;
}

/* Read and type-check every claim we use, then judge them. */
static int check_claims(json_t *c, const struct jwt_policy *pol, const struct vstate *st,
			struct jwt_claims *o, char *why, size_t whylen)
{
	const char *groups = pol->groups_claim ? pol->groups_claim : "groups";
	int64_t now = pol->now, L = pol->leeway_s;
	json_t *act;
	bool ours = false;
	int err;

	if ((err = str_claim(c, "iss", true, &o->iss, why, whylen)) ||
	    (err = str_claim(c, "sub", true, &o->sub, why, whylen)) ||
	    (err = list_claim(c, "aud", true, &o->aud, &o->naud, why, whylen)) ||
	    (err = time_claim(c, "exp", true, &o->exp, NULL, why, whylen)) ||
	    (err = time_claim(c, "nbf", false, &o->nbf, &o->has_nbf, why, whylen)) ||
	    (err = time_claim(c, "iat", pol->max_age_s > 0 || st->rfc9068, &o->iat, &o->has_iat,
			      why, whylen)) ||
	    (err = str_claim(c, "azp", false, &o->azp, why, whylen)) ||
	    (err = str_claim(c, "client_id", st->rfc9068, &o->client_id, why, whylen)) ||
	    (err = str_claim(c, "jti", st->rfc9068, &o->jti, why, whylen)) ||
	    (err = str_claim(c, "scope", false, &o->scope, why, whylen)) ||
	    (err = list_claim(c, groups, false, &o->groups, &o->ngroups, why, whylen)))
		return err;
	if (!o->sub[0])
		return fail(why, whylen, -EINVAL, "claim 'sub' is empty");
	/* names a principal holds in fixed fields (IDENT_NAME_MAX): a longer
	 * one cut short could equal another name a binding or act.sub uses */
	if (strlen(o->sub) >= JWT_NAME_MAX || (o->client_id && strlen(o->client_id) >= JWT_NAME_MAX) ||
	    (o->azp && strlen(o->azp) >= JWT_NAME_MAX))
		return fail(why, whylen, -EINVAL, "claim 'sub', 'client_id' or 'azp' is %d bytes or longer",
			    JWT_NAME_MAX);
	/* RFC 8693 §4.1: only the outermost act is the current actor; nested
	 * ones are history and not read. */
	act = json_object_get(c, "act");
	if (act) {
		json_t *s = json_object_get(act, "sub"), *ai = json_object_get(act, "iss");

		if (!json_is_object(act) || !json_is_string(s) || json_string_length(s) == 0)
			return fail(why, whylen, -EINVAL, "claim 'act' is not an object with a string 'sub'");
		/* the actor's issuer, when named: act.sub is a name in its namespace */
		if (ai && (!json_is_string(ai) || json_string_length(ai) == 0))
			return fail(why, whylen, -EINVAL, "claim 'act.iss' is not a non-empty string");
		o->act_sub = json_string_value(s);
		o->act_iss = ai ? json_string_value(ai) : NULL;
	}

	if (strlen(pol->issuer) != strlen(o->iss) || strcmp(pol->issuer, o->iss) != 0)
		return fail(why, whylen, -EACCES, "iss is not the configured issuer '%.200s'", pol->issuer);
	for (size_t i = 0; i < o->naud && !ours; i++)
		for (size_t j = 0; j < pol->naud && !ours; j++)
			ours = strcmp(o->aud[i], pol->audiences[j]) == 0;
	if (!ours)
		return fail(why, whylen, -EACCES, "aud does not contain the expected audience '%.200s'%s",
			    pol->audiences[0], pol->naud > 1 ? " (or another configured one)" : "");
	if (pol->single_aud && o->naud > 1)
		return fail(why, whylen, -EACCES,
			    "aud names %zu audiences; this issuer's policy accepts a single one", o->naud);

	if (now >= o->exp + L)
		return fail(why, whylen, -EKEYEXPIRED, "token expired %lld s ago (leeway %lld s)",
			    (long long)(now - o->exp), (long long)L);
	if (o->has_nbf && o->nbf > now + L)
		return fail(why, whylen, -EACCES, "token not valid for another %lld s (nbf, leeway %lld s)",
			    (long long)(o->nbf - now), (long long)L);
	if (o->has_iat && o->iat > now + L)
		return fail(why, whylen, -EACCES, "token issued %lld s in the future (iat, leeway %lld s)",
			    (long long)(o->iat - now), (long long)L);
	if (pol->max_age_s > 0 && now - o->iat - L > pol->max_age_s)
		return fail(why, whylen, -EKEYEXPIRED,
			    "token issued %lld s ago; at most %lld s allowed (leeway %lld s)",
			    (long long)(now - o->iat), (long long)pol->max_age_s, (long long)L);
	return 0;
}

void jwt_claims_free(struct jwt_claims *c)
{
	if (!c)
		return;
	free(c->aud);
	free(c->groups);
	json_decref(c->json);
	memset(c, 0, sizeof(*c));
}

int jwt_verify(const char *token, size_t len, const struct jwks *keys,
	       const struct jwt_policy *pol, struct jwt_claims *out,
	       char *why, size_t whylen)
{
	struct vstate st = { .alg = -1 };
	struct jwt_claims claims;
	json_error_t je;
	int err;

	memset(&claims, 0, sizeof(claims));
	if (out)
		memset(out, 0, sizeof(*out));
	fail(why, whylen, 0, "%s", "");
	if (!token || !keys || !pol)
		return fail(why, whylen, -EINVAL, "bad arguments");
	/* First, before any byte is looked at (jwt.md case 36). */
	if (len > JWT_MAX_TOKEN)
		return fail(why, whylen, -EMSGSIZE, "token is %zu bytes; at most %d allowed",
			    len, JWT_MAX_TOKEN);
	err = check_policy(pol, why, whylen);
	if (err)
		return err;

	ERR_set_mark();
	err = split_and_decode(token, len, &st, why, whylen);
	if (!err)
		err = check_header(pol, &st, why, whylen);
	if (!err)
		err = pick_key(keys, &st, why, whylen);
	if (!err)
		err = check_signature(token, st.signed_len, &st, why, whylen);
	if (!err) {
		claims.json = json_loadb((const char *)st.pay_raw, st.pay_len,
					 JSON_REJECT_DUPLICATES, &je);
		if (!claims.json)
			err = fail(why, whylen, -EINVAL, "payload %s", json_failure(&je));
		else if (!json_is_object(claims.json))
			err = fail(why, whylen, -EINVAL, "payload is not a JSON object");
	}
	if (!err)
		err = check_claims(claims.json, pol, &st, &claims, why, whylen);
	if (!err) {
		claims.alg = alg_table[st.alg].name;
		if (st.kid)
			snprintf(claims.kid, sizeof(claims.kid), "%s", st.kid);
		claims.key.set = true;
		claims.key.has_kid = st.kid != NULL;
		snprintf(claims.key.kid, sizeof(claims.key.kid), "%s", st.kid ? st.kid : "");
		claims.key.alg = st.alg;
		memcpy(claims.key.fp, st.key->fp, sizeof(claims.key.fp));
		if (out)
			*out = claims;
		else
			jwt_claims_free(&claims);
		fail(why, whylen, 0, "%s", "");
	} else {
		jwt_claims_free(&claims);
	}
	ERR_pop_to_mark();

	json_decref(st.hdr);
	free_wiped(st.hdr_raw, st.hdr_len);
	free_wiped(st.pay_raw, st.pay_len);
	free_wiped(st.sig, st.sig_len);
	return err;
}

int jwt_key_still(const struct jwks *keys, const struct jwt_keyref *ref, char *why, size_t whylen)
{
	struct vstate st = { .alg = -1 };
	int err;

	fail(why, whylen, 0, "%s", "");
	if (!keys || !ref || !ref->set || ref->alg < 0 || ref->alg >= ALG_COUNT)
		return fail(why, whylen, -EINVAL, "bad arguments");
	st.alg = ref->alg;
	st.kid = ref->has_kid ? ref->kid : NULL;
	if ((err = pick_key(keys, &st, why, whylen)))
		return err;
	if (memcmp(st.key->fp, ref->fp, sizeof(ref->fp)) != 0)
		return fail(why, whylen, -EKEYREJECTED, "the key the issuer publishes under this kid is another one");
	return 0;
}

const char *jwt_error_name(int err)
{
	switch (err) {
	case 0:             return "ok";
	case -EMSGSIZE:     return "too_large";
	case -EINVAL:       return "malformed";
	case -ENOTSUP:      return "unsupported";
	case -ENOKEY:       return "unknown_key";
	case -EKEYREJECTED: return "key_rejected";
	case -EBADMSG:      return "bad_signature";
	case -EKEYEXPIRED:  return "expired";
	case -EACCES:       return "not_for_us";
	case -EIO:          return "internal";
	case -ENOMEM:       return "no_memory";
	case -E2BIG:        return "too_many_keys";
	default:            return "error";
	}
}
