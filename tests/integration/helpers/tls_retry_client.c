/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tls_retry_client: a TLS 1.3 client that offers a key share for P-256 only
 * (while listing X25519 too), so a server that prefers X25519 answers its
 * first ClientHello with a HelloRetryRequest; it names SNI1 in the first
 * ClientHello and SNI2 in the second. For test_datapath.py: the server
 * picks its certificate from the second, which an enforcer that judged
 * only the first never saw.
 *
 *   tls_retry_client IP PORT SNI1 SNI2 [ech | ech=0xTYPE]
 *
 * With "ech", both ClientHellos carry an encrypted_client_hello extension
 * (0xfe0d) of made-up bytes, as a client sending GREASE ECH does (OpenSSL
 * 3.0 has no ECH: a custom extension of that type; servers ignore it).
 * "ech=0xfe0a" sends it under that code point (an earlier draft's).
 *
 * Prints "ok <subject CN of the server's certificate>" after the handshake,
 * or "failed" (exit 1).
 */
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int add_ech(SSL *s, unsigned int type, unsigned int context, const unsigned char **out,
		   size_t *outlen, X509 *x, size_t chainidx, int *al, void *arg)
{
	/* outer ECHClientHello: type 0, a cipher suite, config id, an enc and a payload */
	static const unsigned char grease[] = { 0, 0, 1, 0, 1, 0x2a, 0, 4, 1, 2, 3, 4, 0, 8, 9, 9, 9, 9, 9, 9, 9, 9 };

	(void)s, (void)type, (void)context, (void)x, (void)chainidx, (void)al, (void)arg;
	*out = grease;
	*outlen = sizeof(grease);
	return 1;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	char cn[256] = "";
	SSL_CTX *ctx;
	X509 *peer;
	SSL *ssl;
	unsigned int ech_type = 0xfe0d;
	int fd, r;

	if (argc == 6 && strncmp(argv[5], "ech=", 4) == 0)
		ech_type = (unsigned int)strtoul(argv[5] + 4, NULL, 16);
	else if (argc != 5 && !(argc == 6 && strcmp(argv[5], "ech") == 0))
		return 2;
	a.sin_port = htons((uint16_t)atoi(argv[2]));
	if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1)
		return 2;
	ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set1_groups_list(ctx, "P-256:X25519");   /* a key share for the first only */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	if (argc == 6 && !SSL_CTX_add_custom_ext(ctx, ech_type, SSL_EXT_CLIENT_HELLO, add_ech, NULL, NULL, NULL, NULL)) {
		puts("failed: cannot add the extension");
		return 1;
	}
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		puts("failed");
		return 1;
	}
	ssl = SSL_new(ctx);
	/* the first ClientHello goes out; the answer cannot be read yet (an
	 * empty memory BIO), so the second ClientHello is built after the name
	 * changes, whatever the timing */
	SSL_set_bio(ssl, BIO_new(BIO_s_mem()), BIO_new_socket(fd, BIO_NOCLOSE));
	SSL_set_tlsext_host_name(ssl, argv[3]);
	SSL_connect(ssl);
	SSL_set_tlsext_host_name(ssl, argv[4]);    /* the second one names this */
	SSL_set0_rbio(ssl, BIO_new_socket(fd, BIO_NOCLOSE));
	r = SSL_connect(ssl);
	if (r != 1 || !(peer = SSL_get_peer_certificate(ssl))) {
		puts("failed");
		return 1;
	}
	X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof(cn));
	printf("ok %s\n", cn);
	return 0;
}
