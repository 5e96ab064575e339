/* SPDX-License-Identifier: Apache-2.0 */
/*
 * local_ca: see local_ca.h. OpenSSL 3 does the cryptography; what is ours is
 * the policy: P-256 keys, a CA limited to signing server certificates
 * (pathlen 0), leaves valid for LEAF_DAYS with one SAN each, a bounded
 * in-memory cache of per-name contexts.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <strings.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "local_ca.h"
#include "util.h"

#define CA_DAYS     3650
#define LEAF_DAYS   7
#define CACHE_MAX   256          /* distinct server names kept; the oldest goes first */
#define NAME_MAX_LEN 253

/*
 * A leaf is valid for LEAF_DAYS and served from the cache until LEAF_RENEW
 * seconds before it expires; then the next handshake for its name mints
 * another (review, stop 28: a busy name stayed cached, and agents' TLS
 * failed with "certificate has expired" a week after the start).
 * AGENTGATE_LEAF_SECONDS (a test knob) mints leaves valid that long, and
 * renews them at half of it.
 */
#define LEAF_RENEW  (24 * 3600)

struct leaf {
	char name[NAME_MAX_LEN + 1];
	SSL_CTX *ctx;
	uint64_t used;
	time_t renew_at;   /* wall clock: certificates expire by it */
	int tag;           /* the agent that asked for a name none of its target's, else -1 */
};

static struct {
	pthread_mutex_t lock;
	EVP_PKEY *ca_key, *leaf_key;
	X509 *ca_cert;
	char cert_path[4096];
	struct leaf cache[CACHE_MAX];
	uint64_t clock, minted;
} ca = { .lock = PTHREAD_MUTEX_INITIALIZER };

static int fail(char *why, size_t whylen, int err, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[160] = "";

	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	snprintf(why, whylen, "%s%s%s", what, buf[0] ? ": " : "", buf);
	return err;
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext)
		return -1;
	X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	return 0;
}

/* How long a new leaf is valid, and how long before its end it is renewed. */
static long leaf_seconds(long *renew_before)
{
	const char *env = getenv("AGENTGATE_LEAF_SECONDS");
	long n = env ? strtol(env, NULL, 10) : 0;

	if (n > 0 && n <= LEAF_DAYS * 86400L) {
		*renew_before = n / 2;
		return n;
	}
	*renew_before = LEAF_RENEW;
	return LEAF_DAYS * 86400L;
}

/* valid for days and secs more from now (backdated an hour: clocks differ) */
static X509 *new_cert(EVP_PKEY *key, const char *cn, long days, long secs)
{
	X509 *x = X509_new();
	unsigned char serial[16];
	BIGNUM *bn;

	if (!x)
		return NULL;
	RAND_bytes(serial, sizeof(serial));
	serial[0] &= 0x7f;   /* positive */
	bn = BN_bin2bn(serial, sizeof(serial), NULL);
	BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
	BN_free(bn);
	X509_set_version(x, 2);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);   /* clocks differ */
	X509_time_adj_ex(X509_getm_notAfter(x), days, secs, NULL);
	X509_set_pubkey(x, key);
	/* A CN holds at most 64 characters (RFC 5280 ub-common-name): a longer
	 * one is cut there. Clients match a leaf by its subjectAltName, never
	 * by this; an empty subject with a non-critical SAN fails strict
	 * verification (X509_V_FLAG_X509_STRICT). */
	char c64[65];
	snprintf(c64, sizeof(c64), "%s", cn);
	if (!X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
					(const unsigned char *)c64, -1, -1, 0)) {
		X509_free(x);
		return NULL;
	}
	return x;
}

