/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "audit_chain.h"
#include "cli_audit.h"

static int verify_usage(void)
{
	fprintf(stderr, "usage: agentgate audit verify FILE [--pubkey FILE] [--strict]\n");
	return 2;
}

int cmd_audit_verify(int argc, char **argv, const char *state_dir)
{
	const char *file = NULL, *pubpath = NULL;
	char defpub[4096], kid[AUDIT_KEYID_HEX];
	struct audit_verify_report r;
	bool strict = false;
	EVP_PKEY *pub = NULL;
	int err;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--pubkey") == 0 && i + 1 < argc)
			pubpath = argv[++i];
		else if (strcmp(argv[i], "--strict") == 0)
			strict = true;
		else if (argv[i][0] != '-' && !file)
			file = argv[i];
		else
			return verify_usage();
	}
	if (!file)
		return verify_usage();
	if (!pubpath) {
		snprintf(defpub, sizeof(defpub), "%s/%s", state_dir, AUDIT_PUB_FILE);
		pubpath = defpub;
	}
	if ((err = audit_key_load_pub(pubpath, &pub))) {
		fprintf(stderr, "audit verify: public key '%s': %s\n", pubpath,
			err == -EINVAL ? "not an Ed25519 PEM key" : strerror(-err));
		return 2;
	}
	audit_key_id(pub, kid);
	err = audit_verify_file(file, pub, &r);
	EVP_PKEY_free(pub);
	if (err) {
		fprintf(stderr, "audit verify: '%s': %s\n", file, strerror(-err));
		return 2;
	}
	if (r.kind != AUDIT_INTACT) {
		printf("BROKEN %s:%" PRIu64 ": %s: %s\n", file, r.line, audit_break_name(r.kind),
		       r.detail);
		printf("verified before the break: %" PRIu64 " events, %" PRIu64 " checkpoints\n",
		       r.events, r.checkpoints);
		return 1;
	}
	if (r.starts_mid_chain)
		printf("note: line 1 (sequence %" PRIu64 ") continues a chain from an earlier file\n",
		       r.first_sequence);
	if (r.restarts)
		printf("warning: %" PRIu64 " run(s) started a new chain after line 1 (no saved chain "
		       "head): nothing ties a run to the one before it there, so whole runs could have "
		       "been removed, repeated or reordered\n", r.restarts);
	if (r.unclean)
		printf("warning: %" PRIu64 " run(s) began right after a line that is not a stop checkpoint, "
		       "or by reporting that the run before was killed with its spool lost (first at line %"
		       PRIu64 "): the run before ended without its stop checkpoint, and lines it wrote "
		       "after its last checkpoint may have been removed\n", r.unclean, r.unclean_line);
	if (r.orphaned)
		printf("warning: %" PRIu64 " event(s) of runs that stopped without a final checkpoint "
		       "are chained but not signed\n", r.orphaned);
	if (r.unsigned_tail)
		printf("warning: %" PRIu64 " event(s) after the last checkpoint (line %" PRIu64 ") are "
		       "not signed: the file may be truncated or the enforcer still running\n",
		       r.unsigned_tail, r.last_checkpoint_line);
	if (!r.checkpoints)
		printf("warning: no checkpoint: nothing in the file is signed\n");
	bool cut = r.checkpoints && !r.unsigned_tail && !r.last_checkpoint_stop;
	if (cut)
		printf("warning: the file ends at a periodic checkpoint (line %" PRIu64 "), not at a "
		       "stop checkpoint: lines after it may have been cut off, or the enforcer is still "
		       "running\n", r.last_checkpoint_line);
	printf("OK %s: %" PRIu64 " lines, %" PRIu64 " events, %" PRIu64 " checkpoints verified "
	       "(key %s)\n", file, r.lines, r.events, r.checkpoints, kid);
	return strict && (r.unsigned_tail || r.orphaned || r.restarts || r.unclean || !r.checkpoints || cut) ?
	       1 : 0;
}
