/* SPDX-License-Identifier: Apache-2.0 */
/* The audit writer's hash chain and checkpoints, checked by the verifier on
 * a real file sink, then tampered with line by line. */
#include <sys/stat.h>

#include "audit.h"
#include "audit_chain.h"
#include "unit.h"

static char dir[] = "/tmp/ag-audit-chain-XXXXXX";
static char logpath[512], tmppath[512];
static char *lines[256];
static int nlines;

static void load_lines(void)
{
	FILE *f = fopen(logpath, "r");
	char *buf = NULL;
	size_t cap = 0;

	nlines = 0;
	while (f && nlines < 256 && getline(&buf, &cap, f) > 0)
		lines[nlines++] = strdup(buf);
	free(buf);
	if (f)
		fclose(f);
}

/* Writes lines[] (with the given order/omission) to tmppath and verifies. */
static struct audit_verify_report verify_lines(const int *order, int n, EVP_PKEY *pub)
{
	struct audit_verify_report r;
	FILE *f = fopen(tmppath, "w");

	for (int i = 0; i < n; i++)
		fputs(lines[order[i]], f);
	fclose(f);
	CHECK(audit_verify_file(tmppath, pub, &r) == 0);
	return r;
}

static int ident[256];
static EVP_PKEY *pub;

static void write_run(void)
{
	struct policy_sink sink = { .type = SINK_FILE, .path = logpath };
	struct policy p = { .path = "unit.yaml", .audit = { .sinks = &sink, .nsinks = 1 } };

	snprintf(p.hash, sizeof(p.hash), "%s", "abc");
	CHECK(audit_set_state_dir(dir) == 0);
	audit_set_checkpoint(10, 0);
	CHECK(audit_open(&p) == 0);
	for (int i = 0; i < 25; i++) {
		json_t *ev = audit_event(4001, 1, "Open");

		json_object_set_new(ev, "message", json_string("hello world"));
		audit_emit(ev);
	}
	audit_close();
}

static void test_key_files(void)
{
	char path[600];
	struct stat st;

	snprintf(path, sizeof(path), "%s/" AUDIT_KEY_FILE, dir);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	snprintf(path, sizeof(path), "%s/" AUDIT_PUB_FILE, dir);
	CHECK(audit_key_load_pub(path, &pub) == 0);
	/* the private key never appears in the trail */
	for (int i = 0; i < nlines; i++)
		CHECK(!strstr(lines[i], "PRIVATE"));
	CHECK(strlen(audit_key_fingerprint()) == 16);
}

static void test_intact(void)
{
	struct audit_verify_report r = verify_lines(ident, nlines, pub);

	CHECK(nlines == 28);   /* 25 events + checkpoints after 10, 20 and at close */
	CHECK(r.kind == AUDIT_INTACT);
	CHECK(r.events == 25 && r.checkpoints == 3 && r.unsigned_tail == 0);
	CHECK(!r.starts_mid_chain);
}

static void test_sign_roundtrip(void)
{
	char sig[AUDIT_SIG_HEX];
	EVP_PKEY *k;

	CHECK(audit_key_open(dir, &k) == 0);   /* loads the existing key */
	CHECK(audit_checkpoint_sign(k, 7, AUDIT_ZERO_HASH, 3, sig) == 0);
	CHECK(audit_checkpoint_verify(pub, 7, AUDIT_ZERO_HASH, 3, sig));
	CHECK(!audit_checkpoint_verify(pub, 8, AUDIT_ZERO_HASH, 3, sig));
	CHECK(!audit_checkpoint_verify(pub, 7, AUDIT_ZERO_HASH, 4, sig));
	sig[5] = sig[5] == 'a' ? 'b' : 'a';
	CHECK(!audit_checkpoint_verify(pub, 7, AUDIT_ZERO_HASH, 3, sig));
	EVP_PKEY_free(k);
}

