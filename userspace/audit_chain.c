/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit_chain.h"
#include "util.h"

static void hex(const unsigned char *b, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[b[i] >> 4];
		out[2 * i + 1] = d[b[i] & 15];
	}
	out[2 * n] = 0;
}

static int unhex(const char *s, unsigned char *out, size_t n)
{
	if (strlen(s) != 2 * n)
		return -1;
	for (size_t i = 0; i < 2 * n; i++) {
		int v = s[i] >= '0' && s[i] <= '9' ? s[i] - '0' :
			s[i] >= 'a' && s[i] <= 'f' ? s[i] - 'a' + 10 : -1;
		if (v < 0)
			return -1;
		out[i / 2] = (unsigned char)(i % 2 ? out[i / 2] | v : v << 4);
	}
	return 0;
}

/* SHA-256 fetched from the provider once: EVP_sha256() makes every
 * EVP_Digest() look the implementation up again (locks and all), which
 * cost as much as hashing an event line. Kept for the life of the process.
 * Each thread keeps one digest context too: EVP_Digest() allocates and
 * frees one (and the provider's state in it) per call. */
static EVP_MD *sha256;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static pthread_key_t sha256_key;
static bool sha256_key_ok;
static __thread EVP_MD_CTX *sha256_ctx;

static void sha256_ctx_free(void *c)
{
	EVP_MD_CTX_free(c);
}

static void sha256_fetch(void)
{
	sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	/* without the key, contexts are not freed at thread exit: still correct */
	sha256_key_ok = pthread_key_create(&sha256_key, sha256_ctx_free) == 0;
}

/* This thread's context, or NULL (out of memory: EVP_Digest is used). */
static EVP_MD_CTX *thread_ctx(void)
{
	if (!sha256_ctx && sha256 && (sha256_ctx = EVP_MD_CTX_new()) && sha256_key_ok)
		pthread_setspecific(sha256_key, sha256_ctx);
	return sha256_ctx;
}

void audit_chain_hash(const void *line, size_t len, char out[AUDIT_HASH_HEX])
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	EVP_MD_CTX *c;
	int ok;

	pthread_once(&sha256_once, sha256_fetch);
	if ((c = thread_ctx()))
		ok = EVP_DigestInit_ex2(c, sha256, NULL) && EVP_DigestUpdate(c, line, len) &&
		     EVP_DigestFinal_ex(c, md, &mdlen);
	else
		ok = EVP_Digest(line, len, md, &mdlen, sha256 ? sha256 : EVP_sha256(), NULL);
	if (!ok || mdlen != 32)
		memset(md, 0xff, sizeof(md));   /* never equals a real chain value */
	hex(md, 32, out);
}

static int path_in(char *out, size_t outlen, const char *dir, const char *name)
{
	if ((size_t)snprintf(out, outlen, "%s/%s", dir, name) >= outlen)
		return -ENAMETOOLONG;
	return 0;
}

/* Writes via tmp + rename so a reader never sees half a file. */
typedef int (*pem_writer)(FILE *f, EVP_PKEY *k);
static int pem_priv(FILE *f, EVP_PKEY *k) { return PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL); }
static int pem_pub(FILE *f, EVP_PKEY *k) { return PEM_write_PUBKEY(f, k); }

static int write_atomic(const char *path, mode_t mode, pem_writer w, EVP_PKEY *k,
			const char *text)
{
	char tmp[4200];
	int fd, err = 0;
	FILE *f;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return -errno;
	fchmod(fd, mode);
	f = fdopen(fd, "w");
	if (!f) {
		err = -errno;
		close(fd);
		unlink(tmp);
		return err;
	}
	if (w ? w(f, k) != 1 : fputs(text, f) < 0)
		err = -EIO;
	if (fflush(f) || fsync(fileno(f)))
		err = err ? err : -errno;
	if (fclose(f))
		err = err ? err : -errno;
	if (!err && rename(tmp, path))
		err = -errno;
	if (err) {
		unlink(tmp);
		return err;
	}
	/* the rename itself survives a power cut only once its directory is
	 * synced (the chain state's "running" must: audit.c) */
	return fsync_parent(path);
}