static int make_ca(char *why, size_t whylen)
{
	char cn[128], host[64] = "host";

	ca.ca_key = EVP_EC_gen("P-256");
	if (!ca.ca_key)
		return fail(why, whylen, -ENOMEM, "generating the CA key");
	gethostname(host, sizeof(host) - 1);
	snprintf(cn, sizeof(cn), "agentgate local CA (%s)", host);
	ca.ca_cert = new_cert(ca.ca_key, cn, CA_DAYS, 0);
	if (!ca.ca_cert)
		return fail(why, whylen, -ENOMEM, "making the CA certificate");
	X509_set_issuer_name(ca.ca_cert, X509_get_subject_name(ca.ca_cert));
	if (add_ext(ca.ca_cert, ca.ca_cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
	    add_ext(ca.ca_cert, ca.ca_cert, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    add_ext(ca.ca_cert, ca.ca_cert, NID_subject_key_identifier, "hash") ||
	    !X509_sign(ca.ca_cert, ca.ca_key, EVP_sha256()))
		return fail(why, whylen, -EINVAL, "signing the CA certificate");
	return 0;
}

/* Writes PEM through a temporary file and rename, so a crash never leaves half a key. */
static int save_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert)
{
	char tmp[4200];
	FILE *f;
	int fd, ok;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		return -errno;
	}
	ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) : PEM_write_X509(f, cert);
	ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
	fclose(f);
	if (!ok || rename(tmp, path)) {
		unlink(tmp);
		return -EIO;
	}
	return 0;
}

/*
 * -ENOENT only when neither file is there (a first start): a new CA is made
 * then. One of the two missing, or either unreadable for another reason
 * (EACCES, EMFILE), is an error that names the file: making a new CA then
 * overwrote the key every agent's trust store holds (review, stop 36).
 */
static bool ca_created;   /* this start made the CA (none was there) */

bool local_ca_created(void)
{
	return ca_created;
}

static int load_ca(const char *kpath, const char *cpath, char *why, size_t whylen)
{
	FILE *kf = fopen(kpath, "re");
	int kerr = kf ? 0 : errno;
	FILE *cf = fopen(cpath, "re");
	int cerr = cf ? 0 : errno;
	int err = 0;

	if (!kf || !cf) {
		if (kf)
			fclose(kf);
		if (cf)
			fclose(cf);
		if (kerr == ENOENT && cerr == ENOENT)
			return -ENOENT;
		if (kerr && kerr != ENOENT)
			snprintf(why, whylen, "the local CA key %s cannot be read: %s", kpath, strerror(kerr));
		else if (cerr && cerr != ENOENT)
			snprintf(why, whylen, "the local CA certificate %s cannot be read: %s", cpath, strerror(cerr));
		else
			snprintf(why, whylen, "the local CA in the state directory is incomplete: %s is missing "
				 "(restore it, or remove the ca/ directory to make a new CA, which agents must then trust)",
				 kerr ? kpath : cpath);
		return -EIO;
	}
	ca.ca_key = PEM_read_PrivateKey(kf, NULL, ag_no_passphrase, NULL);
	ca.ca_cert = PEM_read_X509(cf, NULL, NULL, NULL);
	fclose(kf);
	fclose(cf);
	if (!ca.ca_key || !ca.ca_cert || !X509_check_private_key(ca.ca_cert, ca.ca_key))
		err = fail(why, whylen, -EINVAL, "the local CA in the state directory is unreadable or its key does not match");
	else if (X509_cmp_current_time(X509_get0_notAfter(ca.ca_cert)) <= 0)
		err = fail(why, whylen, -EKEYEXPIRED, "the local CA certificate has expired (remove the ca/ directory to make a new one)");
	return err;
}

int local_ca_open(const char *state_dir, char *why, size_t whylen)
{
	char dir[4096], kpath[4150];
	int err;

	if (ca.ca_key)
		return 0;
	ca_created = false;
	snprintf(dir, sizeof(dir), "%s/ca", state_dir);
	if ((err = mkdir_p(dir, 0700)))
		return fail(why, whylen, err, "creating the local CA directory");
	snprintf(kpath, sizeof(kpath), "%s/ca.key", dir);
	snprintf(ca.cert_path, sizeof(ca.cert_path), "%s/ca.crt", dir);
	err = load_ca(kpath, ca.cert_path, why, whylen);
	if (err == -ENOENT) {
		EVP_PKEY_free(ca.ca_key);
		X509_free(ca.ca_cert);
		ca.ca_key = NULL;
		ca.ca_cert = NULL;
		if ((err = make_ca(why, whylen)))
			goto out;
		ca_created = true;
		if ((err = save_pem(kpath, 0600, ca.ca_key, NULL)) ||
		    (err = save_pem(ca.cert_path, 0644, NULL, ca.ca_cert))) {
			snprintf(why, whylen, "saving the local CA in %s: %s", dir, strerror(-err));
			goto out;
		}
	} else if (err) {
		goto out;
	}
	/* One key for every leaf, never written anywhere: leaves live in memory. */
	ca.leaf_key = EVP_EC_gen("P-256");
	if (!ca.leaf_key)
		err = fail(why, whylen, -ENOMEM, "generating the leaf key");
out:
	if (err) {
		local_ca_close();
		ca.cert_path[0] = 0;
	}
	return err;
}

