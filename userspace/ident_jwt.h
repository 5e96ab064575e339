/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ident_jwt: verify a compact JWS (a JWT access token, a JWT-SVID, a
 * Kubernetes service-account token) against an issuer's JWKS held in memory.
 *
 * Why by hand: Debian 12's libjwt 1.10 accepts an HS256 token keyed with the
 * RSA public key and alg "none" (../shared/notes/identity-audit.md §2.3), and
 * the other C JOSE libraries either lack EdDSA or sit on GnuTLS. This file is
 * OpenSSL 3 EVP for the signatures and jansson for the JSON, nothing else.
 *
 * What it refuses (RFC 7515/7518/7519, RFC 8725, RFC 9068), in order:
 *  - a token over JWT_MAX_TOKEN bytes, before looking at a single byte;
 *  - anything but exactly three non-empty segments of strict base64url
 *    (no '=', '+', '/', whitespace, or non-canonical trailing bits);
 *  - a header that is not a JSON object, or has a duplicate member;
 *  - an alg outside the policy's allowlist or outside what this file can
 *    verify (RS256, PS256, ES256, EdDSA and its RFC 9864 name Ed25519);
 *    "none" and every HS* are never verifiable here, whatever the policy;
 *  - crit (any value, even []), cty (any value; "JWT" means a nested JWT);
 *  - a typ the policy does not accept (see struct jwt_policy);
 *  - a kid that is not 1..JWT_KID_MAX printable ASCII bytes; no kid when
 *    the JWKS has more than one usable key;
 *  - a key whose kty/crv/alg does not fit the header alg;
 *  - a bad signature (ES256 must be raw r||s of exactly 64 bytes);
 *  - a payload that is not a JSON object or has a duplicate member (at any
 *    depth), a missing or mistyped claim, and the claim checks below.
 * The header members jku, x5u, jwk, x5c, x5t and x5t#S256 are ignored: the
 * key comes from the JWKS the caller trusts, by kid, and from nowhere else.
 * Nothing here opens a file, resolves a name or fetches a URL.
 *
 * Library code: no I/O, no logging, no global state; reentrant. A struct
 * jwks is immutable once parsed and may be shared between threads.
 */
#ifndef AGENTGATE_IDENT_JWT_H
#define AGENTGATE_IDENT_JWT_H

#define JWT_NAME_MAX 256   /* sub, client_id, azp: refused at this length (IDENT_NAME_MAX) */

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JWT_MAX_TOKEN     16384          /* bytes; larger is -EMSGSIZE unparsed */
#define JWT_KID_MAX       256            /* kid bytes, token and JWKS alike */
#define JWKS_MAX_KEYS     64             /* JWK entries in a set; more is -E2BIG */
#define JWKS_MAX_JSON     (512u * 1024)  /* JWKS text; the fetcher's limit too */
#define JWT_RSA_MIN_BITS  2048           /* RFC 7518 §3.3, jose; smaller is refused */
#define JWT_RSA_MAX_BITS  8192           /* bounds what one verification costs */
#define JWT_TIME_MAX      INT64_C(253402300799) /* 9999-12-31T23:59:59Z */
#define JWT_LEEWAY_MAX    INT64_C(3600)  /* policy sanity bounds */
#define JWT_MAX_AGE_MAX   (INT64_C(10) * 366 * 86400)

/*
 * Errors, a closed set (jwt_error_name() gives each a stable audit name).
 * A verdict is not an error, but every one of these means "refuse":
 *   -EMSGSIZE      token longer than JWT_MAX_TOKEN (or JWKS > JWKS_MAX_JSON)
 *   -EINVAL        not a JWS/JWT we can read: segments, base64url, JSON,
 *                  duplicate member, a required member missing or of the
 *                  wrong type, a kid that is too long or not printable, no
 *                  kid while the JWKS has several keys; also bad arguments
 *                  or a bad policy (why then starts with "policy:")
 *   -ENOTSUP       well formed but uses what we refuse: alg (not allowed,
 *                  not supported), crit, cty / nested JWT
 *   -ENOKEY        kid not in the JWKS (the one case where refetching the
 *                  JWKS can help; rate-limit it), or no usable key at all
 *   -EKEYREJECTED  the key named by kid cannot verify this alg (kty, crv or
 *                  the JWK's own alg differ), or jwks_parse() refused it
 *   -EBADMSG       the signature does not verify (wrong length included)
 *   -EKEYEXPIRED   exp has passed, or iat is older than max_age_s
 *   -EACCES        authentic but not for us: iss, aud, typ, nbf or iat in
 *                  the future
 *   -EIO           OpenSSL failed in a way a token cannot cause
 *   -ENOMEM
 */

/* ---- JWKS ------------------------------------------------------------ */