int audit_key_open(const char *dir, EVP_PKEY **out)
{
	char kpath[4096], ppath[4096];
	EVP_PKEY *k = NULL;
	struct stat st;
	int fd, err;

	*out = NULL;
	if ((err = path_in(kpath, sizeof(kpath), dir, AUDIT_KEY_FILE)) ||
	    (err = path_in(ppath, sizeof(ppath), dir, AUDIT_PUB_FILE)))
		return err;
	fd = open(kpath, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0) {
		FILE *f;

		if (fstat(fd, &st) || !S_ISREG(st.st_mode) || (st.st_mode & 077)) {
			close(fd);
			return -EPERM;
		}
		f = fdopen(fd, "r");
		if (!f) {
			err = -errno;
			close(fd);
			return err;
		}
		k = PEM_read_PrivateKey(f, NULL, ag_no_passphrase, NULL);
		fclose(f);
		if (!k || EVP_PKEY_get_id(k) != EVP_PKEY_ED25519) {
			EVP_PKEY_free(k);
			return -EINVAL;
		}
	} else if (errno == ENOENT) {
		EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);

		if (!c || EVP_PKEY_keygen_init(c) <= 0 || EVP_PKEY_keygen(c, &k) <= 0) {
			EVP_PKEY_CTX_free(c);
			return -EIO;
		}
		EVP_PKEY_CTX_free(c);
		if ((err = write_atomic(kpath, 0600, pem_priv, k, NULL))) {
			EVP_PKEY_free(k);
			return err;
		}
	} else {
		return -errno;
	}
	if ((err = write_atomic(ppath, 0644, pem_pub, k, NULL))) {
		EVP_PKEY_free(k);
		return err;
	}
	*out = k;
	return 0;
}

int audit_key_load_pub(const char *path, EVP_PKEY **out)
{
	FILE *f = fopen(path, "re");
	EVP_PKEY *k;

	*out = NULL;
	if (!f)
		return -errno;
	k = PEM_read_PUBKEY(f, NULL, ag_no_passphrase, NULL);
	if (!k) {
		rewind(f);
		k = PEM_read_PrivateKey(f, NULL, ag_no_passphrase, NULL);
	}
	fclose(f);
	if (!k || EVP_PKEY_get_id(k) != EVP_PKEY_ED25519) {
		EVP_PKEY_free(k);
		return -EINVAL;
	}
	*out = k;
	return 0;
}

void audit_key_id(EVP_PKEY *k, char out[AUDIT_KEYID_HEX])
{
	unsigned char raw[32];
	size_t n = sizeof(raw);
	char h[AUDIT_HASH_HEX];

	out[0] = 0;
	if (!k || EVP_PKEY_get_raw_public_key(k, raw, &n) != 1)
		return;
	audit_chain_hash(raw, n, h);
	memcpy(out, h, AUDIT_KEYID_HEX - 1);
	out[AUDIT_KEYID_HEX - 1] = 0;
}

/* stop: the enforcer's last checkpoint of a run (a clean stop), signed as
 * such so that a file cut after an earlier one cannot pass for a whole one.
 * A periodic checkpoint's text is what it was before stop existed. */
static int checkpoint_msg(char *buf, size_t len, uint64_t seq, const char *hash, uint64_t count,
			  bool stop)
{
	int n = snprintf(buf, len, "agentgate-audit-checkpoint/1\n%" PRIu64 "\n%s\n%" PRIu64 "%s",
			 seq, hash, count, stop ? "\nstop" : "");

	return n < 0 || (size_t)n >= len ? -1 : n;
}

