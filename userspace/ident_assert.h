/* SPDX-License-Identifier: Apache-2.0 */
/* private_key_jwt client assertions (RFC 7523); see ident_assert.c. */
#ifndef AGENTGATE_IDENT_ASSERT_H
#define AGENTGATE_IDENT_ASSERT_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/evp.h>

/*
 * Parses a PEM private key (unencrypted PKCS#8 or traditional) and picks its
 * JWS alg: RS256 (RSA >= 2048 bits), ES256 (P-256), EdDSA (Ed25519). 0 with
 * *out (EVP_PKEY_free it) or -EINVAL with a reason.
 */
int ident_assert_key_load(const char *pem, size_t len, EVP_PKEY **out, const char **alg,
			  char *why, size_t whylen);
/*
 * A signed client assertion: iss = sub = client_id, aud = audience (the
 * token endpoint), random jti, iat = now, exp = now + 60. malloc'd
 * NUL-terminated string, or NULL with a reason.
 */
char *ident_client_assertion(EVP_PKEY *key, const char *alg, const char *client_id,
			     const char *audience, int64_t now, char *why, size_t whylen);

#endif