struct jwks;    /* opaque; immutable after jwks_parse() */

/*
 * Parse a JWK Set ({"keys": [...]}, RFC 7517 §5) from json[0..len); the
 * text need not be NUL-terminated. Every entry is kept, usable or refused,
 * so a token naming a refused key gets the exact reason (-EKEYREJECTED)
 * instead of an "unknown kid" that would send the caller refetching.
 *
 * An entry is usable when it is
 *   RSA: n (JWT_RSA_MIN_BITS..JWT_RSA_MAX_BITS bits, odd), e (odd, 3..2^64);
 *   EC:  crv "P-256", x and y of 32 bytes each, a point on the curve;
 *   OKP: crv "Ed25519", x of 32 bytes;
 * and kid (if present) is 1..JWT_KID_MAX printable ASCII bytes, use (if
 * present) is "sig" or "jwt-svid" (SPIFFE bundles), key_ops (if present)
 * holds "verify", alg (if present) is one this file verifies and fits kty,
 * and it carries no private member (d, p, q, dp, dq, qi, oth, k): a JWKS
 * that publishes private key material is an issuer bug we do not use.
 * Other kty values (oct, ...) are refused entries, per RFC 7517 §5
 * ("ignore keys you do not understand") rather than a failed set.
 *
 * Duplicate kids: the first usable entry of a given kid and kty wins and a
 * later one with the same kid and kty is refused ("duplicate kid"). The
 * same kid on keys of different kty is allowed (RFC 7517 §4.5): the token's
 * alg picks the kty, so the choice is still unique.
 *
 * Returns 0 and *out (free with jwks_free), or -EMSGSIZE, -EINVAL (not a
 * JSON object with a "keys" array; duplicate member anywhere), -E2BIG
 * (more than JWKS_MAX_KEYS entries), -ENOKEY (no usable entry), -ENOMEM.
 * why gets the reason of a failure, or on success "" or a note naming the
 * first refused entry by index ("keys[2]: ..."). why may be NULL.
 */
int jwks_parse(const char *json, size_t len, struct jwks **out, char *why, size_t whylen);

/* NULL-safe. */
void jwks_free(struct jwks *keys);

/* Entries in the set (usable and refused), and the usable ones alone. */
size_t jwks_size(const struct jwks *keys);
size_t jwks_usable(const struct jwks *keys);

struct jwks_key_info {
	const char *kid;      /* NULL when the JWK has none */
	const char *kty;      /* "RSA", "EC", "OKP", or NULL for others */
	const char *alg;      /* the JWK's alg member, or NULL */
	int bits;             /* key size for usable keys, else 0 */
	const char *refused;  /* NULL when usable, else why it was refused */
};

/* Describe entry i (0..jwks_size()-1); pointers live as long as keys.
 * Returns 0 or -ERANGE. */
int jwks_key(const struct jwks *keys, size_t i, struct jwks_key_info *info);

/* ---- Verification ---------------------------------------------------- */

struct jwt_policy {
	/* Required. Compared byte for byte: no normalisation, so
	 * "https://idp/" is not "https://idp". */
	const char *issuer;

	/* Required, naud >= 1. The token's aud (a string, or an array of
	 * strings) must contain one of these exactly. With single_aud, an aud
	 * array of more than one element is refused even if ours is in it
	 * (a token for several audiences can be replayed across them). */
	const char *const *audiences;
	size_t naud;
	bool single_aud;

	/* The issuer's allowlist, compared case-sensitively ("EdDSA" and
	 * "Ed25519" are two names; list the ones the issuer uses). Names this
	 * file cannot verify never match. nalgs == 0 means RS256, PS256,
	 * ES256, EdDSA, Ed25519: all asymmetric, never none or HS*. */
	const char *const *algs;
	size_t nalgs;

	/* Explicit typing (RFC 8725 §3.11). The header typ is compared
	 * case-insensitively with an optional "application/" prefix
	 * (RFC 7515 §4.1.9):
	 *   "at+jwt"  typ must be present and be at+jwt (RFC 9068 §4), and the
	 *             RFC 9068 §2.2 claims sub, client_id, iat, jti are
	 *             required too;
	 *   "JWT"     typ absent, JWT or JOSE (JWT-SVID, Kubernetes tokens);
	 *   other     typ must be present and equal it;
	 *   NULL      typ absent or one of JWT, JOSE, at+jwt: any token kind
	 *             we know, but never an explicitly different one
	 *             (dpop+jwt, secevent+jwt, logout+jwt, ...). */
	const char *typ;

	/* Name of the top-level claim read into jwt_claims.groups; NULL means
	 * "groups". The claim may be absent, a string or an array of strings. */
	const char *groups_claim;

