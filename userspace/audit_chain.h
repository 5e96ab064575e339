/* SPDX-License-Identifier: Apache-2.0 */
/*
 * audit_chain: tamper evidence for the audit trail (hash chain + signed
 * checkpoints), shared by the writer (audit.c) and `agentgate audit verify`.
 *
 * Canonical form. Every event line carries metadata.prev_hash: the lowercase
 * hex SHA-256 of the previous line's bytes exactly as written, without its
 * trailing '\n'. A line's own hash therefore covers its prev_hash, and the
 * chain can be recomputed from the file alone. The first event of a run
 * chains from the line hash saved at the last checkpoint in
 * <state-dir>/audit-chain.state, or from 64 zeros when there is none.
 *
 * Checkpoints are Event Log Activity (1008, activity 99 "Other") events with
 * unmapped.checkpoint = {sequence, hash, count, alg, key_id, signature}:
 * sequence and hash are those of the event just before the checkpoint (so
 * hash == the checkpoint's own prev_hash), count is the number of
 * non-checkpoint events since the previous checkpoint of the run. The
 * Ed25519 signature (hex) is over the bytes of
 *     "agentgate-audit-checkpoint/1\n<sequence>\n<hash>\n<count>"
 * (decimal integers, no trailing newline). key_id is the first 16 hex digits
 * of SHA-256 over the raw 32-byte public key.
 */
#ifndef AGENTGATE_AUDIT_CHAIN_H
#define AGENTGATE_AUDIT_CHAIN_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUDIT_HASH_HEX 65     /* 64 hex digits + NUL */
#define AUDIT_SIG_HEX 129     /* Ed25519: 64 bytes */
#define AUDIT_KEYID_HEX 17
#define AUDIT_ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"
#define AUDIT_KEY_FILE "audit-signing.key"
#define AUDIT_PUB_FILE "audit-signing.pub"
#define AUDIT_CHAIN_FILE "audit-chain.state"

/* Hex SHA-256 of len bytes into out. */
void audit_chain_hash(const void *line, size_t len, char out[AUDIT_HASH_HEX]);

/* Loads <dir>/audit-signing.key, or creates it (Ed25519, PEM PKCS#8, mode
 * 0600) when absent, and (re)writes <dir>/audit-signing.pub (PEM, 0644).
 * Refuses a key file that is not a regular file or is readable by group or
 * others (-EPERM). 0 with *out owned by the caller (EVP_PKEY_free), or -errno
 * (-EINVAL: not an Ed25519 key). */
int audit_key_open(const char *dir, EVP_PKEY **out);
/* Loads a PEM public key (or a private key, whose public half is used).
 * 0 or -errno; *out owned by the caller. */
int audit_key_load_pub(const char *path, EVP_PKEY **out);
/* key_id as defined above; "" if the key has no raw public form. */
void audit_key_id(EVP_PKEY *k, char out[AUDIT_KEYID_HEX]);

/* Signs a checkpoint; sig receives the hex signature. 0 or -EIO. */
int audit_checkpoint_sign(EVP_PKEY *k, uint64_t seq, const char *hash, uint64_t count, bool stop,
			  char sig[AUDIT_SIG_HEX]);
/* true only when sig is a valid signature of these fields under k. */
bool audit_checkpoint_verify(EVP_PKEY *k, uint64_t seq, const char *hash, uint64_t count, bool stop,
			     const char *sig);

/* The saved chain head (hash of the last checkpoint line) in dir; writes
 * AUDIT_ZERO_HASH when there is none or it is unreadable. *running (NULL:
 * not wanted) says a run had begun after that checkpoint and had not
 * stopped cleanly when the file was last written (its second line). */
void audit_chain_state_load(const char *dir, char out[AUDIT_HASH_HEX], bool *running);
/* Saves it atomically (tmp + rename). 0 or -errno. */
int audit_chain_state_save(const char *dir, const char *hash, bool running);

enum audit_break {
	AUDIT_INTACT = 0,
	AUDIT_EDITED,         /* a line's bytes changed: its successor's prev_hash disagrees */
	AUDIT_DELETED,        /* sequence gap and prev_hash names no line in the file */
	AUDIT_REORDERED,      /* prev_hash names another line of the file, or sequence goes back */
	AUDIT_BAD_SIGNATURE,  /* checkpoint signature does not verify under the public key */
	AUDIT_BAD_CHECKPOINT, /* checkpoint fields disagree with the lines it covers */
	AUDIT_MALFORMED,      /* not JSON, or no metadata.sequence / prev_hash */
};

const char *audit_break_name(enum audit_break k);

struct audit_verify_report {
	uint64_t lines, events, checkpoints;   /* events excludes checkpoints */
	uint64_t unsigned_tail;     /* events after the last verified checkpoint */
	uint64_t last_checkpoint_line;
	bool last_checkpoint_stop;  /* it is a run's stop checkpoint (signed as such) */
	uint64_t orphaned;          /* events of runs that stopped before a checkpoint */
	uint64_t restarts;          /* runs chained from a fresh (zero) head after line 1 */
	uint64_t unclean;           /* runs that begin (sequence 1) right after a line that is not
				     * a stop checkpoint, or with an unclean_stop event: the run
				     * before ended unsigned, and lines after its last checkpoint
				     * may have been removed */
	uint64_t unclean_line;      /* the first such run's first line */
	bool starts_mid_chain;      /* line 1 chains from a line not in this file */
	uint64_t first_sequence;
	/* the first break */
	enum audit_break kind;
	uint64_t line;              /* 1-based line the break is reported at */
	char detail[320];
};

/* Walks the JSON-lines file at path, recomputing the chain and verifying
 * checkpoint signatures under pub, and stops at the first break. 0 when the
 * walk ran (r->kind says whether the file is intact), -errno when the file
 * cannot be read. */
int audit_verify_file(const char *path, EVP_PKEY *pub, struct audit_verify_report *r);

#endif
