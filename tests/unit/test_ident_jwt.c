// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for userspace/ident_jwt.c.
 *
 * Keys are generated here with OpenSSL at start-up (RSA 2048 x3, RSA 1024,
 * P-256 x2, Ed25519 x2), the issuer's JWKS is built from their public
 * halves, and every token is signed by the small signer below. The clock is
 * injected (NOW), so no token ever expires under the tests.
 *
 * The table in test_rows() holds every case of ../shared/cases/jwt.md
 * (rows named "mdNN-...", NN being the case number) and our own; each row
 * counts as one test. Cases that need a special JWKS or a generated
 * payload follow as functions.
 *
 *   test_ident_jwt                      run the tests
 *   test_ident_jwt --write-corpus DIR   also write fuzz seeds to DIR:
 *       sig-<row>   for unmutated EdDSA rows: "!" header "\n" payload,
 *                   which tests/fuzz/fuzz_jwt.c signs itself with its fixed
 *                   Ed25519 key ("ed1"), so they reach the claim checks
 *                   under fuzzing with the verdict they get here
 *       tok-<row>   for every other row: the token as verified here
 *       jwks-<name> JWKS texts
 *   tok- seeds are signed by this run's keys, so rewriting the corpus
 *   changes their bytes (not what they exercise); sig- and jwks- refusal
 *   seeds are stable apart from the key material they carry.
 */
#include "ident_jwt.h"
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#define NOW      INT64_C(1750000000)   /* the fixed clock: 2025-06-15T15:06:40Z */
#define ISSUER   "https://idp.example"
#define AUDIENCE "urn:agentgate"

static const char *corpus_dir;

static void must(int ok)
{
	if (!ok) {
		ERR_print_errors_fp(stderr);
		abort();
	}
}

/* ======================================================================
 * Policies: POL_MD is exactly the issuer of jwt.md
 * ====================================================================== */

static const char *const MD_ALGS[] = { "RS256", "ES256", "EdDSA" };
static const char *const PS_ALGS[] = { "RS256", "PS256", "ES256", "EdDSA" };
static const char *const ED_ALGS[] = { "Ed25519" };
static const char *const HS_ALGS[] = { "HS256", "none", "RS256" };   /* a bad policy */
static const char *const AUDS[] = { AUDIENCE };
static const char *const AUDS2[] = { "urn:first", AUDIENCE };

static const struct jwt_policy POL_MD = {
	.issuer = ISSUER, .audiences = AUDS, .naud = 1, .algs = MD_ALGS, .nalgs = 3,
	.typ = "at+jwt", .leeway_s = 60, .max_age_s = 3600, .now = NOW,
};
static const struct jwt_policy POL_PS = {
	.issuer = ISSUER, .audiences = AUDS, .naud = 1, .algs = PS_ALGS, .nalgs = 4,
	.typ = "at+jwt", .leeway_s = 60, .max_age_s = 3600, .now = NOW,
};
static const struct jwt_policy POL_ED25519 = {
	.issuer = ISSUER, .audiences = AUDS, .naud = 1, .algs = ED_ALGS, .nalgs = 1,
	.typ = "at+jwt", .leeway_s = 60, .max_age_s = 3600, .now = NOW,
};
static const struct jwt_policy POL_HS = {
	.issuer = ISSUER, .audiences = AUDS, .naud = 1, .algs = HS_ALGS, .nalgs = 3,
	.typ = "at+jwt", .leeway_s = 60, .max_age_s = 3600, .now = NOW,
};
static const struct jwt_policy POL_SINGLE_AUD = {
	.issuer = ISSUER, .audiences = AUDS, .naud = 1, .single_aud = true, .algs = MD_ALGS,
	.nalgs = 3, .typ = "at+jwt", .leeway_s = 60, .max_age_s = 3600, .now = NOW,
};
static const struct jwt_policy POL_TWO_AUDS = {
	.issuer = ISSUER, .audiences = AUDS2, .naud = 2, .algs = MD_ALGS, .nalgs = 3,
	.typ = "at+jwt", .leeway_s = 60, .max_age_s = 3600, .now = NOW,
};
/* typ NULL, no age limit: any known kind, RFC 9068 claims optional. */
static const struct jwt_policy POL_ANY = {
	.issuer = ISSUER, .audiences = AUDS, .naud = 1, .typ = NULL, .leeway_s = 0, .now = NOW,
};
/* JWT-SVID / Kubernetes style. */
static const struct jwt_policy POL_SVID = {
	.issuer = ISSUER, .audiences = AUDS, .naud = 1, .algs = MD_ALGS, .nalgs = 3,
	.typ = "JWT", .leeway_s = 60, .max_age_s = 3600, .now = NOW,
};
static const struct jwt_policy POL_ROLES = {
	.issuer = ISSUER, .audiences = AUDS, .naud = 1, .algs = MD_ALGS, .nalgs = 3,
	.typ = "at+jwt", .groups_claim = "roles", .leeway_s = 60, .max_age_s = 3600, .now = NOW,
};

/* ======================================================================
 * Keys, JWKS, signer
 * ====================================================================== */

static struct {
	EVP_PKEY *rsa, *rsa2, *rsa1024, *ec, *ed;
	EVP_PKEY *evil_rsa, *evil_ec, *evil_ed;   /* the attacker's */
	char *rsa_pem;                            /* public PEM of rsa, the HMAC "key" of case 8 */
	size_t rsa_pem_len;
	unsigned char rsa_n[512];                 /* n of rsa, the HMAC "key" of case 38 */
	size_t rsa_n_len;
	char *jwks_text;
	struct jwks *jwks;                        /* the issuer's set, see keys_init() */
} K;

static char *b64url(const unsigned char *p, size_t n)
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

static char *b64url_str(const char *s)
{
	return b64url((const unsigned char *)s, strlen(s));
}

/* Strict inverse of b64url() for the test's own tokens. */
static unsigned char *unb64url(const char *s, size_t n, size_t *outlen)
{
	unsigned char *out = malloc(n + 1);
	uint32_t acc = 0;
	int bits = 0;
	size_t o = 0;

	must(out != NULL);
	for (size_t i = 0; i < n; i++) {
		const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
		const char *c = memchr(a, s[i], 64);

		must(c != NULL);
		acc = acc << 6 | (uint32_t)(c - a);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	*outlen = o;
	return out;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	must(n >= 0);
	return s;
}

static char *bn_b64(const BIGNUM *bn, int pad)
{
	unsigned char buf[1024];
	int n = pad ? BN_bn2binpad(bn, buf, pad) : BN_bn2bin(bn, buf);

	must(n > 0);
	return b64url(buf, (size_t)n);
}

/* The public JWK of pkey, with kid, and alg when not NULL. */
static json_t *jwk_of(EVP_PKEY *pkey, const char *kid, const char *alg)
{
	json_t *j = json_object();
	char *a = NULL, *b = NULL;

	must(j != NULL);
	if (EVP_PKEY_is_a(pkey, "RSA")) {
		BIGNUM *n = NULL, *e = NULL;

		must(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n) == 1);
		must(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e) == 1);
		a = bn_b64(n, 0);
		b = bn_b64(e, 0);
		json_object_set_new(j, "kty", json_string("RSA"));
		json_object_set_new(j, "n", json_string(a));
		json_object_set_new(j, "e", json_string(b));
		BN_free(n);
		BN_free(e);
	} else if (EVP_PKEY_is_a(pkey, "EC")) {
		BIGNUM *x = NULL, *y = NULL;

		must(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, &x) == 1);
		must(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &y) == 1);
		a = bn_b64(x, 32);
		b = bn_b64(y, 32);
		json_object_set_new(j, "kty", json_string("EC"));
		json_object_set_new(j, "crv", json_string("P-256"));
		json_object_set_new(j, "x", json_string(a));
		json_object_set_new(j, "y", json_string(b));
		BN_free(x);
		BN_free(y);
	} else {
		unsigned char raw[32];
		size_t n = sizeof(raw);

		must(EVP_PKEY_get_raw_public_key(pkey, raw, &n) == 1 && n == 32);
		a = b64url(raw, n);
		json_object_set_new(j, "kty", json_string("OKP"));
		json_object_set_new(j, "crv", json_string("Ed25519"));
		json_object_set_new(j, "x", json_string(a));
	}
	if (kid)
		json_object_set_new(j, "kid", json_string(kid));
	if (alg)
		json_object_set_new(j, "alg", json_string(alg));
	json_object_set_new(j, "use", json_string("sig"));
	free(a);
	free(b);
	return j;
}

/* {"keys": [the given JWKs]} as text; steals the references. */
static char *jwks_of(json_t **jwks, size_t n)
{
	json_t *arr = json_array(), *root;
	char *s;

	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, jwks[i]);
	root = json_pack("{s:o}", "keys", arr);
	must(root != NULL);
	s = json_dumps(root, JSON_COMPACT);
	must(s != NULL);
	json_decref(root);
	return s;
}

static void seed(const char *prefix, const char *name, const void *buf, size_t len)
{
	char path[512];
	int fd;

	if (!corpus_dir)
		return;
	if (snprintf(path, sizeof(path), "%s/%s%s", corpus_dir, prefix, name) >= (int)sizeof(path))
		abort();
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, buf, len) != (ssize_t)len) {
		fprintf(stderr, "write-corpus: '%s': %s\n", path, strerror(errno));
		exit(2);
	}
	close(fd);
}

static struct jwks *parse_or_die(const char *text)
{
	struct jwks *set = NULL;
	char why[256];
	int err = jwks_parse(text, strlen(text), &set, why, sizeof(why));

	if (err)
		fprintf(stderr, "jwks_parse: %d %s\n", err, why);
	must(err == 0);
	return set;
}