int audit_checkpoint_sign(EVP_PKEY *k, uint64_t seq, const char *hash, uint64_t count, bool stop,
			  char sig[AUDIT_SIG_HEX])
{
	char msg[160];
	unsigned char s[64];
	size_t slen = sizeof(s);
	int n = checkpoint_msg(msg, sizeof(msg), seq, hash, count, stop), ok;
	EVP_MD_CTX *c;

	sig[0] = 0;
	if (n < 0 || !(c = EVP_MD_CTX_new()))
		return -EIO;
	ok = EVP_DigestSignInit(c, NULL, NULL, NULL, k) == 1 &&
	     EVP_DigestSign(c, s, &slen, (unsigned char *)msg, n) == 1 && slen == sizeof(s);
	EVP_MD_CTX_free(c);
	if (!ok)
		return -EIO;
	hex(s, sizeof(s), sig);
	return 0;
}

bool audit_checkpoint_verify(EVP_PKEY *k, uint64_t seq, const char *hash, uint64_t count, bool stop,
			     const char *sig)
{
	char msg[160];
	unsigned char s[64];
	int n = checkpoint_msg(msg, sizeof(msg), seq, hash, count, stop);
	EVP_MD_CTX *c;
	bool ok;

	if (!k || !sig || n < 0 || unhex(sig, s, sizeof(s)) || !(c = EVP_MD_CTX_new()))
		return false;
	ok = EVP_DigestVerifyInit(c, NULL, NULL, NULL, k) == 1 &&
	     EVP_DigestVerify(c, s, sizeof(s), (unsigned char *)msg, n) == 1;
	EVP_MD_CTX_free(c);
	return ok;
}

static bool is_hash(const char *s)
{
	unsigned char b[32];

	return s && unhex(s, b, sizeof(b)) == 0;
}

void audit_chain_state_load(const char *dir, char out[AUDIT_HASH_HEX], bool *running)
{
	char path[4096], buf[128] = "";
	FILE *f;

	memcpy(out, AUDIT_ZERO_HASH, AUDIT_HASH_HEX);
	if (running)
		*running = false;
	if (path_in(path, sizeof(path), dir, AUDIT_CHAIN_FILE) || !(f = fopen(path, "re")))
		return;
	if (fgets(buf, sizeof(buf), f)) {
		buf[strcspn(buf, "\n")] = 0;
		if (is_hash(buf))
			memcpy(out, buf, AUDIT_HASH_HEX);
		if (running && fgets(buf, sizeof(buf), f))
			*running = strcmp(buf, "running\n") == 0;
	}
	fclose(f);
}

int audit_chain_state_save(const char *dir, const char *hash, bool running)
{
	char path[4096], text[AUDIT_HASH_HEX + 16];
	int err = path_in(path, sizeof(path), dir, AUDIT_CHAIN_FILE);

	if (err)
		return err;
	snprintf(text, sizeof(text), "%s\n%s", hash, running ? "running\n" : "");
	return write_atomic(path, 0600, NULL, NULL, text);
}

const char *audit_break_name(enum audit_break k)
{
	switch (k) {
	case AUDIT_INTACT: return "intact";
	case AUDIT_EDITED: return "edited";
	case AUDIT_DELETED: return "deleted";
	case AUDIT_REORDERED: return "reordered";
	case AUDIT_BAD_SIGNATURE: return "bad-signature";
	case AUDIT_BAD_CHECKPOINT: return "bad-checkpoint";
	case AUDIT_MALFORMED: return "malformed";
	}
	return "?";
}

/* ---- verification ---- */

struct vline {
	char *buf;
	size_t cap;
	ssize_t len;
	char hash[AUDIT_HASH_HEX];
	char prev[AUDIT_HASH_HEX];
	uint64_t seq;
	json_t *cp;       /* unmapped.checkpoint (borrowed from doc) */
	json_t *doc;
	bool ok;          /* parsed with sequence and prev_hash */
};