	int64_t leeway_s;   /* 0..JWT_LEEWAY_MAX, applied to exp, nbf and iat */
	int64_t max_age_s;  /* 0 = no limit; else iat is required and
	                     * now - iat - leeway_s must be <= max_age_s */
	int64_t now;        /* the clock, seconds since the epoch (injected) */
};

/*
 * The key that verified a token: enough to ask a later JWKS whether it
 * still verifies that token (jwt_key_still) without keeping the token, a
 * bearer secret. Nothing in it is secret.
 */
struct jwt_keyref {
	bool set;                  /* filled by a successful jwt_verify() */
	char kid[JWT_KID_MAX + 1]; /* "" when the header had none */
	bool has_kid;
	int alg;                   /* the token's alg (internal id) */
	unsigned char fp[32];      /* SHA-256 of the key's SubjectPublicKeyInfo (DER) */
};

/*
 * Verified claims. String members point into json and live until
 * jwt_claims_free(); NULL when the claim is absent.
 */
struct jwt_claims {
	struct jwt_keyref key;    /* the key that verified the token */
	const char *alg;          /* static: "RS256", "PS256", "ES256", "EdDSA", "Ed25519" */
	char kid[JWT_KID_MAX + 1];/* "" when the header had none */
	const char *iss, *sub;    /* always set on success */
	const char **aud;         /* naud >= 1 entries */
	size_t naud;
	const char *azp, *client_id, *jti, *scope;
	const char **groups;      /* policy->groups_claim, ngroups entries */
	size_t ngroups;
	const char *act_sub;      /* RFC 8693 act.sub (the outermost act only) */
	const char *act_iss;      /* its act.iss; NULL when absent */
	int64_t exp;              /* always set */
	int64_t nbf, iat;         /* 0 unless has_nbf / has_iat */
	bool has_nbf, has_iat;
	json_t *json;             /* the whole claims set; owned, see below */
};

/*
 * Verify token[0..len) (no NUL needed; surrounding whitespace is NOT
 * trimmed here, so a token file's trailing newline is the reader's job)
 * against keys under pol.
 *
 * NumericDate claims (exp, nbf, iat) must be JSON integers, or reals with
 * no fractional part (1.7e9), within 0..JWT_TIME_MAX. RFC 7519 allows
 * fractions; every issuer we target writes integers, and refusing a
 * fraction avoids choosing a rounding direction for each claim.
 * Time rules, with L = leeway_s: refused if now >= exp + L (expired), if
 * nbf > now + L, if iat > now + L, or if max_age_s and now - iat - L >
 * max_age_s. sub is always required (a principal needs a subject), a
 * non-empty string. act, when present, must be an object with a string
 * sub. azp, client_id, jti, scope must be strings when present.
 *
 * Key choice: with a kid, only a JWK with that exact kid (byte for byte)
 * and the kty the alg needs is used; without one, the JWKS must hold
 * exactly one usable key. A kid not in the set is -ENOKEY, the caller's cue
 * for one rate-limited JWKS refetch (jwt.md case 9).
 *
 * The signature is checked before any claim is read, so a claim reason
 * (-EACCES, -EKEYEXPIRED) is only ever given for an authentic token.
 *
 * Returns 0 and fills *out (when out is not NULL; release it with
 * jwt_claims_free), or a negative errno from the table above with a
 * reason in why. why never contains the token, any part of it, or any
 * value taken from it (kid, iss, ... are attacker-chosen text and would
 * reach logs); on success why is "". *out is zeroed on failure.
 */
int jwt_verify(const char *token, size_t len, const struct jwks *keys,
	       const struct jwt_policy *pol, struct jwt_claims *out,
	       char *why, size_t whylen);

/* Release what jwt_verify() put in *c and zero it. NULL-safe, and safe on
 * a zeroed struct or one jwt_verify() failed on. */
void jwt_claims_free(struct jwt_claims *c);

/*
 * Would keys still verify the token that ref came from? The key choice of
 * jwt_verify() is made again for the token's kid and alg: 0 when it picks
 * the same key (the same public key, byte for byte), -ENOKEY when the set
 * has no key under that kid (or, for a token without one, not exactly one
 * usable key; -EINVAL when it has several), -EKEYREJECTED when it picks
 * another key or refuses the one it finds. The claims are not looked at again: exp and the rest did not
 * change with the keys. why never holds the kid.
 */
int jwt_key_still(const struct jwks *keys, const struct jwt_keyref *ref, char *why, size_t whylen);

/*
 * A stable, short name for a jwt_verify()/jwks_parse() return value, for
 * audit events: "ok", "too_large", "malformed", "unsupported",
 * "unknown_key", "key_rejected", "bad_signature", "expired", "not_for_us",
 * "internal", "no_memory", "too_many_keys", or "error". Static strings.
 */
const char *jwt_error_name(int err);

#endif