const char *local_ca_cert_path(void)
{
	return ca.cert_path;
}

/* A name a certificate may carry: an IP literal, or a DNS name of letters,
 * digits, '-', '.' (an SNI is agent-controlled). */
static bool name_ok(const char *name, bool *is_ip)
{
	unsigned char buf[16];
	size_t n = strlen(name);

	*is_ip = inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
	if (*is_ip)
		return true;
	if (n == 0 || n > NAME_MAX_LEN || name[0] == '.' || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = name[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '-' || ch == '.'))
			return false;
	}
	return true;
}

static int servername_cb(SSL *ssl, int *alert, void *arg);

static SSL_CTX *mint(const char *name, time_t *renew_at)
{
	char san[300];
	bool is_ip;
	X509 *x = NULL;
	SSL_CTX *ctx = NULL;
	long renew_before, secs = leaf_seconds(&renew_before);

	if (!name_ok(name, &is_ip))
		return NULL;
	snprintf(san, sizeof(san), "%s:%s", is_ip ? "IP" : "DNS", name);
	*renew_at = time(NULL) + secs - renew_before;
	x = new_cert(ca.leaf_key, name, 0, secs);
	if (!x)
		return NULL;
	X509_set_issuer_name(x, X509_get_subject_name(ca.ca_cert));
	if (add_ext(x, ca.ca_cert, NID_basic_constraints, "critical,CA:FALSE") ||
	    add_ext(x, ca.ca_cert, NID_key_usage, "critical,digitalSignature") ||
	    add_ext(x, ca.ca_cert, NID_ext_key_usage, "serverAuth") ||
	    add_ext(x, ca.ca_cert, NID_subject_alt_name, san) ||
	    add_ext(x, ca.ca_cert, NID_authority_key_identifier, "keyid:always") ||
	    !X509_sign(x, ca.ca_key, EVP_sha256()))
		goto out;
	ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx)
		goto out;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/*
	 * No resumption, in either version: SSL_SESS_CACHE_OFF keeps no
	 * session ids and set_num_tickets(0) sends no TLS 1.3 ticket, but a
	 * TLS 1.2 ticket is stateless and was issued all the same (found by
	 * review, stop 66: a TLS 1.2 client got one, valid 2 h, and resumed
	 * with it, also under another SNI). SSL_OP_NO_TICKET stops that.
	 */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	if (!SSL_CTX_use_certificate(ctx, x) || !SSL_CTX_use_PrivateKey(ctx, ca.leaf_key) ||
	    !SSL_CTX_add1_chain_cert(ctx, ca.ca_cert)) {
		SSL_CTX_free(ctx);
		ctx = NULL;
		goto out;
	}
	SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
out:
	X509_free(x);
	ERR_clear_error();
	return ctx;
}

/*
 * The slot for a new leaf of name, tagged tag: its own old slot, an empty
 * one, the oldest of tag's when tag holds LOCAL_CA_PER_AGENT already, else
 * the oldest asked-for name's, else the oldest. Under the lock.
 */
static struct leaf *slot_for(const char *name, int tag)
{
	struct leaf *empty = NULL, *mine = NULL, *asked = NULL, *any = NULL;
	int nmine = 0;