static void keys_init(void)
{
	BIO *bio;
	BIGNUM *n = NULL;
	char *pem;
	long pem_len;

	must((K.rsa = EVP_RSA_gen(2048)) != NULL);
	must((K.rsa2 = EVP_RSA_gen(2048)) != NULL);
	must((K.evil_rsa = EVP_RSA_gen(2048)) != NULL);
	must((K.rsa1024 = EVP_RSA_gen(1024)) != NULL);
	must((K.ec = EVP_EC_gen("P-256")) != NULL);
	must((K.evil_ec = EVP_EC_gen("P-256")) != NULL);
	must((K.ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")) != NULL);
	must((K.evil_ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")) != NULL);

	must((bio = BIO_new(BIO_s_mem())) != NULL);
	must(PEM_write_bio_PUBKEY(bio, K.rsa) == 1);
	pem_len = BIO_get_mem_data(bio, &pem);
	must(pem_len > 0 && (K.rsa_pem = malloc((size_t)pem_len)) != NULL);
	memcpy(K.rsa_pem, pem, (size_t)pem_len);
	K.rsa_pem_len = (size_t)pem_len;
	BIO_free(bio);
	must(EVP_PKEY_get_bn_param(K.rsa, OSSL_PKEY_PARAM_RSA_N, &n) == 1);
	K.rsa_n_len = (size_t)BN_bn2bin(n, K.rsa_n);
	BN_free(n);

	/* The issuer's set: 5 usable keys, and rs1024 refused (jwt.md 31).
	 * rsx has no alg, so it may serve RS256 and PS256 alike. */
	json_t *set[] = {
		jwk_of(K.rsa, "rs1", "RS256"),
		jwk_of(K.rsa2, "ps1", "PS256"),
		jwk_of(K.rsa2, "rsx", NULL),
		jwk_of(K.ec, "ec1", "ES256"),
		jwk_of(K.ed, "ed1", "EdDSA"),
		jwk_of(K.rsa1024, "rs1024", "RS256"),
	};
	K.jwks_text = jwks_of(set, sizeof(set) / sizeof(set[0]));
	K.jwks = parse_or_die(K.jwks_text);
	seed("jwks-", "issuer", K.jwks_text, strlen(K.jwks_text));
}

static void keys_free(void)
{
	EVP_PKEY_free(K.rsa);
	EVP_PKEY_free(K.rsa2);
	EVP_PKEY_free(K.rsa1024);
	EVP_PKEY_free(K.ec);
	EVP_PKEY_free(K.ed);
	EVP_PKEY_free(K.evil_rsa);
	EVP_PKEY_free(K.evil_ec);
	EVP_PKEY_free(K.evil_ed);
	free(K.rsa_pem);
	free(K.jwks_text);
	jwks_free(K.jwks);
}

enum sigkind {
	S_RAW,          /* no signing: the row's hdr is the whole token */
	S_RS256, S_PS256, S_ES256, S_EDDSA,
	S_ES256_DER,    /* ES256 left in OpenSSL's DER form (jwt.md 29) */
	S_ES256_ZERO,   /* r = 0, s = 0 (jwt.md 30) */
	S_HS256_PEM,    /* HMAC keyed with the RSA public PEM (jwt.md 8) */
	S_HS256_N,      /* HMAC keyed with the RSA n bytes (jwt.md 38) */
	S_HS256_EMPTY,  /* HMAC with an empty key (jwt.md 10) */
	S_NONE,         /* empty signature */
	S_JUNK,         /* 64 bytes of 0x41 */
};

static unsigned char *sign_bytes(enum sigkind how, EVP_PKEY *key, const char *msg, size_t mlen,
				 size_t *slen)
{
	unsigned char *sig = NULL;
	size_t n = 0;

	switch (how) {
	case S_NONE:
		must((sig = malloc(1)) != NULL);
		break;
	case S_JUNK:
	case S_ES256_ZERO:
		must((sig = malloc(n = 64)) != NULL);
		memset(sig, how == S_JUNK ? 0x41 : 0, n);
		break;
	case S_HS256_PEM:
	case S_HS256_N:
	case S_HS256_EMPTY: {
		const void *k = how == S_HS256_PEM ? (const void *)K.rsa_pem :
				how == S_HS256_N ? (const void *)K.rsa_n : (const void *)"";
		int kl = how == S_HS256_PEM ? (int)K.rsa_pem_len : how == S_HS256_N ? (int)K.rsa_n_len : 0;
		unsigned int l = 32;

		must((sig = calloc(1, 32)) != NULL);
		n = 32;
		if (!HMAC(EVP_sha256(), k, kl, (const unsigned char *)msg, mlen, sig, &l))
			ERR_clear_error();   /* an empty HMAC key may be refused; zeros do */
		break;
	}
	default: {
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		EVP_PKEY_CTX *pctx = NULL;

		must(md != NULL);
		must(EVP_DigestSignInit_ex(md, &pctx, how == S_EDDSA ? NULL : "SHA256", NULL, NULL,
					   key, NULL) == 1);
		if (how == S_PS256) {
			must(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0);
			must(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) > 0);
		}
		must(EVP_DigestSign(md, NULL, &n, (const unsigned char *)msg, mlen) == 1);
		must((sig = malloc(n)) != NULL);
		must(EVP_DigestSign(md, sig, &n, (const unsigned char *)msg, mlen) == 1);
		EVP_MD_CTX_free(md);
		if (how == S_ES256) {   /* DER -> raw r||s, as JWS wants it */
			const unsigned char *p = sig;
			ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)n);
			const BIGNUM *r, *s;

			must(es != NULL);
			ECDSA_SIG_get0(es, &r, &s);
			must(BN_bn2binpad(r, sig, 32) == 32 && BN_bn2binpad(s, sig + 32, 32) == 32);
			n = 64;
			ECDSA_SIG_free(es);
		}
	}
	}
	*slen = n;
	return sig;
}

/* b64url(hdr) "." b64url(pay) "." b64url(signature by `how`). */
static char *make_token(const char *hdr, const char *pay, enum sigkind how, EVP_PKEY *key)
{
	char *h = b64url_str(hdr), *p = b64url_str(pay);
	char *signing = xasprintf("%s.%s", h, p), *s, *tok;
	size_t slen;
	unsigned char *sig = sign_bytes(how, key, signing, strlen(signing), &slen);

	s = b64url(sig, slen);
	tok = xasprintf("%s.%s", signing, s);
	free(h);
	free(p);
	free(signing);
	free(sig);
	free(s);
	return tok;
}

/* ======================================================================
 * Claims and headers used by the rows. Times are relative to NOW =
 * 1750000000; each literal's comment says what it is.
 * ====================================================================== */

#define HDR(alg, kid) "{\"alg\":\"" alg "\",\"typ\":\"at+jwt\",\"kid\":\"" kid "\"}"
#define H_RS HDR("RS256", "rs1")
#define H_ES HDR("ES256", "ec1")
#define H_ED HDR("EdDSA", "ed1")
#define BASE_NO_ISS "\"sub\":\"agent-a\",\"client_id\":\"agent-a\",\"jti\":\"id-1\""
#define BASE "\"iss\":\"" ISSUER "\"," BASE_NO_ISS
#define AUD_OK "\"aud\":\"" AUDIENCE "\""
#define TIMES_OK "\"iat\":1749999900,\"exp\":1750000300"   /* NOW-100, NOW+300 */
#define PAY(...) "{" BASE "," __VA_ARGS__ "}"
#define GOOD PAY(AUD_OK "," TIMES_OK)

/* ---- mutations of a finished token ---- */

static char *seg(const char *tok, int which, size_t *n)   /* pointer to segment `which` */
{
	const char *p = tok;

	for (int i = 0; i < which; i++)
		p = strchr(p, '.') + 1;
	*n = strcspn(p, ".");
	return (char *)p;
}

static void mut_flip_sig_bit(char **tok)   /* jwt.md 4 */
{
	size_t n;
	char *s = seg(*tok, 2, &n);

	s[n / 2] = s[n / 2] == 'A' ? 'B' : 'A';   /* a middle char: one or two bits differ */
}

static void mut_sub_admin(char **tok)      /* jwt.md 5: new payload, old signature */
{
	size_t hn, sn;
	char *h = seg(*tok, 0, &hn), *s = seg(*tok, 2, &sn), *t;
	char *p = b64url_str("{\"iss\":\"" ISSUER "\",\"sub\":\"admin\",\"client_id\":\"agent-a\","
			     "\"jti\":\"id-1\"," AUD_OK "," TIMES_OK "}");

	t = xasprintf("%.*s.%s.%.*s", (int)hn, h, p, (int)sn, s);
	free(p);
	free(*tok);
	*tok = t;
}

static void mut_append_segment(char **tok) /* jwt.md 32 */
{
	char *t = xasprintf("%s.%s", *tok, "e30");
	free(*tok);
	*tok = t;
}

static void mut_sig_std_b64(char **tok)    /* jwt.md 33: standard alphabet, '=' padding */
{
	size_t sn, raw_len;
	char *s = seg(*tok, 2, &sn), *t;
	unsigned char *raw = unb64url(s, sn, &raw_len);
	unsigned char std[1024];
	int n = EVP_EncodeBlock(std, raw, (int)raw_len);

	must(n > 0 && std[n - 1] == '=');
	t = xasprintf("%.*s%s", (int)(s - *tok), *tok, (char *)std);
	free(raw);
	free(*tok);
	*tok = t;
}

static void resign_sig(char **tok, int delta)   /* signature one byte shorter / longer */
{
	size_t sn, raw_len;
	char *s = seg(*tok, 2, &sn), *enc, *t;
	unsigned char *raw = unb64url(s, sn, &raw_len);

	raw = realloc(raw, raw_len + 1);
	must(raw != NULL);
	raw[raw_len] = 0x01;
	enc = b64url(raw, (size_t)((ssize_t)raw_len + delta));
	t = xasprintf("%.*s%s", (int)(s - *tok), *tok, enc);
	free(raw);
	free(enc);
	free(*tok);
	*tok = t;
}

static void mut_sig_short(char **tok) { resign_sig(tok, -1); }
static void mut_sig_long(char **tok) { resign_sig(tok, +1); }

static void mut_cut_1(char **tok) { (*tok)[strlen(*tok) - 1] = '\0'; }
static void mut_cut_2(char **tok) { (*tok)[strlen(*tok) - 2] = '\0'; }

static void mut_drop_sig(char **tok)           /* "h.p" */
{
	*strrchr(*tok, '.') = '\0';
}

static void mut_empty_sig(char **tok)          /* "h.p." */
{
	strrchr(*tok, '.')[1] = '\0';
}

static void mut_header_only(char **tok)        /* "h" */
{
	*strchr(*tok, '.') = '\0';
}

static void mut_cut_in_payload(char **tok)     /* "h.pp" with the rest gone */
{
	size_t n;
	char *p = seg(*tok, 1, &n);

	p[n / 2] = '\0';
}

static void mut_empty_header(char **tok)       /* ".p.s" */
{
	char *t = xasprintf("%s", strchr(*tok, '.'));
	free(*tok);
	*tok = t;
}

static void mut_char_in_sig(char **tok, char c)
{
	size_t n;
	char *s = seg(*tok, 2, &n);

	s[n / 3] = c;
}

static void mut_plus(char **tok) { mut_char_in_sig(tok, '+'); }
static void mut_slash(char **tok) { mut_char_in_sig(tok, '/'); }
static void mut_space(char **tok) { mut_char_in_sig(tok, ' '); }
static void mut_nul(char **tok) { mut_char_in_sig(tok, '\x01'); }

static void mut_pad_header(char **tok)         /* "h=.p.s" */
{
	size_t n;
	char *h = seg(*tok, 0, &n);
	char *t = xasprintf("%.*s=%s", (int)n, h, h + n);

	free(*tok);
	*tok = t;
}

static void mut_trailing_newline(char **tok)
{
	char *t = xasprintf("%s\n", *tok);
	free(*tok);
	*tok = t;
}

/*
 * The signature's last character re-encoded with a non-zero unused bit:
 * same decoded bytes, a second spelling of the same token. An RS256
 * signature is 256 bytes = 342 chars, so 4 unused bits; an ES256/EdDSA one
 * is 64 bytes = 86 chars, 4 unused bits too.
 */
static void mut_noncanonical(char **tok)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	char *last = *tok + strlen(*tok) - 1;
	int v = (int)(strchr(a, *last) - a);

	*last = a[v | 1];
	must(v != (v | 1));
}

/* ======================================================================
 * Rows
 * ====================================================================== */

struct row {
	const char *name;               /* "mdNN-..." for case NN of jwt.md */
	const char *hdr, *pay;          /* JSON text; for S_RAW, hdr is the token */
	enum sigkind how;
	EVP_PKEY **key;
	void (*mutate)(char **tok);
	const struct jwt_policy *pol;   /* NULL: POL_MD */
	int want;
};

/* A segment of tok (4+ chars) that appears in why would mean a reason
 * quoting the token. */
static int why_quotes_token(const char *why, const char *tok)
{
	const char *p = tok;

	while (*p) {
		size_t n = strcspn(p, ".");
		char *s = xasprintf("%.*s", (int)(n < 12 ? n : 12), p);
		int hit = n >= 4 && strstr(why, s) != NULL;

		free(s);
		if (hit)
			return 1;
		p += n + (p[n] == '.');
	}
	return 0;
}

/* Count one row as one test, as RUN() does for a function. */
static void account(int before, const char *name)
{
	if (unit_failed_checks == before) {
		unit_passed++;
	} else {
		unit_failed++;
		fprintf(stderr, "FAIL %s\n", name);
	}
}

/* Verify tok under pol with the common checks every verdict must meet. */
static int verify_checked(const char *name, const char *tok, size_t len, const struct jwks *keys,
			  const struct jwt_policy *pol, int want)
{
	struct jwt_claims c;
	char why[256];
	int err = jwt_verify(tok, len, keys, pol, &c, why, sizeof(why));

	if (err != want)
		fprintf(stderr, "  %s: got %d %s ('%s'), want %d %s\n", name, err,
			jwt_error_name(err), why, want, jwt_error_name(want));
	CHECK(err == want);
	CHECK((err == 0) == (why[0] == '\0'));
	CHECK(!why_quotes_token(why, tok));
	CHECK(strstr(why, "dev/null") == NULL && strstr(why, "admin") == NULL);
	CHECK(strcmp(jwt_error_name(err), "error") != 0);
	CHECK(ERR_peek_error() == 0);   /* nothing left in the caller's queue */
	if (err == 0) {
		CHECK_STR(c.iss, ISSUER);
		CHECK(c.sub && c.sub[0] && c.naud >= 1 && c.json && c.alg);
	} else {
		CHECK(c.json == NULL && c.iss == NULL && c.aud == NULL);
	}
	jwt_claims_free(&c);
	CHECK(c.json == NULL);
	return err;
}

static void run_row(const struct row *r)
{
	int before = unit_failed_checks;
	char *tok;

	if (r->how == S_RAW)
		tok = xasprintf("%s", r->hdr);
	else
		tok = make_token(r->hdr, r->pay, r->how, r->key ? *r->key : NULL);
	if (r->mutate)
		r->mutate(&tok);
	/* An unmutated EdDSA row is worth most to the fuzzer in its sign mode,
	 * where it reaches the claim checks; any other row as the token. */
	if (r->how == S_EDDSA && !r->mutate && corpus_dir) {
		char *s = xasprintf("!%s\n%s", r->hdr, r->pay);

		seed("sig-", r->name, s, strlen(s));
		free(s);
	} else {
		seed("tok-", r->name, tok, strlen(tok));
	}
	verify_checked(r->name, tok, strlen(tok), K.jwks, r->pol ? r->pol : &POL_MD, r->want);
	free(tok);
	account(before, r->name);
}