/* Reads the next line; false at EOF. The trailing '\n' is not hashed. */
static bool vline_read(FILE *f, struct vline *l)
{
	json_decref(l->doc);
	l->doc = NULL;
	l->cp = NULL;
	l->ok = false;
	l->len = getline(&l->buf, &l->cap, f);
	if (l->len < 0)
		return false;
	if (l->len && l->buf[l->len - 1] == '\n')
		l->buf[--l->len] = 0;
	audit_chain_hash(l->buf, l->len, l->hash);
	/* A duplicate key is refused: readers differ on which one counts (a
	 * SIEM may take the first "class_uid", jansson the last), so a line
	 * could say two things under one hash. */
	l->doc = json_loadb(l->buf, l->len, JSON_REJECT_DUPLICATES, NULL);
	json_t *md = json_object_get(l->doc, "metadata");
	json_t *seq = json_object_get(md, "sequence");
	const char *prev = json_string_value(json_object_get(md, "prev_hash"));
	if (!json_is_integer(seq) || json_integer_value(seq) < 1 || !is_hash(prev))
		return true;
	l->seq = json_integer_value(seq);
	memcpy(l->prev, prev, AUDIT_HASH_HEX);
	if (json_integer_value(json_object_get(l->doc, "class_uid")) == 1008)
		l->cp = json_object_get(json_object_get(l->doc, "unmapped"), "checkpoint");
	l->ok = true;
	return true;
}

static void vline_free(struct vline *l)
{
	json_decref(l->doc);
	free(l->buf);
}

/* 1-based number of the line whose hash is h, 0 if none. */
static uint64_t find_line(const char *path, const char *h)
{
	struct vline l = { 0 };
	uint64_t n = 0, found = 0;
	FILE *f = fopen(path, "re");

	while (f && !found && vline_read(f, &l)) {
		n++;
		if (strcmp(l.hash, h) == 0)
			found = n;
	}
	if (f)
		fclose(f);
	vline_free(&l);
	return found;
}