	for (int i = 0; i < CACHE_MAX; i++) {
		struct leaf *l = &ca.cache[i];

		if (!l->ctx) {
			if (!empty)
				empty = l;
			continue;
		}
		if (strcasecmp(l->name, name) == 0)
			return l;   /* near its end, or minted meanwhile by another worker */
		if (tag >= 0 && l->tag == tag && (++nmine, !mine || l->used < mine->used))
			mine = l;
		if (l->tag >= 0 && (!asked || l->used < asked->used))
			asked = l;
		if (!any || l->used < any->used)
			any = l;
	}
	if (tag >= 0 && nmine >= LOCAL_CA_PER_AGENT)
		return mine;
	return empty ? empty : asked ? asked : any;
}

/* The context for name, minted on first use; a new reference, or NULL.
 * Minting (a key signature and a context, about 0.8 ms) runs outside the
 * lock: an agent cycling through server names makes its own handshakes
 * mint, not every worker's wait behind them (review, stop 28). A name who
 * asked for (none of its target's) is minted only within who's budget
 * (else NULL, *refused) and charged to it. */
static SSL_CTX *leaf_ctx(const char *name, const struct local_ca_asker *who, bool *refused)
{
	SSL_CTX *ctx = NULL, *made;
	time_t renew_at;
	uint64_t t0;
	char why[200];

	*refused = false;
	pthread_mutex_lock(&ca.lock);
	if (!ca.ca_key)
		goto out;
	for (int i = 0; i < CACHE_MAX; i++) {
		struct leaf *l = &ca.cache[i];

		if (l->ctx && strcasecmp(l->name, name) == 0 && time(NULL) < l->renew_at) {
			l->used = ++ca.clock;
			SSL_CTX_up_ref(l->ctx);
			ctx = l->ctx;
			goto out;
		}
	}
	pthread_mutex_unlock(&ca.lock);
	if (who && !who->may(who->arg, why, sizeof(why))) {
		*refused = true;
		return NULL;
	}
	/* the keys and the CA certificate are set once, before any handshake,
	 * and freed only at exit: read without the lock */
	t0 = thread_cpu_ns();
	made = mint(name, &renew_at);
	if (who)
		who->spent(who->arg, thread_cpu_ns() - t0);
	if (!made)
		return NULL;
	pthread_mutex_lock(&ca.lock);
	struct leaf *slot = slot_for(name, who ? who->tag : -1);

	if (slot) {
		/* a name once a target's own stays untagged, whoever renews it */
		bool own = slot->ctx && slot->tag < 0 && strcasecmp(slot->name, name) == 0;

		SSL_CTX_free(slot->ctx);   /* handshakes using it hold their own reference */
		snprintf(slot->name, sizeof(slot->name), "%s", name);
		slot->ctx = made;
		slot->used = ++ca.clock;
		slot->renew_at = renew_at;
		slot->tag = own || !who ? -1 : who->tag;
		SSL_CTX_up_ref(made);
	}
	ca.minted++;
	ctx = made;
out:
	pthread_mutex_unlock(&ca.lock);
	return ctx;
}

uint64_t local_ca_minted(void)
{
	uint64_t n;

	pthread_mutex_lock(&ca.lock);
	n = ca.minted;
	pthread_mutex_unlock(&ca.lock);
	return n;
}

/*
 * The names a target answers to (its host, upstream.server_name, the
 * upstream's host), kept with each agent-side SSL: only those are minted.
 * A target that has names refuses a request for any other (check_host() in
 * proto_http.c), so a certificate for another name serves nothing, while
 * minting one costs about 0.8 ms and pushes other agents' names out of the
 * cache of 256 (review, stop 29). A target without names (an IP address)
 * accepts any name, and so does a module that asks for any_name; those
 * names are the agent's to choose, and it pays for them (local_ca_asker).
 */
struct ssl_names {
	int n;
	char name[3][256];
	char own_ip[64];   /* an ADDR_IP target's address: its own too */
	bool any, has_who;
	struct local_ca_asker who;
};
static int names_idx = -1;
static pthread_once_t names_once = PTHREAD_ONCE_INIT;

static void names_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	free(ptr);
}

