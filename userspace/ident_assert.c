/* SPDX-License-Identifier: Apache-2.0 */
/*
 * private_key_jwt (RFC 7523 §2.2, OpenID Connect Core §9): the client
 * authenticates to the token endpoint with a short-lived JWT it signs with
 * its own private key, so no shared secret exists at all. OpenSSL 3 signs;
 * what is written here is the JWS compact form (a few lines, no library in
 * Debian builds it without also bringing libjwt's verifier along).
 *
 * Key types: RSA of 2048 bits or more (RS256), EC P-256 (ES256, the DER
 * signature converted to the raw r||s form JWS uses), Ed25519 (EdDSA).
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "ident_assert.h"
#include "ident_jwks.h"
#include "util.h"

/* base64url without padding into out (cap >= 4 * ceil(n/3) + 1). */
static size_t b64url(const unsigned char *in, size_t n, char *out)
{
	int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);

	while (len > 0 && out[len - 1] == '=')
		len--;
	for (int i = 0; i < len; i++)
		out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
	out[len] = '\0';
	return (size_t)len;
}

int ident_assert_key_load(const char *pem, size_t len, EVP_PKEY **out, const char **alg,
			  char *why, size_t whylen)
{
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	EVP_PKEY *k;

	*out = NULL;
	if (!bio)
		return -ENOMEM;
	k = PEM_read_bio_PrivateKey(bio, NULL, ag_no_passphrase, NULL);
	BIO_free(bio);
	if (!k) {
		ident_setwhy(why, whylen, "private key: not a PEM private key (encrypted keys are not supported)");
		return -EINVAL;
	}
	if (EVP_PKEY_is_a(k, "RSA")) {
		if (EVP_PKEY_get_bits(k) < 2048) {
			ident_setwhy(why, whylen, "private key: RSA keys under 2048 bits are refused");
			goto bad;
		}
		*alg = "RS256";
	} else if (EVP_PKEY_is_a(k, "EC")) {
		char group[32] = "";
		size_t glen = 0;

		if (!EVP_PKEY_get_utf8_string_param(k, "group", group, sizeof(group), &glen) ||
		    strcmp(group, "prime256v1") != 0) {
			ident_setwhy(why, whylen, "private key: only the P-256 curve is supported for EC (ES256)");
			goto bad;
		}
		*alg = "ES256";
	} else if (EVP_PKEY_is_a(k, "ED25519")) {
		*alg = "EdDSA";
	} else {
		ident_setwhy(why, whylen, "private key: type must be RSA, EC P-256 or Ed25519");
		goto bad;
	}
	*out = k;
	return 0;
bad:
	EVP_PKEY_free(k);
	return -EINVAL;
}

/* DER ECDSA-Sig-Value -> 64 bytes r||s. */
static int ecdsa_raw(const unsigned char *der, size_t len, unsigned char raw[64])
{
	const unsigned char *p = der;
	ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)len);
	const BIGNUM *r, *s;
	int ok;

	if (!sig)
		return -EINVAL;
	ECDSA_SIG_get0(sig, &r, &s);
	ok = BN_bn2binpad(r, raw, 32) == 32 && BN_bn2binpad(s, raw + 32, 32) == 32;
	ECDSA_SIG_free(sig);
	return ok ? 0 : -EINVAL;
}

char *ident_client_assertion(EVP_PKEY *key, const char *alg, const char *client_id,
			     const char *audience, int64_t now, char *why, size_t whylen)
{
	unsigned char jti[16], sig[1024], raw[64];   /* an RSA key up to 8192 bits */
	char jtis[40], *hdr = NULL, *pl = NULL, *out = NULL;
	size_t siglen = sizeof(sig), hlen, plen, cap;
	json_t *h, *c;
	EVP_MD_CTX *md = NULL;
	bool eddsa = strcmp(alg, "EdDSA") == 0;

	/* a jti the token endpoint may use to refuse a replay: never a
	 * predictable one */
	if (RAND_bytes(jti, sizeof(jti)) != 1) {
		ident_setwhy(why, whylen, "no random bytes for the assertion's jti");
		return NULL;
	}
	b64url(jti, sizeof(jti), jtis);
	h = json_pack("{s:s, s:s}", "alg", alg, "typ", "JWT");
	/* iss = sub = client_id; aud = the token endpoint; a minute to live. */
	c = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "iss", client_id, "sub", client_id,
		      "aud", audience, "jti", jtis, "iat", (json_int_t)now, "exp", (json_int_t)(now + 60));
	if (h)
		hdr = json_dumps(h, JSON_COMPACT);
	if (c)
		pl = json_dumps(c, JSON_COMPACT);
	json_decref(h);
	json_decref(c);
	if (!hdr || !pl) {
		ident_setwhy(why, whylen, "out of memory");
		goto out;
	}
	hlen = strlen(hdr);
	plen = strlen(pl);
	cap = 4 * ((hlen + 2) / 3) + 4 * ((plen + 2) / 3) + 4 * ((sizeof(sig) + 2) / 3) + 8;
	out = malloc(cap);
	if (!out) {
		ident_setwhy(why, whylen, "out of memory");
		goto out;
	}
	size_t n = b64url((unsigned char *)hdr, hlen, out);

	out[n++] = '.';
	n += b64url((unsigned char *)pl, plen, out + n);

	md = EVP_MD_CTX_new();
	if (!md || EVP_DigestSignInit(md, NULL, eddsa ? NULL : EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestSign(md, sig, &siglen, (unsigned char *)out, n) != 1) {
		ident_setwhy(why, whylen, "private key: signing the client assertion failed");
		goto fail;
	}
	out[n++] = '.';
	if (strcmp(alg, "ES256") == 0) {
		if (ecdsa_raw(sig, siglen, raw)) {
			ident_setwhy(why, whylen, "private key: bad ECDSA signature");
			goto fail;
		}
		b64url(raw, sizeof(raw), out + n);
	} else {
		b64url(sig, siglen, out + n);
	}
	goto out;
fail:
	free(out);
	out = NULL;
out:
	EVP_MD_CTX_free(md);
	free(hdr);
	free(pl);
	return out;
}