static void set_break(struct audit_verify_report *r, enum audit_break k, uint64_t line,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void set_break(struct audit_verify_report *r, enum audit_break k, uint64_t line,
		const char *fmt, ...)
{
	va_list ap;

	r->kind = k;
	r->line = line;
	va_start(ap, fmt);
	vsnprintf(r->detail, sizeof(r->detail), fmt, ap);
	va_end(ap);
}

/* Line n's prev_hash is not the hash of line n-1: say why. */
static void classify(const char *path, FILE *f, struct vline *cur, uint64_t n,
		     uint64_t prev_seq, struct audit_verify_report *r)
{
	uint64_t j = find_line(path, cur->prev);

	if (j && j != n - 1) {
		set_break(r, AUDIT_REORDERED, n, "line %" PRIu64 " (sequence %" PRIu64 ") is out of order: "
		    "it was written right after line %" PRIu64, n, cur->seq, j);
	} else if (cur->seq == 1) {
		set_break(r, AUDIT_DELETED, n, "line(s) deleted before line %" PRIu64 ": this run "
		    "chains from a line that is not in the file (end of the previous run removed)", n);
	} else if (cur->seq > prev_seq + 1) {
		set_break(r, AUDIT_DELETED, n, "%" PRIu64 " line(s) deleted before line %" PRIu64
		    " (sequence %" PRIu64 "..%" PRIu64 " missing)", cur->seq - prev_seq - 1, n,
		    prev_seq + 1, cur->seq - 1);
	} else if (cur->seq <= prev_seq) {
		set_break(r, AUDIT_REORDERED, n, "line %" PRIu64 " (sequence %" PRIu64 ") goes back from "
		    "sequence %" PRIu64, n, cur->seq, prev_seq);
	} else {
		/* Consecutive sequence: either line n-1's bytes changed, or this line's
		 * own prev_hash did. If this line still chains to the next one, it is
		 * intact and the edit is on line n-1. */
		char mine[AUDIT_HASH_HEX];
		struct vline nx = { 0 };

		memcpy(mine, cur->hash, sizeof(mine));
		if (!vline_read(f, &nx) || !nx.ok || strcmp(nx.prev, mine) == 0)
			set_break(r, AUDIT_EDITED, n - 1, "line %" PRIu64 " was edited: its hash does not "
			    "match the prev_hash recorded on line %" PRIu64, n - 1, n);
		else
			set_break(r, AUDIT_EDITED, n, "line %" PRIu64 " was edited: its prev_hash does not "
			    "match line %" PRIu64 " and its hash not line %" PRIu64, n, n - 1, n + 1);
		vline_free(&nx);
	}
}

static bool str_is(const json_t *v, const char *want)
{
	const char *s = json_string_value(v);

	return s && strcmp(s, want) == 0;
}

static void check_checkpoint(EVP_PKEY *pub, struct vline *cur, uint64_t n, bool have_prev,
			     const char *prev_hash, uint64_t prev_seq, bool seg_known,
			     uint64_t seg_count, struct audit_verify_report *r)
{
	json_t *cp = cur->cp;
	json_t *js = json_object_get(cp, "sequence"), *jc = json_object_get(cp, "count");
	const char *h = json_string_value(json_object_get(cp, "hash"));
	const char *sig = json_string_value(json_object_get(cp, "signature"));
	json_t *jstop = json_object_get(cp, "stop");
	uint64_t seq, count;

	if (!json_is_integer(js) || !json_is_integer(jc) || !is_hash(h) || !sig ||
	    (jstop && !json_is_true(jstop))) {
		set_break(r, AUDIT_MALFORMED, n, "line %" PRIu64 ": checkpoint lacks sequence, hash, count "
		    "or signature", n);
		return;
	}
	/* The stop checkpoint is a file's last line, which no later line's
	 * prev_hash covers: the fields a SIEM classifies by are checked here
	 * (review, stop 26: its type_uid could be edited unseen) */
	json_t *d = cur->doc;
	if (json_integer_value(json_object_get(d, "category_uid")) != 1 ||
	    json_integer_value(json_object_get(d, "activity_id")) != 99 ||
	    json_integer_value(json_object_get(d, "type_uid")) != 100899 ||
	    !str_is(json_object_get(d, "class_name"), "Event Log Activity") ||
	    !str_is(json_object_get(d, "category_name"), "System Activity") ||
	    !str_is(json_object_get(d, "type_name"), "Event Log Activity: Other")) {
		set_break(r, AUDIT_MALFORMED, n, "line %" PRIu64 ": a checkpoint whose class fields are not a "
		    "checkpoint's (class_name, category, activity or type edited)", n);
		return;
	}
	seq = json_integer_value(js);
	count = json_integer_value(jc);
	if (!audit_checkpoint_verify(pub, seq, h, count, jstop != NULL, sig)) {
		char want[AUDIT_KEYID_HEX];
		const char *kid = json_string_value(json_object_get(cp, "key_id"));

		audit_key_id(pub, want);
		/* kid comes from the file under test: printed only if it is
		 * what a key id is (hex), never terminal controls an editor of
		 * the file could hide the verdict with */
		if (kid && (strlen(kid) != AUDIT_KEYID_HEX - 1 || strspn(kid, "0123456789abcdef") != strlen(kid)))
			kid = "(not a key id)";
		set_break(r, AUDIT_BAD_SIGNATURE, n, "line %" PRIu64 ": checkpoint signature does not verify "
		    "(signed by key %s, verifying with key %s)", n, kid ? kid : "?", want);
		return;
	}
	if (strcmp(h, cur->prev) != 0 || (have_prev && (strcmp(h, prev_hash) || seq != prev_seq)) ||
	    (seg_known && count != seg_count))
		set_break(r, AUDIT_BAD_CHECKPOINT, n, "line %" PRIu64 ": checkpoint covers sequence %" PRIu64
		    ", %" PRIu64 " events, but the lines before it do not match", n, seq, count);
}

int audit_verify_file(const char *path, EVP_PKEY *pub, struct audit_verify_report *r)
{
	struct vline cur = { 0 };
	char prev_hash[AUDIT_HASH_HEX] = "", last_cp[AUDIT_HASH_HEX] = "";
	uint64_t prev_seq = 0, seg_count = 0;
	bool have_prev = false, seg_known = false, prev_stop = false;
	FILE *f = fopen(path, "re");

	memset(r, 0, sizeof(*r));
	if (!f)
		return -errno;
	while (r->kind == AUDIT_INTACT && vline_read(f, &cur)) {
		uint64_t n = ++r->lines;

		if (!cur.ok) {
			set_break(r, AUDIT_MALFORMED, n, cur.doc ? "line %" PRIu64 ": no metadata.sequence or "
			    "metadata.prev_hash" : "line %" PRIu64 ": not valid JSON (edited or torn)", n);
			break;
		}
		if (!have_prev) {
			r->first_sequence = cur.seq;
			r->starts_mid_chain = strcmp(cur.prev, AUDIT_ZERO_HASH) != 0;
			/* a file that starts with a checkpoint (a rotated one) has
			 * none of the events it counts */
			seg_known = cur.seq == 1;
		} else if (strcmp(cur.prev, prev_hash) == 0) {
			if (cur.seq == 1) {           /* a new run after a clean stop */
				/* ... unless the line before is not a stop checkpoint:
				 * then the run before crashed and lost its spool, and
				 * the new one chained from its saved head, a periodic
				 * checkpoint; what that run wrote after it may have
				 * been cut out here without a break (review, stop 26).
				 * Or unless the new run says so itself: a run killed
				 * after a clean stop, before its first checkpoint,
				 * whose spool was lost, leaves a stop checkpoint as
				 * the saved head (review, stop 48) */
				json_t *um = json_object_get(cur.doc, "unmapped");
				bool says = !cur.cp && json_is_object(json_object_get(um, "unclean_stop"));

				if ((!prev_stop || says) && !r->unclean++)
					r->unclean_line = n;
				seg_count = 0;
				seg_known = true;
			} else if (cur.seq != prev_seq + 1) {
				set_break(r, AUDIT_REORDERED, n, "line %" PRIu64 ": sequence %" PRIu64 " follows %"
				    PRIu64 " although the hashes chain", n, cur.seq, prev_seq);
				break;
			}
		} else if (cur.seq == 1 && last_cp[0] && strcmp(cur.prev, last_cp) == 0) {
			/* A new run after one that stopped without its final checkpoint:
			 * the events between that checkpoint and here are unsigned. */
			r->orphaned += r->unsigned_tail;
			r->unsigned_tail = 0;
			seg_count = 0;
			seg_known = true;
		} else if (cur.seq == 1 && strcmp(cur.prev, AUDIT_ZERO_HASH) == 0) {
			r->restarts++;               /* state directory without a chain head */
			r->orphaned += r->unsigned_tail;
			r->unsigned_tail = 0;
			seg_count = 0;
			seg_known = true;
		} else {
			classify(path, f, &cur, n, prev_seq, r);
			break;
		}
		if (cur.cp) {
			check_checkpoint(pub, &cur, n, have_prev, prev_hash, prev_seq, seg_known,
					 seg_count, r);
			if (r->kind != AUDIT_INTACT)
				break;
			r->checkpoints++;
			r->last_checkpoint_line = n;
			r->last_checkpoint_stop = json_object_get(cur.cp, "stop") != NULL;
			r->unsigned_tail = 0;
			seg_count = 0;
			seg_known = true;
			memcpy(last_cp, cur.hash, sizeof(last_cp));
		} else {
			r->events++;
			r->unsigned_tail++;
			seg_count++;
		}
		memcpy(prev_hash, cur.hash, sizeof(prev_hash));
		prev_seq = cur.seq;
		prev_stop = cur.cp && json_object_get(cur.cp, "stop") != NULL;
		have_prev = true;
	}
	/* a read error is not the end of the file: what follows was not seen */
	int err = ferror(f) ? (errno ? -errno : -EIO) : 0;   /* getline's errno: nothing ran since */

	fclose(f);
	vline_free(&cur);
	return err;
}