static void names_index(void)
{
	names_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, names_free);
}

static bool is_own(const struct ssl_names *nm, const char *name)
{
	for (int i = 0; i < nm->n; i++)
		if (strcasecmp(nm->name[i], name) == 0)
			return true;
	return nm->own_ip[0] && strcasecmp(nm->own_ip, name) == 0;
}

/* Who pays for minting name: nobody for the target's own names. */
static const struct local_ca_asker *payer(const struct ssl_names *nm, const char *name)
{
	return nm->has_who && !is_own(nm, name) ? &nm->who : NULL;
}

/* The client's SNI picks the certificate; without one, with a name the
 * target does not answer to, or one past the agent's budget, the fallback
 * stands. */
static int servername_cb(SSL *ssl, int *alert, void *arg)
{
	const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	const struct ssl_names *nm = names_idx >= 0 ? SSL_get_ex_data(ssl, names_idx) : NULL;
	bool refused;
	SSL_CTX *ctx;

	(void)arg;
	if (!sni || !nm)
		return SSL_TLSEXT_ERR_OK;
	if (!nm->any && nm->n && !is_own(nm, sni))
		return SSL_TLSEXT_ERR_OK;
	ctx = leaf_ctx(sni, payer(nm, sni), &refused);
	if (!ctx) {
		if (refused)
			return SSL_TLSEXT_ERR_OK;
		*alert = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	SSL_set_SSL_CTX(ssl, ctx);
	SSL_CTX_free(ctx);   /* the SSL holds its own reference */
	return SSL_TLSEXT_ERR_OK;
}

SSL *local_ca_server_ssl(const struct policy_target *t, bool any_name, const char *fallback_name,
			 const struct local_ca_asker *who, char *why, size_t whylen)
{
	const struct policy_upstream *u = t ? &t->upstream : NULL;
	const char *names[3] = {
		t && t->addr.kind == ADDR_HOST ? t->addr.host : NULL,
		u ? u->server_name : NULL,
		u && u->has_address && u->address.kind == ADDR_HOST ? u->address.host : NULL,
	};
	struct ssl_names *nm = calloc(1, sizeof(*nm));
	SSL_CTX *ctx;
	bool refused;
	SSL *ssl;

	pthread_once(&names_once, names_index);
	if (!nm || names_idx < 0) {
		free(nm);
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	for (int i = 0; i < 3; i++)
		if (names[i])
			snprintf(nm->name[nm->n++], sizeof(nm->name[0]), "%s", names[i]);
	if (t && t->addr.kind == ADDR_IP)
		addr_str(t->addr.addr, nm->own_ip, sizeof(nm->own_ip));
	nm->any = any_name;
	if (who) {
		nm->who = *who;
		nm->has_who = true;
	}
	ctx = leaf_ctx(fallback_name, payer(nm, fallback_name), &refused);
	if (!ctx) {
		if (refused)
			snprintf(why, whylen, "a certificate for %s would have to be minted, and this agent has used "
				 "its budget for that (limits.parse_cpu); retry later", fallback_name);
		else
			snprintf(why, whylen, "no certificate for %s (the local CA is not available, or the name "
				 "is not one a certificate may carry)", fallback_name);
		free(nm);
		return NULL;
	}
	ssl = SSL_new(ctx);
	SSL_CTX_free(ctx);
	if (!ssl || !SSL_set_ex_data(ssl, names_idx, nm)) {
		free(nm);   /* fail closed: no SSL rather than one that mints any name */
		SSL_free(ssl);
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	return ssl;
}

void local_ca_close(void)
{
	pthread_mutex_lock(&ca.lock);
	for (int i = 0; i < CACHE_MAX; i++) {
		SSL_CTX_free(ca.cache[i].ctx);
		ca.cache[i].ctx = NULL;
	}
	EVP_PKEY_free(ca.ca_key);
	EVP_PKEY_free(ca.leaf_key);
	X509_free(ca.ca_cert);
	ca.ca_key = ca.leaf_key = NULL;
	ca.ca_cert = NULL;
	pthread_mutex_unlock(&ca.lock);
}