static void test_edited(void)
{
	char *saved = lines[4], *ed = strdup(saved), *m = strstr(ed, "hello");
	struct audit_verify_report r;

	m[0] = 'j';   /* still valid JSON */
	lines[4] = ed;
	r = verify_lines(ident, nlines, pub);
	CHECK(r.kind == AUDIT_EDITED && r.line == 5);
	/* an edit of a line's own prev_hash is named on that line */
	m[0] = 'h';
	m = strstr(ed, "\"prev_hash\":\"") + 13;
	m[0] = m[0] == '0' ? '1' : '0';
	r = verify_lines(ident, nlines, pub);
	CHECK(r.kind == AUDIT_EDITED && r.line == 5);
	/* an edit that breaks the JSON */
	ed[0] = 'X';
	r = verify_lines(ident, nlines, pub);
	CHECK(r.kind == AUDIT_MALFORMED && r.line == 5);
	lines[4] = saved;
	free(ed);
}

static void test_deleted(void)
{
	int order[256], n = 0;

	for (int i = 0; i < nlines; i++)
		if (i != 4 && i != 5)
			order[n++] = i;
	struct audit_verify_report r = verify_lines(order, n, pub);
	CHECK(r.kind == AUDIT_DELETED && r.line == 5);
}

static void test_reordered(void)
{
	int order[256];

	memcpy(order, ident, sizeof(order));
	order[4] = 5;
	order[5] = 4;
	struct audit_verify_report r = verify_lines(order, nlines, pub);
	CHECK(r.kind == AUDIT_REORDERED && r.line == 5);
}

static void test_bad_signature(void)
{
	char *saved = lines[10], *ed = strdup(saved), *m;
	struct audit_verify_report r;

	CHECK(strstr(saved, "\"checkpoint\"") != NULL);
	m = strstr(ed, "\"signature\":\"") + 13;
	m[3] = m[3] == 'a' ? 'b' : 'a';
	lines[10] = ed;
	r = verify_lines(ident, nlines, pub);
	CHECK(r.kind == AUDIT_BAD_SIGNATURE && r.line == 11);
	lines[10] = saved;
	free(ed);
}

static void test_wrong_key(void)
{
	char other[] = "/tmp/ag-audit-chain-other-XXXXXX";
	EVP_PKEY *k;

	CHECK(mkdtemp(other) != NULL);
	CHECK(audit_key_open(other, &k) == 0);
	struct audit_verify_report r = verify_lines(ident, nlines, k);
	CHECK(r.kind == AUDIT_BAD_SIGNATURE && r.line == 11);
	EVP_PKEY_free(k);
}

static void test_truncated_tail(void)
{
	struct audit_verify_report r = verify_lines(ident, 15, pub);

	CHECK(r.kind == AUDIT_INTACT && r.checkpoints == 1 && r.unsigned_tail == 4);
	CHECK(r.last_checkpoint_line == 11);
}

static void test_second_run_chains(void)
{
	struct audit_verify_report r;

	write_run();   /* same process: sequence continues, chain head from state */
	for (int i = 0; i < nlines; i++)
		free(lines[i]);
	load_lines();
	CHECK(nlines == 56);
	r = verify_lines(ident, nlines, pub);
	CHECK(r.kind == AUDIT_INTACT && r.events == 50 && r.checkpoints == 6);
}

static void test_key_mode_refused(void)
{
	char path[600];
	EVP_PKEY *k = NULL;

	snprintf(path, sizeof(path), "%s/" AUDIT_KEY_FILE, dir);
	chmod(path, 0644);
	CHECK(audit_key_open(dir, &k) == -EPERM && !k);
	chmod(path, 0600);
}

int main(void)
{
	for (int i = 0; i < 256; i++)
		ident[i] = i;
	if (!mkdtemp(dir))
		return 2;
	snprintf(logpath, sizeof(logpath), "%s/audit.jsonl", dir);
	snprintf(tmppath, sizeof(tmppath), "%s/tampered.jsonl", dir);
	write_run();
	load_lines();
	RUN(test_key_files);
	RUN(test_intact);
	RUN(test_sign_roundtrip);
	RUN(test_edited);
	RUN(test_deleted);
	RUN(test_reordered);
	RUN(test_bad_signature);
	RUN(test_wrong_key);
	RUN(test_truncated_tail);
	RUN(test_second_run_chains);
	RUN(test_key_mode_refused);
	for (int i = 0; i < nlines; i++)
		free(lines[i]);
	EVP_PKEY_free(pub);
	UNIT_DONE("audit_chain");
}