static void test_rows(void)
{
	char kid256[JWT_KID_MAX + 1], kid257[JWT_KID_MAX + 2];
	char *h_kid256, *h_kid257;

	memset(kid256, 'k', sizeof(kid256) - 1);
	kid256[sizeof(kid256) - 1] = '\0';
	memset(kid257, 'k', sizeof(kid257) - 1);
	kid257[sizeof(kid257) - 1] = '\0';
	h_kid256 = xasprintf("{\"alg\":\"RS256\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", kid256);
	h_kid257 = xasprintf("{\"alg\":\"RS256\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", kid257);

	const struct row rows[] = {
	/* ---- ../shared/cases/jwt.md, in its order ---- */
	{ "md01-valid-rs256", H_RS, GOOD, S_RS256, &K.rsa, NULL, NULL, 0 },
	{ "md02-valid-es256-raw", H_ES, GOOD, S_ES256, &K.ec, NULL, NULL, 0 },
	{ "md03-valid-eddsa", H_ED, GOOD, S_EDDSA, &K.ed, NULL, NULL, 0 },
	{ "md04-sig-bit-flip", H_RS, GOOD, S_RS256, &K.rsa, mut_flip_sig_bit, NULL, -EBADMSG },
	{ "md04-sig-bit-flip-eddsa", H_ED, GOOD, S_EDDSA, &K.ed, mut_flip_sig_bit, NULL, -EBADMSG },
	{ "md05-payload-changed-sub-admin", H_RS, GOOD, S_RS256, &K.rsa, mut_sub_admin, NULL, -EBADMSG },
	/* An empty third segment is refused as malformed before alg is read;
	 * the -sig variants give none a signature so the alg rule is what
	 * refuses it. */
	{ "md06-alg-none-empty-sig", "{\"alg\":\"none\",\"typ\":\"at+jwt\"}", GOOD, S_NONE, NULL, NULL,
	  NULL, -EINVAL },
	{ "md06-alg-none-with-sig", "{\"alg\":\"none\",\"typ\":\"at+jwt\"}", GOOD, S_JUNK, NULL, NULL,
	  NULL, -ENOTSUP },
	{ "md06-alg-none-policy-lists-none", "{\"alg\":\"none\",\"typ\":\"at+jwt\"}", GOOD, S_JUNK, NULL,
	  NULL, &POL_HS, -ENOTSUP },
	{ "md07-alg-NoNe-empty-sig", "{\"alg\":\"NoNe\",\"typ\":\"at+jwt\"}", GOOD, S_NONE, NULL, NULL,
	  NULL, -EINVAL },
	{ "md07-alg-NoNe-with-sig", "{\"alg\":\"NoNe\",\"typ\":\"at+jwt\"}", GOOD, S_JUNK, NULL, NULL,
	  NULL, -ENOTSUP },
	{ "md08-hs256-rsa-pem", HDR("HS256", "rs1"), GOOD, S_HS256_PEM, NULL, NULL, NULL, -ENOTSUP },
	{ "md08-hs256-rsa-pem-policy-lists-hs256", HDR("HS256", "rs1"), GOOD, S_HS256_PEM, NULL, NULL,
	  &POL_HS, -ENOTSUP },
	{ "md09-kid-unknown", HDR("RS256", "rs9"), GOOD, S_RS256, &K.rsa, NULL, NULL, -ENOKEY },
	{ "md10-kid-path-hs256-empty-key", HDR("HS256", "../../../../dev/null"), GOOD, S_HS256_EMPTY,
	  NULL, NULL, NULL, -ENOTSUP },
	{ "md10-kid-path-rs256", HDR("RS256", "../../../../dev/null"), GOOD, S_RS256, &K.rsa, NULL,
	  NULL, -ENOKEY },
	{ "md11-jku-attacker-signed",
	  "{\"alg\":\"RS256\",\"typ\":\"at+jwt\",\"kid\":\"rs1\",\"jku\":\"https://attacker.example/jwks\"}",
	  GOOD, S_RS256, &K.evil_rsa, NULL, NULL, -EBADMSG },
	/* md12 (embedded jwk) needs the attacker's key in the header: test_jwk_header(). */
	{ "md13-x5u-attacker-signed",
	  "{\"alg\":\"RS256\",\"typ\":\"at+jwt\",\"kid\":\"rs1\",\"x5u\":\"https://attacker.example/c.pem\"}",
	  GOOD, S_RS256, &K.evil_rsa, NULL, NULL, -EBADMSG },
	{ "md14-exp-an-hour-ago", H_ED, PAY(AUD_OK ",\"iat\":1749996350,\"exp\":1749996400"), /* NOW-3650, NOW-3600 */
	  S_EDDSA, &K.ed, NULL, NULL, -EKEYEXPIRED },
	{ "md15-exp-30s-ago-within-leeway", H_ED, PAY(AUD_OK ",\"iat\":1749999000,\"exp\":1749999970"), /* NOW-1000, NOW-30 */
	  S_EDDSA, &K.ed, NULL, NULL, 0 },
	{ "md16-nbf-in-10min", H_ED, PAY(AUD_OK "," TIMES_OK ",\"nbf\":1750000600"), /* NOW+600 */
	  S_EDDSA, &K.ed, NULL, NULL, -EACCES },
	{ "md17-iat-in-an-hour", H_ED, PAY(AUD_OK ",\"iat\":1750003600,\"exp\":1750004000"), /* NOW+3600, NOW+4000 */
	  S_EDDSA, &K.ed, NULL, NULL, -EACCES },
	{ "md18-exp-missing", H_ED, PAY(AUD_OK ",\"iat\":1749999900"), S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "md19-exp-string", H_ED, PAY(AUD_OK ",\"iat\":1749999900,\"exp\":\"9999999999\""), S_EDDSA,
	  &K.ed, NULL, NULL, -EINVAL },
	{ "md20-aud-array-with-ours", H_ED, PAY("\"aud\":[\"other\",\"" AUDIENCE "\"]," TIMES_OK),
	  S_EDDSA, &K.ed, NULL, NULL, 0 },
	{ "md20-aud-array-single-aud-policy", H_ED, PAY("\"aud\":[\"other\",\"" AUDIENCE "\"]," TIMES_OK),
	  S_EDDSA, &K.ed, NULL, &POL_SINGLE_AUD, -EACCES },
	{ "md21-aud-array-without-ours", H_ED, PAY("\"aud\":[\"other\",\"urn:else\"]," TIMES_OK),
	  S_EDDSA, &K.ed, NULL, NULL, -EACCES },
	{ "md22-aud-prefix-trick", H_ED, PAY("\"aud\":\"" AUDIENCE "-evil\"," TIMES_OK), S_EDDSA,
	  &K.ed, NULL, NULL, -EACCES },
	{ "md23-aud-missing", H_ED, PAY(TIMES_OK), S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "md24-iss-trailing-slash", H_ED,
	  "{\"iss\":\"" ISSUER "/\"," BASE_NO_ISS "," AUD_OK "," TIMES_OK "}", S_EDDSA, &K.ed, NULL,
	  NULL, -EACCES },
	{ "md25-typ-JWT-where-at+jwt-required", "{\"alg\":\"EdDSA\",\"typ\":\"JWT\",\"kid\":\"ed1\"}",
	  GOOD, S_EDDSA, &K.ed, NULL, NULL, -EACCES },
	{ "md26-crit-unknown-extension",
	  "{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\",\"kid\":\"ed1\",\"crit\":[\"exp-ext\"],\"exp-ext\":1}",
	  GOOD, S_EDDSA, &K.ed, NULL, NULL, -ENOTSUP },
	{ "md27-crit-empty", "{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\",\"kid\":\"ed1\",\"crit\":[]}",
	  GOOD, S_EDDSA, &K.ed, NULL, NULL, -ENOTSUP },
	{ "md28-es256-with-kid-of-rsa-key", HDR("ES256", "rs1"), GOOD, S_ES256, &K.ec, NULL, NULL,
	  -EKEYREJECTED },
	{ "md29-es256-der-signature", H_ES, GOOD, S_ES256_DER, &K.ec, NULL, NULL, -EBADMSG },
	{ "md30-es256-r0-s0-psychic", H_ES, GOOD, S_ES256_ZERO, NULL, NULL, NULL, -EBADMSG },
	{ "md31-rsa1024-key", HDR("RS256", "rs1024"), GOOD, S_RS256, &K.rsa1024, NULL, NULL,
	  -EKEYREJECTED },
	{ "md32-fourth-segment", H_RS, GOOD, S_RS256, &K.rsa, mut_append_segment, NULL, -EINVAL },
	{ "md33-sig-standard-base64-padded", H_RS, GOOD, S_RS256, &K.rsa, mut_sig_std_b64, NULL,
	  -EINVAL },
	{ "md34-duplicate-sub-signed", H_ED,
	  "{\"iss\":\"" ISSUER "\",\"sub\":\"agent-a\",\"sub\":\"admin\",\"client_id\":\"agent-a\","
	  "\"jti\":\"id-1\"," AUD_OK "," TIMES_OK "}", S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "md35-nested-cty-JWT", "{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\",\"kid\":\"ed1\",\"cty\":\"JWT\"}",
	  GOOD, S_EDDSA, &K.ed, NULL, NULL, -ENOTSUP },
	/* md36 (88 KB token) is test_size_limit(). */
	{ "md37-jwe-compact-5-segments",
	  "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTCVJRgckCL9kiMT03JGe"
	  ".48V1_ALb6US04U3b.5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6ji.XFBoMYUZodetZdvTiFvSkQ",
	  NULL, S_RAW, NULL, NULL, NULL, -EINVAL },
	{ "md38-hs256-rsa-n-bytes", HDR("HS256", "rs1"), GOOD, S_HS256_N, NULL, NULL, NULL, -ENOTSUP },

	/* ---- time edges (leeway 60, max age 3600) ---- */
	{ "exp-60s-ago-leeway-edge", H_ED, PAY(AUD_OK ",\"iat\":1749999000,\"exp\":1749999940"), /* NOW-60 */
	  S_EDDSA, &K.ed, NULL, NULL, -EKEYEXPIRED },
	{ "exp-59s-ago-within-leeway", H_ED, PAY(AUD_OK ",\"iat\":1749999000,\"exp\":1749999941"), /* NOW-59 */
	  S_EDDSA, &K.ed, NULL, NULL, 0 },
	{ "nbf-60s-ahead-within-leeway", H_ED, PAY(AUD_OK "," TIMES_OK ",\"nbf\":1750000060"),
	  S_EDDSA, &K.ed, NULL, NULL, 0 },
	{ "nbf-61s-ahead", H_ED, PAY(AUD_OK "," TIMES_OK ",\"nbf\":1750000061"), S_EDDSA, &K.ed, NULL,
	  NULL, -EACCES },
	{ "iat-60s-ahead-within-leeway", H_ED, PAY(AUD_OK ",\"iat\":1750000060,\"exp\":1750000300"),
	  S_EDDSA, &K.ed, NULL, NULL, 0 },
	{ "iat-61s-ahead", H_ED, PAY(AUD_OK ",\"iat\":1750000061,\"exp\":1750000300"), S_EDDSA, &K.ed,
	  NULL, NULL, -EACCES },
	{ "max-age-3660s-edge", H_ED, PAY(AUD_OK ",\"iat\":1749996340,\"exp\":1750000300"), /* NOW-3660 */
	  S_EDDSA, &K.ed, NULL, NULL, 0 },
	{ "max-age-3661s-too-old", H_ED, PAY(AUD_OK ",\"iat\":1749996339,\"exp\":1750000300"),
	  S_EDDSA, &K.ed, NULL, NULL, -EKEYEXPIRED },
	{ "iat-missing-with-max-age", H_ED, PAY(AUD_OK ",\"exp\":1750000300"), S_EDDSA, &K.ed, NULL,
	  NULL, -EINVAL },
	{ "iat-missing-no-age-limit", "{\"alg\":\"EdDSA\",\"kid\":\"ed1\"}",
	  "{\"iss\":\"" ISSUER "\",\"sub\":\"k8s\"," AUD_OK ",\"exp\":1750000300}", S_EDDSA, &K.ed,
	  NULL, &POL_ANY, 0 },
	{ "exp-expired-leeway-0", "{\"alg\":\"EdDSA\",\"kid\":\"ed1\"}",
	  "{\"iss\":\"" ISSUER "\",\"sub\":\"k8s\"," AUD_OK ",\"exp\":1750000000}", S_EDDSA, &K.ed,
	  NULL, &POL_ANY, -EKEYEXPIRED },

	/* ---- NumericDate types and ranges ---- */
	{ "exp-real-integral", H_ED, PAY(AUD_OK ",\"iat\":1749999900,\"exp\":1750000300.0"), S_EDDSA,
	  &K.ed, NULL, NULL, 0 },
	{ "exp-real-exponent", H_ED, PAY(AUD_OK ",\"iat\":1749999900,\"exp\":1.7500003e9"), S_EDDSA,
	  &K.ed, NULL, NULL, 0 },
	{ "exp-real-fraction", H_ED, PAY(AUD_OK ",\"iat\":1749999900,\"exp\":1750000300.5"), S_EDDSA,
	  &K.ed, NULL, NULL, -EINVAL },
	{ "exp-negative", H_ED, PAY(AUD_OK ",\"iat\":1749999900,\"exp\":-1"), S_EDDSA, &K.ed, NULL,
	  NULL, -EINVAL },
	{ "exp-int64-max", H_ED, PAY(AUD_OK ",\"iat\":1749999900,\"exp\":9223372036854775807"),
	  S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "exp-after-year-9999", H_ED, PAY(AUD_OK ",\"iat\":1749999900,\"exp\":253402300800"),
	  S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "exp-1e400", H_ED, PAY(AUD_OK ",\"iat\":1749999900,\"exp\":1e400"), S_EDDSA, &K.ed, NULL,
	  NULL, -EINVAL },
	{ "exp-real-huge", H_ED, PAY(AUD_OK ",\"iat\":1749999900,\"exp\":1e300"), S_EDDSA, &K.ed, NULL,
	  NULL, -EINVAL },
	{ "exp-true", H_ED, PAY(AUD_OK ",\"iat\":1749999900,\"exp\":true"), S_EDDSA, &K.ed, NULL, NULL,
	  -EINVAL },
	{ "exp-null", H_ED, PAY(AUD_OK ",\"iat\":1749999900,\"exp\":null"), S_EDDSA, &K.ed, NULL, NULL,
	  -EINVAL },
	{ "nbf-string", H_ED, PAY(AUD_OK "," TIMES_OK ",\"nbf\":\"0\""), S_EDDSA, &K.ed, NULL, NULL,
	  -EINVAL },
	{ "iat-array", H_ED, PAY(AUD_OK ",\"exp\":1750000300,\"iat\":[1]"), S_EDDSA, &K.ed, NULL, NULL,
	  -EINVAL },

	/* ---- iss, aud, sub, RFC 9068 claims ---- */
	{ "iss-other", H_ED, "{\"iss\":\"https://other.example\"," BASE_NO_ISS "," AUD_OK "," TIMES_OK "}",
	  S_EDDSA, &K.ed, NULL, NULL, -EACCES },
	{ "iss-case-differs", H_ED, "{\"iss\":\"https://IDP.example\"," BASE_NO_ISS "," AUD_OK ","
	  TIMES_OK "}", S_EDDSA, &K.ed, NULL, NULL, -EACCES },
	{ "iss-missing", H_ED, "{" BASE_NO_ISS "," AUD_OK "," TIMES_OK "}", S_EDDSA, &K.ed, NULL, NULL,
	  -EINVAL },
	{ "iss-number", H_ED, "{\"iss\":1," BASE_NO_ISS "," AUD_OK "," TIMES_OK "}", S_EDDSA, &K.ed,
	  NULL, NULL, -EINVAL },
	{ "aud-empty-array", H_ED, PAY("\"aud\":[]," TIMES_OK), S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "aud-non-string-element", H_ED, PAY("\"aud\":[\"" AUDIENCE "\",1]," TIMES_OK), S_EDDSA,
	  &K.ed, NULL, NULL, -EINVAL },
	{ "aud-object", H_ED, PAY("\"aud\":{\"" AUDIENCE "\":1}," TIMES_OK), S_EDDSA, &K.ed, NULL, NULL,
	  -EINVAL },
	{ "aud-case-differs", H_ED, PAY("\"aud\":\"URN:agentgate\"," TIMES_OK), S_EDDSA, &K.ed, NULL,
	  NULL, -EACCES },
	{ "aud-second-policy-audience", H_ED, PAY("\"aud\":[\"x\",\"" AUDIENCE "\"]," TIMES_OK),
	  S_EDDSA, &K.ed, NULL, &POL_TWO_AUDS, 0 },
	{ "aud-single-string-single-aud-policy", H_ED, GOOD, S_EDDSA, &K.ed, NULL, &POL_SINGLE_AUD, 0 },
	{ "sub-missing", H_ED, "{\"iss\":\"" ISSUER "\",\"client_id\":\"a\",\"jti\":\"j\"," AUD_OK ","
	  TIMES_OK "}", S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "sub-empty", H_ED, "{\"iss\":\"" ISSUER "\",\"sub\":\"\",\"client_id\":\"a\",\"jti\":\"j\","
	  AUD_OK "," TIMES_OK "}", S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	/* sub/client_id/azp of 256 bytes or more: refused, not cut short to
	 * equal another name (review, stop 26) */
	{ "sub-255", H_ED, "{\"iss\":\"" ISSUER "\",\"sub\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"client_id\":\"a\",\"jti\":\"j\","
	  AUD_OK "," TIMES_OK "}", S_EDDSA, &K.ed, NULL, NULL, 0 },
	{ "sub-256", H_ED, "{\"iss\":\"" ISSUER "\",\"sub\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"client_id\":\"a\",\"jti\":\"j\","
	  AUD_OK "," TIMES_OK "}", S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "client_id-256", H_ED, "{\"iss\":\"" ISSUER "\",\"sub\":\"a\",\"client_id\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"jti\":\"j\","
	  AUD_OK "," TIMES_OK "}", S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "azp-256", H_ED, PAY(AUD_OK "," TIMES_OK ",\"azp\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\""), S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "sub-number", H_ED, "{\"iss\":\"" ISSUER "\",\"sub\":7,\"client_id\":\"a\",\"jti\":\"j\","
	  AUD_OK "," TIMES_OK "}", S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "at+jwt-client_id-missing", H_ED, "{\"iss\":\"" ISSUER "\",\"sub\":\"a\",\"jti\":\"j\","
	  AUD_OK "," TIMES_OK "}", S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "at+jwt-jti-missing", H_ED, "{\"iss\":\"" ISSUER "\",\"sub\":\"a\",\"client_id\":\"a\","
	  AUD_OK "," TIMES_OK "}", S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "azp-number", H_ED, PAY(AUD_OK "," TIMES_OK ",\"azp\":1"), S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "act-string", H_ED, PAY(AUD_OK "," TIMES_OK ",\"act\":\"agent-a\""), S_EDDSA, &K.ed, NULL,
	  NULL, -EINVAL },
	{ "act-without-sub", H_ED, PAY(AUD_OK "," TIMES_OK ",\"act\":{\"iss\":\"x\"}"), S_EDDSA, &K.ed,
	  NULL, NULL, -EINVAL },
	{ "act-duplicate-sub", H_ED, PAY(AUD_OK "," TIMES_OK ",\"act\":{\"sub\":\"a\",\"sub\":\"b\"}"),
	  S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "groups-number", H_ED, PAY(AUD_OK "," TIMES_OK ",\"groups\":5"), S_EDDSA, &K.ed, NULL, NULL,
	  -EINVAL },
	{ "groups-non-string-element", H_ED, PAY(AUD_OK "," TIMES_OK ",\"groups\":[\"a\",null]"),
	  S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "groups-empty-array", H_ED, PAY(AUD_OK "," TIMES_OK ",\"groups\":[]"), S_EDDSA, &K.ed, NULL,
	  NULL, 0 },
	/* Claims are judged only once the signature holds. */
	{ "forged-wrong-iss-is-bad-signature", H_ED,
	  "{\"iss\":\"https://other.example\"," BASE_NO_ISS "," AUD_OK "," TIMES_OK "}", S_EDDSA,
	  &K.evil_ed, NULL, NULL, -EBADMSG },
	{ "forged-expired-is-bad-signature", H_ED, PAY(AUD_OK ",\"iat\":1,\"exp\":2"), S_EDDSA,
	  &K.evil_ed, NULL, NULL, -EBADMSG },

	/* ---- payload shape ---- */
	{ "payload-array", H_ED, "[" GOOD "]", S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "payload-not-json", H_ED, "hello", S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "payload-trailing-data", H_ED, GOOD "x", S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "payload-two-objects", H_ED, GOOD GOOD, S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "payload-nul-escape", H_ED, PAY(AUD_OK "," TIMES_OK ",\"x\":\"a\\u0000b\""), S_EDDSA, &K.ed,
	  NULL, NULL, -EINVAL },
	{ "payload-duplicate-exp", H_ED, PAY(AUD_OK "," TIMES_OK ",\"exp\":1750000300"), S_EDDSA,
	  &K.ed, NULL, NULL, -EINVAL },

	/* ---- header shape and alg ---- */
	{ "header-array", "[\"EdDSA\"]", GOOD, S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "header-not-json", "alg=EdDSA", GOOD, S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "header-duplicate-alg", "{\"alg\":\"EdDSA\",\"alg\":\"none\",\"typ\":\"at+jwt\",\"kid\":\"ed1\"}",
	  GOOD, S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "header-duplicate-kid", "{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\",\"kid\":\"ed1\",\"kid\":\"rs1\"}",
	  GOOD, S_EDDSA, &K.ed, NULL, NULL, -EINVAL },
	{ "header-no-alg", "{\"typ\":\"at+jwt\",\"kid\":\"ed1\"}", GOOD, S_EDDSA, &K.ed, NULL, NULL,
	  -EINVAL },
	{ "header-alg-number", "{\"alg\":256,\"typ\":\"at+jwt\",\"kid\":\"ed1\"}", GOOD, S_EDDSA, &K.ed,
	  NULL, NULL, -EINVAL },
	{ "alg-lowercase-rs256", HDR("rs256", "rs1"), GOOD, S_RS256, &K.rsa, NULL, NULL, -ENOTSUP },
	{ "alg-rs512", HDR("RS512", "rs1"), GOOD, S_RS256, &K.rsa, NULL, NULL, -ENOTSUP },
	{ "alg-es384", HDR("ES384", "ec1"), GOOD, S_ES256, &K.ec, NULL, NULL, -ENOTSUP },
	{ "alg-hs512", HDR("HS512", "rs1"), GOOD, S_HS256_PEM, NULL, NULL, NULL, -ENOTSUP },
	{ "alg-ps256-outside-jwt.md-allowlist", HDR("PS256", "ps1"), GOOD, S_PS256, &K.rsa2, NULL, NULL,
	  -ENOTSUP },
	{ "alg-Ed25519-name-accepted", HDR("Ed25519", "ed1"), GOOD, S_EDDSA, &K.ed, NULL, &POL_ED25519, 0 },
	{ "alg-Ed25519-not-in-jwt.md-allowlist", HDR("Ed25519", "ed1"), GOOD, S_EDDSA, &K.ed, NULL, NULL,
	  -ENOTSUP },
	{ "alg-EdDSA-not-in-Ed25519-allowlist", H_ED, GOOD, S_EDDSA, &K.ed, NULL, &POL_ED25519, -ENOTSUP },
	{ "cty-text", "{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\",\"kid\":\"ed1\",\"cty\":\"text/plain\"}",
	  GOOD, S_EDDSA, &K.ed, NULL, NULL, -ENOTSUP },
	{ "cty-application-jwt",
	  "{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\",\"kid\":\"ed1\",\"cty\":\"application/jwt\"}",
	  GOOD, S_EDDSA, &K.ed, NULL, NULL, -ENOTSUP },
	{ "crit-b64-false", "{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\",\"kid\":\"ed1\",\"b64\":false,"
	  "\"crit\":[\"b64\"]}", GOOD, S_EDDSA, &K.ed, NULL, NULL, -ENOTSUP },
	{ "jku-x5u-x5c-x5t-ignored-legit-signature",
	  "{\"alg\":\"RS256\",\"typ\":\"at+jwt\",\"kid\":\"rs1\",\"jku\":\"https://attacker.example/jwks\","
	  "\"x5u\":\"https://attacker.example/c.pem\",\"x5c\":[\"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\"],"
	  "\"x5t\":\"AAAA\",\"x5t#S256\":\"AAAA\"}", GOOD, S_RS256, &K.rsa, NULL, NULL, 0 },
	{ "x5c-attacker-signed",
	  "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"ec1\",\"x5c\":[\"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\"]}",
	  GOOD, S_ES256, &K.evil_ec, NULL, NULL, -EBADMSG },

	/* ---- typ per policy ---- */
	{ "typ-missing-at+jwt-required", "{\"alg\":\"EdDSA\",\"kid\":\"ed1\"}", GOOD, S_EDDSA, &K.ed,
	  NULL, NULL, -EACCES },
	{ "typ-application-at+jwt", "{\"alg\":\"EdDSA\",\"typ\":\"application/at+jwt\",\"kid\":\"ed1\"}",
	  GOOD, S_EDDSA, &K.ed, NULL, NULL, 0 },
	{ "typ-AT+JWT-case", "{\"alg\":\"EdDSA\",\"typ\":\"AT+JWT\",\"kid\":\"ed1\"}", GOOD, S_EDDSA,
	  &K.ed, NULL, NULL, 0 },
	{ "typ-number", "{\"alg\":\"EdDSA\",\"typ\":1,\"kid\":\"ed1\"}", GOOD, S_EDDSA, &K.ed, NULL,
	  NULL, -EINVAL },
	{ "typ-dpop+jwt-any-policy", "{\"alg\":\"EdDSA\",\"typ\":\"dpop+jwt\",\"kid\":\"ed1\"}", GOOD,
	  S_EDDSA, &K.ed, NULL, &POL_ANY, -EACCES },
	{ "typ-JWT-any-policy", "{\"alg\":\"EdDSA\",\"typ\":\"JWT\",\"kid\":\"ed1\"}", GOOD, S_EDDSA,
	  &K.ed, NULL, &POL_ANY, 0 },
	{ "typ-at+jwt-any-policy", H_ED, GOOD, S_EDDSA, &K.ed, NULL, &POL_ANY, 0 },
	{ "typ-JOSE-svid-policy", "{\"alg\":\"EdDSA\",\"typ\":\"JOSE\",\"kid\":\"ed1\"}",
	  "{\"iss\":\"" ISSUER "\",\"sub\":\"spiffe://td/agent\"," AUD_OK "," TIMES_OK "}", S_EDDSA,
	  &K.ed, NULL, &POL_SVID, 0 },
	{ "typ-absent-svid-policy", "{\"alg\":\"EdDSA\",\"kid\":\"ed1\"}",
	  "{\"iss\":\"" ISSUER "\",\"sub\":\"spiffe://td/agent\"," AUD_OK "," TIMES_OK "}", S_EDDSA,
	  &K.ed, NULL, &POL_SVID, 0 },
	{ "typ-at+jwt-svid-policy", H_ED, GOOD, S_EDDSA, &K.ed, NULL, &POL_SVID, -EACCES },

	/* ---- keys: kid, kty, alg fit ---- */
	{ "kid-missing-several-keys", "{\"alg\":\"RS256\",\"typ\":\"at+jwt\"}", GOOD, S_RS256, &K.rsa,
	  NULL, NULL, -EINVAL },
	{ "kid-number", "{\"alg\":\"RS256\",\"typ\":\"at+jwt\",\"kid\":1}", GOOD, S_RS256, &K.rsa,
	  NULL, NULL, -EINVAL },
	{ "kid-empty", HDR("RS256", ""), GOOD, S_RS256, &K.rsa, NULL, NULL, -EINVAL },
	{ "kid-control-char", HDR("RS256", "rs\\u00011"), GOOD, S_RS256, &K.rsa, NULL, NULL, -EINVAL },
	{ "kid-non-ascii", HDR("RS256", "r\xc3\xa9s1"), GOOD, S_RS256, &K.rsa, NULL, NULL, -EINVAL },
	{ "kid-256-bytes-unknown", h_kid256, GOOD, S_RS256, &K.rsa, NULL, NULL, -ENOKEY },
	{ "kid-257-bytes", h_kid257, GOOD, S_RS256, &K.rsa, NULL, NULL, -EINVAL },
	{ "kid-case-differs", HDR("RS256", "RS1"), GOOD, S_RS256, &K.rsa, NULL, NULL, -ENOKEY },
	{ "eddsa-with-kid-of-ec-key", HDR("EdDSA", "ec1"), GOOD, S_EDDSA, &K.ed, NULL, NULL,
	  -EKEYREJECTED },
	{ "rs256-with-kid-of-ed-key", HDR("RS256", "ed1"), GOOD, S_RS256, &K.rsa, NULL, NULL,
	  -EKEYREJECTED },
	{ "ps256-valid", HDR("PS256", "ps1"), GOOD, S_PS256, &K.rsa2, NULL, &POL_PS, 0 },
	{ "ps256-key-without-alg", HDR("PS256", "rsx"), GOOD, S_PS256, &K.rsa2, NULL, &POL_PS, 0 },
	{ "rs256-key-without-alg", HDR("RS256", "rsx"), GOOD, S_RS256, &K.rsa2, NULL, &POL_PS, 0 },
	{ "ps256-signature-sent-as-rs256", HDR("RS256", "rsx"), GOOD, S_PS256, &K.rsa2, NULL, &POL_PS,
	  -EBADMSG },
	{ "rs256-signature-sent-as-ps256", HDR("PS256", "rsx"), GOOD, S_RS256, &K.rsa2, NULL, &POL_PS,
	  -EBADMSG },
	{ "ps256-header-on-rs256-key", HDR("PS256", "rs1"), GOOD, S_PS256, &K.rsa, NULL, &POL_PS,
	  -EKEYREJECTED },
	{ "rs256-header-on-ps256-key", HDR("RS256", "ps1"), GOOD, S_RS256, &K.rsa2, NULL, &POL_PS,
	  -EKEYREJECTED },
	{ "rs256-wrong-key", H_RS, GOOD, S_RS256, &K.evil_rsa, NULL, NULL, -EBADMSG },
	{ "es256-wrong-key", H_ES, GOOD, S_ES256, &K.evil_ec, NULL, NULL, -EBADMSG },
	{ "eddsa-wrong-key", H_ED, GOOD, S_EDDSA, &K.evil_ed, NULL, NULL, -EBADMSG },

	/* ---- signature lengths ---- */
	{ "es256-sig-63-bytes", H_ES, GOOD, S_ES256, &K.ec, mut_sig_short, NULL, -EBADMSG },
	{ "es256-sig-65-bytes", H_ES, GOOD, S_ES256, &K.ec, mut_sig_long, NULL, -EBADMSG },
	{ "eddsa-sig-63-bytes", H_ED, GOOD, S_EDDSA, &K.ed, mut_sig_short, NULL, -EBADMSG },
	{ "rs256-sig-255-bytes", H_RS, GOOD, S_RS256, &K.rsa, mut_sig_short, NULL, -EBADMSG },
	{ "rs256-sig-257-bytes", H_RS, GOOD, S_RS256, &K.rsa, mut_sig_long, NULL, -EBADMSG },

	/* ---- truncation and encoding ---- */
	{ "truncated-sig-by-1-char", H_RS, GOOD, S_RS256, &K.rsa, mut_cut_1, NULL, -EINVAL },
	/* 342 - 2 chars decode to 255 bytes: well formed, too short. */
	{ "truncated-sig-by-2-chars", H_RS, GOOD, S_RS256, &K.rsa, mut_cut_2, NULL, -EBADMSG },
	{ "truncated-no-signature", H_RS, GOOD, S_RS256, &K.rsa, mut_drop_sig, NULL, -EINVAL },
	{ "truncated-empty-signature", H_RS, GOOD, S_RS256, &K.rsa, mut_empty_sig, NULL, -EINVAL },
	{ "truncated-header-only", H_RS, GOOD, S_RS256, &K.rsa, mut_header_only, NULL, -EINVAL },
	{ "truncated-in-payload", H_RS, GOOD, S_RS256, &K.rsa, mut_cut_in_payload, NULL, -EINVAL },
	{ "empty-header-segment", H_RS, GOOD, S_RS256, &K.rsa, mut_empty_header, NULL, -EINVAL },
	{ "empty-payload-segment", "e30..AAAA", NULL, S_RAW, NULL, NULL, NULL, -EINVAL },
	{ "empty-token", "", NULL, S_RAW, NULL, NULL, NULL, -EINVAL },
	{ "only-dots", "..", NULL, S_RAW, NULL, NULL, NULL, -EINVAL },
	{ "b64-plus-in-sig", H_RS, GOOD, S_RS256, &K.rsa, mut_plus, NULL, -EINVAL },
	{ "b64-slash-in-sig", H_RS, GOOD, S_RS256, &K.rsa, mut_slash, NULL, -EINVAL },
	{ "b64-space-in-sig", H_RS, GOOD, S_RS256, &K.rsa, mut_space, NULL, -EINVAL },
	{ "b64-control-char-in-sig", H_RS, GOOD, S_RS256, &K.rsa, mut_nul, NULL, -EINVAL },
	{ "b64-padding-on-header", H_RS, GOOD, S_RS256, &K.rsa, mut_pad_header, NULL, -EINVAL },
	{ "b64-trailing-newline", H_RS, GOOD, S_RS256, &K.rsa, mut_trailing_newline, NULL, -EINVAL },
	{ "b64-noncanonical-last-char-rs256", H_RS, GOOD, S_RS256, &K.rsa, mut_noncanonical, NULL,
	  -EINVAL },
	{ "b64-noncanonical-last-char-eddsa", H_ED, GOOD, S_EDDSA, &K.ed, mut_noncanonical, NULL,
	  -EINVAL },
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		run_row(&rows[i]);
	free(h_kid256);
	free(h_kid257);
}

/* ======================================================================
 * Cases that need their own JWKS or generated input
 * ====================================================================== */

/* jwt.md 12: the attacker's public key embedded as a jwk header. */
static void test_jwk_header(void)
{
	json_t *evil = jwk_of(K.evil_rsa, NULL, NULL);
	char *evil_text = json_dumps(evil, JSON_COMPACT);
	char *h_nokid = xasprintf("{\"alg\":\"RS256\",\"typ\":\"at+jwt\",\"jwk\":%s}", evil_text);
	char *h_kid = xasprintf("{\"alg\":\"RS256\",\"typ\":\"at+jwt\",\"kid\":\"rs1\",\"jwk\":%s}",
				evil_text);
	json_t *one[] = { jwk_of(K.rsa, "rs1", "RS256") };
	char *one_text = jwks_of(one, 1);
	struct jwks *single = parse_or_die(one_text);
	char *t;

	/* Several keys, no kid: refused before any key is tried. */
	t = make_token(h_nokid, GOOD, S_RS256, K.evil_rsa);
	seed("tok-", "md12-jwk-header-no-kid", t, strlen(t));
	verify_checked("md12-jwk-header-no-kid", t, strlen(t), K.jwks, &POL_MD, -EINVAL);
	/* One key in the set: that key, not the header's, checks the signature. */
	verify_checked("md12-jwk-header-single-key", t, strlen(t), single, &POL_MD, -EBADMSG);
	free(t);
	t = make_token(h_kid, GOOD, S_RS256, K.evil_rsa);
	verify_checked("md12-jwk-header-kid-rs1", t, strlen(t), K.jwks, &POL_MD, -EBADMSG);
	free(t);
	/* And a legitimately signed token is not hurt by the header. */
	t = make_token(h_kid, GOOD, S_RS256, K.rsa);
	verify_checked("md12-jwk-header-legit-signature", t, strlen(t), K.jwks, &POL_MD, 0);
	free(t);
	t = make_token(h_nokid, GOOD, S_RS256, K.rsa);
	verify_checked("md12-jwk-header-legit-single-key", t, strlen(t), single, &POL_MD, 0);
	free(t);

	jwks_free(single);
	free(one_text);
	free(h_nokid);
	free(h_kid);
	free(evil_text);
	json_decref(evil);
}

/* Token length of b64url(h) "." b64url(p) "." 86 (an Ed25519 signature). */
static size_t b64len(size_t n)
{
	return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

/* An EdDSA token of exactly `want` bytes, or NULL if none can be built. */
static char *token_of_length(size_t want)
{
	static const char pre[] = "{" BASE "," AUD_OK "," TIMES_OK ",\"pad\":\"";
	for (size_t sp = 0; sp < 3; sp++) {
		/* spaces in the header move its length by one at a time */
		char *h = xasprintf("{%*s\"alg\":\"EdDSA\",\"typ\":\"at+jwt\",\"kid\":\"ed1\"}", (int)sp, "");
		size_t hl = b64len(strlen(h));

		for (size_t pad = 0; pad < JWT_MAX_TOKEN; pad++) {
			size_t pl = b64len(sizeof(pre) - 1 + pad + 2);

			if (hl + 1 + pl + 1 + 86 != want)
				continue;
			char *p = malloc(sizeof(pre) + pad + 3), *t;

			must(p != NULL);
			memcpy(p, pre, sizeof(pre) - 1);
			memset(p + sizeof(pre) - 1, 'x', pad);
			memcpy(p + sizeof(pre) - 1 + pad, "\"}", 3);
			t = make_token(h, p, S_EDDSA, K.ed);
			free(p);
			free(h);
			must(strlen(t) == want);
			return t;
		}
		free(h);
	}
	return NULL;
}

/* jwt.md 36 and the 16 KiB boundary. */
static void test_size_limit(void)
{
	char *big = malloc(64 * 1024 + 1), *pay, *t;

	must(big != NULL);
	memset(big, 'A', 64 * 1024);
	big[64 * 1024] = '\0';
	pay = xasprintf("{" BASE "," AUD_OK "," TIMES_OK ",\"blob\":\"%s\"}", big);
	t = make_token(H_ED, pay, S_EDDSA, K.ed);
	CHECK(strlen(t) > 87000);   /* jwt.md: "88 KB" */
	verify_checked("md36-64KiB-claim", t, strlen(t), K.jwks, &POL_MD, -EMSGSIZE);
	free(t);
	free(pay);

	/* Refused on length alone: these bytes are not even base64url. */
	memset(big, '!', JWT_MAX_TOKEN + 1);
	verify_checked("oversized-garbage", big, JWT_MAX_TOKEN + 1, K.jwks, &POL_MD, -EMSGSIZE);
	free(big);

	t = token_of_length(JWT_MAX_TOKEN);
	CHECK(t != NULL);
	if (t) {
		verify_checked("exactly-16KiB-valid", t, strlen(t), K.jwks, &POL_MD, 0);
		free(t);
	}
	t = token_of_length(JWT_MAX_TOKEN + 1);
	CHECK(t != NULL);
	if (t) {
		verify_checked("16KiB-plus-1-valid-signature", t, strlen(t), K.jwks, &POL_MD, -EMSGSIZE);
		free(t);
	}
}

/* Everything jwt_verify() hands back. */
static void test_claims_out(void)
{
	const char *pay = "{\"iss\":\"" ISSUER "\",\"sub\":\"user-alice\",\"aud\":[\"x\",\"" AUDIENCE "\"],"
		"\"exp\":1750000300,\"nbf\":1749999900,\"iat\":1749999800,\"azp\":\"web\","
		"\"client_id\":\"agent-a\",\"jti\":\"j-9\",\"scope\":\"tools:read tools:write\","
		"\"groups\":[\"eng\",\"oncall\"],\"roles\":\"admin-ish\","
		"\"act\":{\"sub\":\"agent-a\",\"act\":{\"sub\":\"older-agent\"}},\"custom\":{\"k\":1}}";
	char *t = make_token(H_ED, pay, S_EDDSA, K.ed);
	struct jwt_claims c;
	char why[128];

	seed("tok-", "claims-all", t, strlen(t));
	CHECK(jwt_verify(t, strlen(t), K.jwks, &POL_MD, &c, why, sizeof(why)) == 0);
	CHECK_STR(why, "");
	CHECK_STR(c.alg, "EdDSA");
	CHECK_STR(c.kid, "ed1");
	CHECK_STR(c.iss, ISSUER);
	CHECK_STR(c.sub, "user-alice");
	CHECK(c.naud == 2);
	if (c.naud == 2) {
		CHECK_STR(c.aud[0], "x");
		CHECK_STR(c.aud[1], AUDIENCE);
	}
	CHECK(c.exp == 1750000300 && c.has_nbf && c.nbf == 1749999900 && c.has_iat && c.iat == 1749999800);
	CHECK_STR(c.azp, "web");
	CHECK_STR(c.client_id, "agent-a");
	CHECK_STR(c.jti, "j-9");
	CHECK_STR(c.scope, "tools:read tools:write");
	CHECK(c.ngroups == 2);
	if (c.ngroups == 2) {
		CHECK_STR(c.groups[0], "eng");
		CHECK_STR(c.groups[1], "oncall");
	}
	CHECK_STR(c.act_sub, "agent-a");   /* the outermost actor only */
	CHECK(json_integer_value(json_object_get(json_object_get(c.json, "custom"), "k")) == 1);
	jwt_claims_free(&c);
	CHECK(c.json == NULL && c.aud == NULL && c.groups == NULL);
	jwt_claims_free(&c);   /* twice is fine */
	jwt_claims_free(NULL);

	/* The groups claim's name is the policy's; a string is a list of one. */
	CHECK(jwt_verify(t, strlen(t), K.jwks, &POL_ROLES, &c, why, sizeof(why)) == 0);
	CHECK(c.ngroups == 1);
	if (c.ngroups == 1)
		CHECK_STR(c.groups[0], "admin-ish");
	jwt_claims_free(&c);

	/* out may be NULL: a bare verdict. */
	CHECK(jwt_verify(t, strlen(t), K.jwks, &POL_MD, NULL, why, sizeof(why)) == 0);
	free(t);

	/* Minimal token: optional members absent. */
	t = make_token("{\"alg\":\"EdDSA\",\"kid\":\"ed1\"}",
		       "{\"iss\":\"" ISSUER "\",\"sub\":\"s\",\"aud\":\"" AUDIENCE "\",\"exp\":1750000300}",
		       S_EDDSA, K.ed);
	CHECK(jwt_verify(t, strlen(t), K.jwks, &POL_ANY, &c, why, sizeof(why)) == 0);
	CHECK(c.naud == 1 && c.ngroups == 0 && c.groups == NULL && !c.has_nbf && !c.has_iat);
	CHECK(c.azp == NULL && c.client_id == NULL && c.jti == NULL && c.scope == NULL && c.act_sub == NULL);
	jwt_claims_free(&c);
	free(t);

	/* Not NUL-terminated: only len bytes are read. */
	t = make_token(H_ED, GOOD, S_EDDSA, K.ed);
	{
		size_t n = strlen(t);
		char *exact = malloc(n);

		must(exact != NULL);
		memcpy(exact, t, n);
		CHECK(jwt_verify(exact, n, K.jwks, &POL_MD, NULL, why, sizeof(why)) == 0);
		CHECK(jwt_verify(exact, n - 1, K.jwks, &POL_MD, NULL, why, sizeof(why)) == -EINVAL);
		free(exact);
	}
	free(t);
}

/* A member of pkey's JWK, as text (a copy). */
static char *jwk_member(EVP_PKEY *pkey, const char *member)
{
	json_t *j = jwk_of(pkey, NULL, NULL);
	char *s = xasprintf("%s", json_string_value(json_object_get(j, member)));

	json_decref(j);
	return s;
}

/* JWKS entries that must be refused, each listed next to a good key. */
static void test_jwks_refusals(void)
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	char *y = jwk_member(K.ec, "y"), *n = jwk_member(K.rsa, "n");
	char *y_off, *n_even, *n_big, *good;
	size_t yl = strlen(y), nl = strlen(n);
	json_t *gj = jwk_of(K.ed, "good", "EdDSA");

	/* y with one bit changed: off the curve (a point has at most two y). */
	y[yl - 2] = y[yl - 2] == 'A' ? 'B' : 'A';
	y_off = xasprintf("\"%s\"", y);
	/* n is 256 bytes = 342 chars; the last char holds 2 data bits (then 4
	 * zero bits): clearing the lower one makes n even. */
	n[nl - 1] = b64[(strchr(b64, n[nl - 1]) - b64) & ~16];
	n_even = xasprintf("\"%s\"", n);
	n_big = malloc(1400);   /* 1380 chars = 1035 bytes > 8192 bits + a zero byte */
	must(n_big != NULL);
	n_big[0] = '"';
	memset(n_big + 1, 'z', 1380);
	memcpy(n_big + 1381, "\"", 2);
	good = json_dumps(gj, JSON_COMPACT);
	json_decref(gj);

	/* Either a literal JWK, or this key's JWK (kid "k") with member set to
	 * the JSON value (or removed when value is NULL). */
	const struct {
		const char *name;
		const char *literal;
		EVP_PKEY **key;
		const char *member, *value;
		const char *reason;       /* a substring of the refusal */
	} cases[] = {
		{ "rsa-1024", NULL, &K.rsa1024, "alg", "\"RS256\"", "1024 bits; at least 2048" },
		{ "rsa-private-d", NULL, &K.rsa, "d", "\"AQAB\"", "private key material ('d')" },
		{ "rsa-private-p", NULL, &K.rsa, "p", "\"AQAB\"", "private key material ('p')" },
		{ "rsa-private-qi", NULL, &K.rsa, "qi", "\"AQAB\"", "private key material ('qi')" },
		{ "ec-private-d", NULL, &K.ec, "d", "\"AQAB\"", "private" },
		{ "okp-private-d", NULL, &K.ed, "d", "\"AQAB\"", "private" },
		{ "oct-with-k", "{\"kty\":\"oct\",\"kid\":\"k\",\"k\":\"c2VjcmV0\"}", NULL, NULL, NULL,
		  "private key material ('k')" },
		{ "oct", "{\"kty\":\"oct\",\"kid\":\"k\"}", NULL, NULL, NULL, "kty not supported" },
		{ "kty-lowercase", "{\"kty\":\"rsa\",\"kid\":\"k\"}", NULL, NULL, NULL, "kty not supported" },
		{ "kty-missing", NULL, &K.rsa, "kty", NULL, "kty missing" },
		{ "kty-number", NULL, &K.rsa, "kty", "1", "kty missing" },
		{ "not-an-object", "\"RSA\"", NULL, NULL, NULL, "not a JSON object" },
		{ "use-enc", NULL, &K.rsa, "use", "\"enc\"", "use is not" },
		{ "use-number", NULL, &K.rsa, "use", "1", "use is not" },
		{ "key-ops-sign-only", NULL, &K.rsa, "key_ops", "[\"sign\"]", "key_ops" },
		{ "key-ops-not-array", NULL, &K.rsa, "key_ops", "\"verify\"", "key_ops is not an array" },
		{ "alg-es256-on-rsa", NULL, &K.rsa, "alg", "\"ES256\"", "alg ES256 does not fit kty RSA" },
		{ "alg-rs256-on-ec", NULL, &K.ec, "alg", "\"RS256\"", "does not fit" },
		{ "alg-eddsa-on-rsa", NULL, &K.rsa, "alg", "\"EdDSA\"", "does not fit" },
		{ "alg-rs512", NULL, &K.rsa, "alg", "\"RS512\"", "alg not supported" },
		{ "alg-hs256", NULL, &K.rsa, "alg", "\"HS256\"", "alg not supported" },
		{ "alg-none", NULL, &K.rsa, "alg", "\"none\"", "alg not supported" },
		{ "alg-number", NULL, &K.rsa, "alg", "1", "alg is not a string" },
		{ "kid-number", NULL, &K.ed, "kid", "1", "kid must be" },
		{ "kid-empty", NULL, &K.ed, "kid", "\"\"", "kid must be" },
		{ "kid-tab", NULL, &K.ed, "kid", "\"a\\tb\"", "kid must be" },
		{ "ec-p384", NULL, &K.ec, "crv", "\"P-384\"", "only P-256" },
		{ "ec-crv-missing", NULL, &K.ec, "crv", NULL, "only P-256" },
		{ "ec-off-curve", NULL, &K.ec, "y", y_off, "P-256" },
		{ "ec-short-x", NULL, &K.ec, "x", "\"AAAA\"", "32 bytes" },
		{ "ec-y-missing", NULL, &K.ec, "y", NULL, "32 bytes" },
		{ "ec-x-not-b64url", NULL, &K.ec, "x", "\"x+x/\"", "32 bytes" },
		{ "okp-x25519", NULL, &K.ed, "crv", "\"X25519\"", "only Ed25519" },
		{ "okp-ed448", NULL, &K.ed, "crv", "\"Ed448\"", "only Ed25519" },
		{ "okp-short-x", NULL, &K.ed, "x", "\"AAAA\"", "32 bytes" },
		{ "okp-x-padded", NULL, &K.ed, "x", "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"", "32 bytes" },
		{ "okp-identity", NULL, &K.ed, "x", "\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"", "small-order" },
		{ "okp-identity-sign-bit", NULL, &K.ed, "x", "\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAIA\"", "small-order" },
		{ "okp-order-2", NULL, &K.ed, "x", "\"7P_______________________________________38\"", "small-order" },
		{ "okp-order-4", NULL, &K.ed, "x", "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"", "small-order" },
		{ "okp-order-4-sign-bit", NULL, &K.ed, "x", "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAIA\"", "small-order" },
		{ "okp-order-8a", NULL, &K.ed, "x", "\"JuiVj8KyJ7BFw_SJ8u-Y8NXfrAXTxjM5sTgCiG1T_AU\"", "small-order" },
		{ "okp-order-8b-sign-bit", NULL, &K.ed, "x", "\"xxdqcD1N2E-6PAt2DRBnDyogU_osOczGTsf9d5KsA_o\"", "small-order" },
		{ "okp-y-is-p", NULL, &K.ed, "x", "\"7f_______________________________________38\"", "small-order" },
		{ "okp-y-is-p-plus-1", NULL, &K.ed, "x", "\"7v_______________________________________38\"", "small-order" },
		{ "okp-y-is-2^255-1", NULL, &K.ed, "x", "\"_________________________________________38\"", "small-order" },
		{ "rsa-e-1", NULL, &K.rsa, "e", "\"AQ\"", "not a valid" },
		{ "rsa-e-even", NULL, &K.rsa, "e", "\"AQAC\"", "not a valid" },
		{ "rsa-e-too-long", NULL, &K.rsa, "e", "\"AQABAQABAQAB\"", "e missing" },
		{ "rsa-e-missing", NULL, &K.rsa, "e", NULL, "e missing" },
		{ "rsa-n-even", NULL, &K.rsa, "n", n_even, "not a valid" },
		{ "rsa-n-too-big", NULL, &K.rsa, "n", n_big, "longer than 8192" },
		{ "rsa-n-not-b64url", NULL, &K.rsa, "n", "\"ab+c\"", "n missing" },
		{ "rsa-n-empty", NULL, &K.rsa, "n", "\"\"", "n missing" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int before = unit_failed_checks;
		struct jwks *set = NULL;
		struct jwks_key_info info;
		char why[256], name[96], *jwk, *text;
		int err;

		if (cases[i].literal) {
			jwk = xasprintf("%s", cases[i].literal);
		} else {
			json_t *j = jwk_of(*cases[i].key, "k", NULL);

			if (cases[i].value)
				json_object_set_new(j, cases[i].member,
						    json_loads(cases[i].value, JSON_DECODE_ANY, NULL));
			else
				json_object_del(j, cases[i].member);
			jwk = json_dumps(j, JSON_COMPACT);
			json_decref(j);
		}
		text = xasprintf("{\"keys\":[%s,%s]}", good, jwk);
		snprintf(name, sizeof(name), "jwks-refuse-%s", cases[i].name);
		seed("", name, text, strlen(text));
		err = jwks_parse(text, strlen(text), &set, why, sizeof(why));
		CHECK(err == 0);
		CHECK(jwks_size(set) == 2 && jwks_usable(set) == 1);
		CHECK(jwks_key(set, 1, &info) == 0);
		CHECK(info.refused != NULL && strstr(info.refused, cases[i].reason) != NULL);
		if (info.refused && !strstr(info.refused, cases[i].reason))
			fprintf(stderr, "  %s: refused '%s', want '%s'\n", name, info.refused, cases[i].reason);
		CHECK(info.bits == 0);
		CHECK(strstr(why, "1 of 2 keys refused; keys[1]: ") != NULL);
		CHECK(jwks_key(set, 0, &info) == 0 && info.refused == NULL && info.bits == 256);
		CHECK(ERR_peek_error() == 0);
		jwks_free(set);
		free(text);
		free(jwk);
		account(before, name);
	}
	free(good);
	free(y);
	free(n);
	free(y_off);
	free(n_even);
	free(n_big);
}

/* JWKs that must be usable: optional members absent or in their other
 * legal forms. Each is the only key, so a kid-less token selects it. */
static void test_jwks_accepts(void)
{
	char *n = jwk_member(K.rsa, "n"), *n0;
	size_t raw_len;
	unsigned char *raw = unb64url(n, strlen(n), &raw_len), *z = malloc(raw_len + 1);
	const struct {
		const char *name;
		EVP_PKEY **key;
		const char *member, *value;   /* NULL member: jwk_of() as is; NULL value: delete */
		const char *hdr;
		enum sigkind how;
	} cases[] = {
		{ "use-jwt-svid", &K.rsa, "use", "\"jwt-svid\"", "{\"alg\":\"RS256\",\"typ\":\"at+jwt\"}", S_RS256 },
		{ "use-absent", &K.ec, "use", NULL, "{\"alg\":\"ES256\",\"typ\":\"at+jwt\"}", S_ES256 },
		{ "key-ops-verify", &K.ed, "key_ops", "[\"sign\",\"verify\"]",
		  "{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\"}", S_EDDSA },
		{ "alg-Ed25519-key-EdDSA-token", &K.ed, "alg", "\"Ed25519\"",
		  "{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\"}", S_EDDSA },
		{ "n-with-leading-zero", &K.rsa, "n", NULL /* set below */,
		  "{\"alg\":\"RS256\",\"typ\":\"at+jwt\"}", S_RS256 },
		{ "x5c-member-ignored", &K.rsa, "x5c", "[\"MIIB\"]", "{\"alg\":\"RS256\",\"typ\":\"at+jwt\"}",
		  S_RS256 },
	};

	must(z != NULL);
	z[0] = 0;
	memcpy(z + 1, raw, raw_len);
	{
		char *e = b64url(z, raw_len + 1);

		n0 = xasprintf("\"%s\"", e);
		free(e);
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int before = unit_failed_checks;
		json_t *j = jwk_of(*cases[i].key, NULL, NULL);
		const char *value = strcmp(cases[i].name, "n-with-leading-zero") == 0 ? n0 : cases[i].value;
		char name[96], why[256], *text, *tok;
		struct jwks *set = NULL;

		if (value)
			json_object_set_new(j, cases[i].member, json_loads(value, JSON_DECODE_ANY, NULL));
		else
			json_object_del(j, cases[i].member);
		text = jwks_of(&j, 1);
		snprintf(name, sizeof(name), "jwks-accept-%s", cases[i].name);
		seed("", name, text, strlen(text));
		CHECK(jwks_parse(text, strlen(text), &set, why, sizeof(why)) == 0);
		CHECK(jwks_usable(set) == 1 && why[0] == '\0');
		tok = make_token(cases[i].hdr, GOOD, cases[i].how, *cases[i].key);
		if (set)
			verify_checked(name, tok, strlen(tok), set, &POL_MD, 0);
		jwks_free(set);
		free(text);
		free(tok);
		account(before, name);
	}
	free(n);
	free(n0);
	free(raw);
	free(z);
}

/* A token naming a refused key says why the key was refused. */
static void test_refused_key_reason(void)
{
	char why[256];
	char *t = make_token(HDR("RS256", "rs1024"), GOOD, S_RS256, K.rsa1024);
	struct jwks_key_info info;

	CHECK(jwt_verify(t, strlen(t), K.jwks, &POL_MD, NULL, why, sizeof(why)) == -EKEYREJECTED);
	CHECK(strstr(why, "1024 bits") != NULL);
	CHECK(jwks_size(K.jwks) == 6 && jwks_usable(K.jwks) == 5);
	CHECK(jwks_key(K.jwks, 5, &info) == 0);
	CHECK_STR(info.kid, "rs1024");
	CHECK_STR(info.kty, "RSA");
	CHECK_STR(info.alg, "RS256");
	CHECK(info.refused && strstr(info.refused, "at least 2048"));
	CHECK(jwks_key(K.jwks, 0, &info) == 0 && info.bits == 2048 && info.refused == NULL);
	CHECK(jwks_key(K.jwks, 3, &info) == 0 && info.bits == 256 && strcmp(info.kty, "EC") == 0);
	CHECK(jwks_key(K.jwks, 6, &info) == -ERANGE);
	CHECK(jwks_key(NULL, 0, &info) == -ERANGE);
	free(t);
}

/* Set-level failures of jwks_parse(). */
static void test_jwks_errors(void)
{
	struct { const char *name, *text; int want; } cases[] = {
		{ "empty", "", -EINVAL },
		{ "not-json", "keys", -EINVAL },
		{ "array", "[{\"keys\":[]}]", -EINVAL },
		{ "no-keys", "{}", -EINVAL },
		{ "keys-object", "{\"keys\":{}}", -EINVAL },
		{ "keys-duplicate", "{\"keys\":[],\"keys\":[]}", -EINVAL },
		{ "member-duplicate-in-key", "{\"keys\":[{\"kty\":\"OKP\",\"kty\":\"RSA\"}]}", -EINVAL },
		{ "keys-empty", "{\"keys\":[]}", -ENOKEY },
		{ "all-refused", "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AA\"}]}", -ENOKEY },
	};
	char why[256];
	struct jwks *set;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int err = jwks_parse(cases[i].text, strlen(cases[i].text), &set, why, sizeof(why));
		char name[64];

		snprintf(name, sizeof(name), "jwks-bad-%s", cases[i].name);
		seed("", name, cases[i].text, strlen(cases[i].text));
		if (err != cases[i].want)
			fprintf(stderr, "  %s: got %d '%s'\n", cases[i].name, err, why);
		CHECK(err == cases[i].want);
		CHECK(set == NULL && why[0] != '\0');
	}
	CHECK(jwks_parse(cases[8].text, strlen(cases[8].text), &set, why, sizeof(why)) == -ENOKEY);
	CHECK(strstr(why, "keys[0]") && strstr(why, "private"));
	CHECK(jwks_parse("{}", 2, NULL, why, sizeof(why)) == -EINVAL);
	CHECK(jwks_parse(NULL, 3, &set, why, sizeof(why)) == -EINVAL);

	/* More than JWKS_MAX_KEYS entries, and more than JWKS_MAX_JSON bytes. */
	{
		json_t *many[JWKS_MAX_KEYS + 1];
		char *text;

		for (size_t i = 0; i < JWKS_MAX_KEYS + 1; i++)
			many[i] = jwk_of(K.ed, NULL, NULL);
		text = jwks_of(many, JWKS_MAX_KEYS + 1);
		CHECK(jwks_parse(text, strlen(text), &set, why, sizeof(why)) == -E2BIG);
		free(text);

		for (size_t i = 0; i < JWKS_MAX_KEYS; i++)
			many[i] = jwk_of(K.ed, NULL, NULL);
		text = jwks_of(many, JWKS_MAX_KEYS);
		CHECK(jwks_parse(text, strlen(text), &set, why, sizeof(why)) == 0);
		CHECK(jwks_usable(set) == JWKS_MAX_KEYS);
		jwks_free(set);
		free(text);
	}
	{
		size_t n = JWKS_MAX_JSON + 1;
		char *text = malloc(n);

		must(text != NULL);
		memset(text, ' ', n);
		text[0] = '{';
		CHECK(jwks_parse(text, n, &set, why, sizeof(why)) == -EMSGSIZE);
		/* Whitespace-padded to the limit exactly is still read. */
		memcpy(text, "{\"keys\":[]}", 11);
		CHECK(jwks_parse(text, n - 1, &set, why, sizeof(why)) == -ENOKEY);
		free(text);
	}
	/* Not NUL-terminated. */
	{
		size_t n = strlen(K.jwks_text);
		char *exact = malloc(n);

		must(exact != NULL);
		memcpy(exact, K.jwks_text, n);
		CHECK(jwks_parse(exact, n, &set, why, sizeof(why)) == 0);
		CHECK(strstr(why, "1 of 6 keys refused; keys[5]") != NULL);
		jwks_free(set);
		free(exact);
	}
	jwks_free(NULL);
	CHECK(ERR_peek_error() == 0);
}

/* Duplicate kids: first of a (kid, kty) wins; different kty coexist. */
static void test_duplicate_kids(void)
{
	json_t *a[] = { jwk_of(K.rsa, "dup", NULL), jwk_of(K.rsa2, "dup", NULL) };
	json_t *b[] = { jwk_of(K.rsa2, "dup", NULL), jwk_of(K.rsa, "dup", NULL) };
	json_t *c[] = { jwk_of(K.rsa, "dup", NULL), jwk_of(K.ec, "dup", NULL) };
	char *ta = jwks_of(a, 2), *tb = jwks_of(b, 2), *tc = jwks_of(c, 2);
	struct jwks *sa = parse_or_die(ta), *sb = parse_or_die(tb), *sc = parse_or_die(tc);
	char *by_rsa = make_token(HDR("RS256", "dup"), GOOD, S_RS256, K.rsa);
	char *by_rsa2 = make_token(HDR("RS256", "dup"), GOOD, S_RS256, K.rsa2);
	char *by_ec = make_token(HDR("ES256", "dup"), GOOD, S_ES256, K.ec);
	struct jwks_key_info info;

	seed("jwks-", "duplicate-kid", ta, strlen(ta));
	seed("jwks-", "duplicate-kid-other-kty", tc, strlen(tc));
	CHECK(jwks_usable(sa) == 1 && jwks_key(sa, 1, &info) == 0 && info.refused &&
	      strstr(info.refused, "duplicate kid; keys[0]"));
	verify_checked("dup-kid-first-wins", by_rsa, strlen(by_rsa), sa, &POL_MD, 0);
	verify_checked("dup-kid-second-unused", by_rsa2, strlen(by_rsa2), sa, &POL_MD, -EBADMSG);
	verify_checked("dup-kid-order-swapped-first", by_rsa2, strlen(by_rsa2), sb, &POL_MD, 0);
	verify_checked("dup-kid-order-swapped-second", by_rsa, strlen(by_rsa), sb, &POL_MD, -EBADMSG);
	CHECK(jwks_usable(sc) == 2);
	verify_checked("same-kid-other-kty-rsa", by_rsa, strlen(by_rsa), sc, &POL_MD, 0);
	verify_checked("same-kid-other-kty-ec", by_ec, strlen(by_ec), sc, &POL_MD, 0);
	/* Two usable keys in sc, so a kid-less token is refused there. */
	free(by_ec);
	by_ec = make_token("{\"alg\":\"ES256\",\"typ\":\"at+jwt\"}", GOOD, S_ES256, K.ec);
	verify_checked("no-kid-two-keys", by_ec, strlen(by_ec), sc, &POL_MD, -EINVAL);

	jwks_free(sa);
	jwks_free(sb);
	jwks_free(sc);
	free(ta);
	free(tb);
	free(tc);
	free(by_rsa);
	free(by_rsa2);
	free(by_ec);
}

/* A one-key JWKS: a kid-less token uses it, a kid must still match. */
/*
 * Review (stop 48): an Ed25519 key of small order verifies one fixed forged
 * signature (R = the point, S = 0) over every message. With the identity
 * as the only key of a set, a token no one signed carried any claims.
 * The key is refused now; the forged token with it. y = p - 2, the
 * largest canonical y, is an ordinary encoding and not refused for being
 * near p (it is no point of the curve: OpenSSL's import says so).
 */
static void test_small_order_ed25519(void)
{
	static const char weak[] = "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
				   "\"x\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}";
	static const char near_p[] = "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
				     "\"x\":\"6________________________________________38\"}]}";
	unsigned char sig[64] = { 1 };   /* R = the identity's encoding, S = 0 */
	char *h = b64url_str("{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\"}"), *pl = b64url_str(GOOD);
	char *sg = b64url(sig, sizeof(sig)), *tok = xasprintf("%s.%s.%s", h, pl, sg), why[256];
	struct jwks *set = NULL;
	struct jwks_key_info info;
	int err = jwks_parse(weak, strlen(weak), &set, why, sizeof(why));

	CHECK(err != 0 || jwks_usable(set) == 0);
	if (!err) {
		CHECK(jwks_key(set, 0, &info) == 0 && info.refused && strstr(info.refused, "small-order"));
		CHECK(jwt_verify(tok, strlen(tok), set, &POL_MD, NULL, why, sizeof(why)) != 0);
	}
	jwks_free(set);
	set = NULL;
	err = jwks_parse(near_p, strlen(near_p), &set, why, sizeof(why));
	if (!err && jwks_key(set, 0, &info) == 0 && info.refused)
		CHECK(strstr(info.refused, "small-order") == NULL);
	jwks_free(set);
	ERR_clear_error();
	free(h);
	free(pl);
	free(sg);
	free(tok);
}

static void test_single_key_set(void)
{
	json_t *one[] = { jwk_of(K.rsa, NULL, NULL) };
	json_t *two[] = { jwk_of(K.rsa, NULL, NULL), jwk_of(K.rsa1024, "small", NULL) };
	char *t1 = jwks_of(one, 1), *t2 = jwks_of(two, 2);
	struct jwks *s1 = parse_or_die(t1), *s2 = parse_or_die(t2);
	char *nokid = make_token("{\"alg\":\"RS256\",\"typ\":\"at+jwt\"}", GOOD, S_RS256, K.rsa);
	char *es = make_token("{\"alg\":\"ES256\",\"typ\":\"at+jwt\"}", GOOD, S_ES256, K.ec);
	char *kid = make_token(H_RS, GOOD, S_RS256, K.rsa);

	verify_checked("single-key-no-kid", nokid, strlen(nokid), s1, &POL_MD, 0);
	verify_checked("single-key-no-kid-wrong-kty", es, strlen(es), s1, &POL_MD, -EKEYREJECTED);
	verify_checked("single-key-kid-not-in-set", kid, strlen(kid), s1, &POL_MD, -ENOKEY);
	/* A refused entry does not count: one usable key is still "one". */
	verify_checked("single-usable-plus-refused-no-kid", nokid, strlen(nokid), s2, &POL_MD, 0);
	jwks_free(s1);
	jwks_free(s2);
	free(t1);
	free(t2);
	free(nokid);
	free(es);
	free(kid);
}

/*
 * jwt_key_still: a session that held a user token without keeping it asks
 * a newer JWKS whether that token would still verify. The same key, from
 * another fetch, passes; the key gone, another key under its kid, the key
 * now for another alg or of another kty, or refused, do not; a kid-less
 * token needs a set with exactly one usable key, as jwt_verify does.
 */
/* jwt_key_still() against a set of the JWKs a and b (b may be NULL), which
 * must agree with verifying the token ref came from (tok) against it. */
static const char *still_tok;

static int still(const struct jwt_keyref *ref, json_t *a, json_t *b, char *why, size_t whylen)
{
	json_t *arr[] = { a, b };
	char *text = jwks_of(arr, b ? 2 : 1);
	struct jwks *set = parse_or_die(text);
	char vwhy[256];
	int err;

	err = jwt_key_still(set, ref, why, whylen);
	CHECK((err == 0) == (jwt_verify(still_tok, strlen(still_tok), set, &POL_MD, NULL, vwhy, sizeof(vwhy)) == 0));
	jwks_free(set);
	free(text);
	return err;
}

static void test_key_still(void)
{
	char *t = make_token(HDR("RS256", "k1"), GOOD, S_RS256, K.rsa);
	char *nokid = make_token("{\"alg\":\"RS256\",\"typ\":\"at+jwt\"}", GOOD, S_RS256, K.rsa);
	json_t *first[] = { jwk_of(K.rsa, "k1", NULL), jwk_of(K.ec, "e1", NULL) };
	char *ft = jwks_of(first, 2), why[256];
	struct jwks *fs = parse_or_die(ft);
	struct jwt_claims c, cn;
	struct jwt_keyref bad;

	still_tok = t;
	CHECK(jwt_verify(t, strlen(t), fs, &POL_MD, &c, why, sizeof(why)) == 0);
	CHECK(c.key.set && c.key.has_kid && strcmp(c.key.kid, "k1") == 0);
	CHECK(jwt_key_still(fs, &c.key, why, sizeof(why)) == 0);
	/* the same key in another fetch, in another place, with company */
	CHECK(still(&c.key, jwk_of(K.ed, "e2", NULL), jwk_of(K.rsa, "k1", NULL), why, sizeof(why)) == 0);
	CHECK(still(&c.key, jwk_of(K.rsa, "k1", "RS256"), NULL, why, sizeof(why)) == 0);
	/* rotated away */
	CHECK(still(&c.key, jwk_of(K.ec, "e1", NULL), jwk_of(K.rsa2, "k2", NULL), why, sizeof(why)) == -ENOKEY);
	CHECK(strstr(why, "k1") == NULL);   /* never the kid */
	/* another key under the kid */
	CHECK(still(&c.key, jwk_of(K.rsa2, "k1", NULL), NULL, why, sizeof(why)) == -EKEYREJECTED);
	CHECK(strstr(why, "another") != NULL);
	/* the same kid now an EC key; the key now for PS256 only */
	CHECK(still(&c.key, jwk_of(K.ec, "k1", NULL), NULL, why, sizeof(why)) == -EKEYREJECTED);
	CHECK(still(&c.key, jwk_of(K.rsa, "k1", "PS256"), NULL, why, sizeof(why)) == -EKEYREJECTED);
	/* a refused key under the kid (1024 bits): alone, and with the old key
	 * listed after it (which jwt_verify uses, and so does the check) */
	CHECK(still(&c.key, jwk_of(K.rsa1024, "k1", NULL), jwk_of(K.ec, "e1", NULL), why, sizeof(why)) == -EKEYREJECTED);
	CHECK(still(&c.key, jwk_of(K.rsa1024, "k1", NULL), jwk_of(K.rsa, "k1", NULL), why, sizeof(why)) == 0);

	/* kid-less: one usable key, the same one */
	{
		json_t *one[] = { jwk_of(K.rsa, NULL, NULL) };
		char *ot = jwks_of(one, 1);
		struct jwks *os = parse_or_die(ot);

		still_tok = nokid;
		CHECK(jwt_verify(nokid, strlen(nokid), os, &POL_MD, &cn, why, sizeof(why)) == 0);
		CHECK(cn.key.set && !cn.key.has_kid);
		CHECK(jwt_key_still(os, &cn.key, why, sizeof(why)) == 0);
		CHECK(still(&cn.key, jwk_of(K.rsa2, NULL, NULL), NULL, why, sizeof(why)) == -EKEYREJECTED);
		CHECK(still(&cn.key, jwk_of(K.rsa, NULL, NULL), jwk_of(K.ec, "e1", NULL), why, sizeof(why)) == -EINVAL);
		jwt_claims_free(&cn);
		jwks_free(os);
		free(ot);
	}
	/* a ref no verification filled is refused */
	memset(&bad, 0, sizeof(bad));
	CHECK(jwt_key_still(fs, &bad, why, sizeof(why)) == -EINVAL);
	bad = c.key;
	bad.alg = 99;
	CHECK(jwt_key_still(fs, &bad, why, sizeof(why)) == -EINVAL);
	CHECK(jwt_key_still(NULL, &c.key, why, sizeof(why)) == -EINVAL);
	/* a failed verification leaves no ref */
	{
		char *forged = make_token(HDR("RS256", "k1"), GOOD, S_RS256, K.rsa2);

		CHECK(jwt_verify(forged, strlen(forged), fs, &POL_MD, &cn, why, sizeof(why)) != 0);
		CHECK(!cn.key.set);
		free(forged);
	}
	jwt_claims_free(&c);
	jwks_free(fs);
	free(ft);
	free(t);
	free(nokid);
}

/* Bad arguments and bad policies are refused, never "accepted by default". */
static void test_bad_policy(void)
{
	char *t = make_token(H_ED, GOOD, S_EDDSA, K.ed);
	size_t n = strlen(t);
	char why[128];
	struct jwt_policy p;
	static const char *const null_aud[] = { NULL };

#define BAD(field, value) do { \
	p = POL_MD; \
	p.field = value; \
	CHECK(jwt_verify(t, n, K.jwks, &p, NULL, why, sizeof(why)) == -EINVAL); \
	CHECK(strncmp(why, "policy:", 7) == 0); \
} while (0)
	BAD(issuer, NULL);
	BAD(issuer, "");
	BAD(audiences, NULL);
	BAD(naud, 0);
	BAD(audiences, null_aud);
	BAD(algs, NULL);
	BAD(leeway_s, -1);
	BAD(leeway_s, JWT_LEEWAY_MAX + 1);
	BAD(max_age_s, -1);
	BAD(max_age_s, JWT_MAX_AGE_MAX + 1);
	BAD(now, -1);
	BAD(now, JWT_TIME_MAX + 1);
#undef BAD
	CHECK(jwt_verify(NULL, 0, K.jwks, &POL_MD, NULL, why, sizeof(why)) == -EINVAL);
	CHECK(jwt_verify(t, n, NULL, &POL_MD, NULL, why, sizeof(why)) == -EINVAL);
	CHECK(jwt_verify(t, n, K.jwks, NULL, NULL, why, sizeof(why)) == -EINVAL);

	/* nalgs == 0: the documented default, asymmetric only. */
	p = POL_MD;
	p.algs = NULL;
	p.nalgs = 0;
	CHECK(jwt_verify(t, n, K.jwks, &p, NULL, why, sizeof(why)) == 0);
	free(t);
	t = make_token(HDR("PS256", "ps1"), GOOD, S_PS256, K.rsa2);
	CHECK(jwt_verify(t, strlen(t), K.jwks, &p, NULL, why, sizeof(why)) == 0);
	free(t);
	t = make_token(HDR("HS256", "rs1"), GOOD, S_HS256_PEM, NULL);
	CHECK(jwt_verify(t, strlen(t), K.jwks, &p, NULL, why, sizeof(why)) == -ENOTSUP);
	free(t);
}

/* why: NULL, tiny, always terminated. */
static void test_why_buffer(void)
{
	char *t = make_token(HDR("RS256", "nope"), GOOD, S_RS256, K.rsa);
	char tiny[8];

	memset(tiny, 'x', sizeof(tiny));
	CHECK(jwt_verify(t, strlen(t), K.jwks, &POL_MD, NULL, tiny, sizeof(tiny)) == -ENOKEY);
	CHECK(memchr(tiny, '\0', sizeof(tiny)) != NULL && strlen(tiny) == sizeof(tiny) - 1);
	CHECK(jwt_verify(t, strlen(t), K.jwks, &POL_MD, NULL, NULL, 0) == -ENOKEY);
	CHECK(jwt_verify(t, strlen(t), K.jwks, &POL_MD, NULL, tiny, 0) == -ENOKEY);
	free(t);
}

static void test_error_names(void)
{
	CHECK_STR(jwt_error_name(0), "ok");
	CHECK_STR(jwt_error_name(-EMSGSIZE), "too_large");
	CHECK_STR(jwt_error_name(-EINVAL), "malformed");
	CHECK_STR(jwt_error_name(-ENOTSUP), "unsupported");
	CHECK_STR(jwt_error_name(-ENOKEY), "unknown_key");
	CHECK_STR(jwt_error_name(-EKEYREJECTED), "key_rejected");
	CHECK_STR(jwt_error_name(-EBADMSG), "bad_signature");
	CHECK_STR(jwt_error_name(-EKEYEXPIRED), "expired");
	CHECK_STR(jwt_error_name(-EACCES), "not_for_us");
	CHECK_STR(jwt_error_name(-E2BIG), "too_many_keys");
	CHECK_STR(jwt_error_name(-12345), "error");
}

/* The caller's own OpenSSL errors survive a verification. */
static void test_err_queue_preserved(void)
{
	char *t = make_token(H_ES, GOOD, S_ES256_ZERO, NULL);
	char why[64];

	ERR_raise(ERR_LIB_USER, 42);
	CHECK(jwt_verify(t, strlen(t), K.jwks, &POL_MD, NULL, why, sizeof(why)) == -EBADMSG);
	CHECK(ERR_GET_REASON(ERR_peek_last_error()) == 42);
	ERR_clear_error();
	free(t);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
		corpus_dir = argv[2];
	keys_init();
	test_rows();
	RUN(test_jwk_header);
	RUN(test_size_limit);
	RUN(test_claims_out);
	test_jwks_refusals();
	test_jwks_accepts();
	RUN(test_refused_key_reason);
	RUN(test_jwks_errors);
	RUN(test_duplicate_kids);
	RUN(test_single_key_set);
	RUN(test_key_still);
	RUN(test_small_order_ed25519);
	RUN(test_bad_policy);
	RUN(test_why_buffer);
	RUN(test_error_names);
	RUN(test_err_queue_preserved);
	keys_free();
	UNIT_DONE("ident_jwt");
}
