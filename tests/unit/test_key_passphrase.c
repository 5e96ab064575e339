/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Encrypted private keys are refused, never prompted for. OpenSSL's default
 * pass-phrase callback reads the controlling terminal: an enforcer started
 * in the foreground stopped its main loop at the next token refresh, waiting
 * on "Enter PEM pass phrase:" (found by review). Each load here runs in a
 * child that has a terminal nobody types into; a load that prompts does not
 * return, and the child is killed after 3 s. (Not an alarm: OpenSSL's
 * prompt catches SIGALRM and gives up quietly.)
 */
#include <signal.h>
#include <sys/wait.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "unit.h"
#include "audit_chain.h"
#include "ident_assert.h"

static char *pem_of(EVP_PKEY *k, bool encrypted, size_t *len)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p, *out = NULL;
	long n;

	if (b && PEM_write_bio_PrivateKey(b, k, encrypted ? EVP_aes_128_cbc() : NULL,
					  encrypted ? (unsigned char *)"secret" : NULL, encrypted ? 6 : 0,
					  NULL, NULL) == 1 && (n = BIO_get_mem_data(b, &p)) > 0 &&
	    (out = malloc(n + 1))) {
		memcpy(out, p, n);
		out[n] = 0;
		*len = (size_t)n;
	}
	BIO_free(b);
	return out;
}

/* Runs fn in a child whose controlling terminal is a fresh pty; returns
 * fn's result, or -1000 when the child did not end by itself in 5 s. */
static int with_terminal(int (*fn)(void *), void *arg)
{
	int master = posix_openpt(O_RDWR | O_NOCTTY), st;
	pid_t pid;

	if (master < 0 || grantpt(master) || unlockpt(master))
		return -2000;
	pid = fork();
	if (pid == 0) {
		int slave;

		setsid();
		slave = open(ptsname(master), O_RDWR);   /* the session's controlling terminal */
		if (slave < 0)
			_exit(200);
		_exit(fn(arg) + 100);
	}
	if (pid < 0)
		return -2000;
	for (int i = 0; i < 300; i++) {   /* nobody types: a prompt waits */
		if (waitpid(pid, &st, WNOHANG) == pid) {
			close(master);
			return WIFEXITED(st) ? WEXITSTATUS(st) - 100 : -1000;
		}
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	close(master);
	return -1000;
}

static int load_assert_key(void *arg)
{
	const char *pem = arg;
	EVP_PKEY *k = NULL;
	const char *alg = NULL;
	char why[200] = "";
	int rc = ident_assert_key_load(pem, strlen(pem), &k, &alg, why, sizeof(why));

	EVP_PKEY_free(k);
	return rc == -EINVAL ? 1 : rc == 0 ? 0 : 2;
}

static int load_audit_pub(void *arg)
{
	EVP_PKEY *k = NULL;
	int rc = audit_key_load_pub(arg, &k);

	EVP_PKEY_free(k);
	return rc == -EINVAL ? 1 : rc == 0 ? 0 : 2;
}

static void test_encrypted_keys_refused(void)
{
	EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"), *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	size_t n;
	char *plain = ec ? pem_of(ec, false, &n) : NULL, *enc = ec ? pem_of(ec, true, &n) : NULL;
	char *edenc = ed ? pem_of(ed, true, &n) : NULL, *edplain = ed ? pem_of(ed, false, &n) : NULL;
	char dir[] = "/tmp/agentgate-unit-key-XXXXXX", path[128], ppath[128];
	FILE *f;

	CHECK(plain && enc && edenc && edplain);
	if (!plain || !enc || !edenc || !edplain)
		goto out;
	CHECK(strstr(enc, "ENCRYPTED") != NULL);
	CHECK(with_terminal(load_assert_key, plain) == 0);   /* the control: a plain key loads */
	CHECK(with_terminal(load_assert_key, enc) == 1);     /* refused, not prompted for */

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/enc.pem", dir);
	snprintf(ppath, sizeof(ppath), "%s/plain.pem", dir);
	if ((f = fopen(path, "w"))) {
		fputs(edenc, f);
		fclose(f);
	}
	if ((f = fopen(ppath, "w"))) {
		fputs(edplain, f);
		fclose(f);
	}
	CHECK(with_terminal(load_audit_pub, ppath) == 0);
	CHECK(with_terminal(load_audit_pub, path) == 1);
	unlink(path);
	unlink(ppath);
	rmdir(dir);
out:
	free(plain);
	free(enc);
	free(edenc);
	free(edplain);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(ed);
}

int main(void)
{
	RUN(test_encrypted_keys_refused);
	UNIT_DONE("key_passphrase");
}
