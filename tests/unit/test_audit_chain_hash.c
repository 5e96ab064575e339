/* SPDX-License-Identifier: Apache-2.0 */
/*
 * audit_chain_hash (a digest context reused per thread) gives exactly what
 * a one-shot EVP_Digest(EVP_sha256()) gives, over random lines of every
 * length class, from several threads at once, and keeps doing so after a
 * thread that hashed has exited.
 */
#include <openssl/evp.h>
#include <pthread.h>
#include <sys/random.h>

#include "audit_chain.h"
#include "unit.h"

static void reference(const void *p, size_t len, char out[AUDIT_HASH_HEX])
{
	static const char d[] = "0123456789abcdef";
	unsigned char md[32];
	unsigned int n = 0;

	if (!EVP_Digest(p, len, md, &n, EVP_sha256(), NULL) || n != 32)
		abort();
	for (int i = 0; i < 32; i++) {
		out[2 * i] = d[md[i] >> 4];
		out[2 * i + 1] = d[md[i] & 15];
	}
	out[64] = 0;
}

/* xorshift: reproducible "random" lines per thread */
static uint64_t next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

struct job {
	uint64_t seed;
	int rounds, bad;
};

static void *hash_many(void *arg)
{
	struct job *j = arg;
	static __thread unsigned char buf[5000];

	for (int r = 0; r < j->rounds; r++) {
		size_t len = next(&j->seed) % sizeof(buf);
		char a[AUDIT_HASH_HEX], b[AUDIT_HASH_HEX];

		if (r % 7 == 0)
			len = next(&j->seed) % 130;   /* around the 64-byte blocks */
		for (size_t i = 0; i < len; i++)
			buf[i] = (unsigned char)next(&j->seed);
		audit_chain_hash(buf, len, a);
		reference(buf, len, b);
		j->bad += strcmp(a, b) != 0;
	}
	return NULL;
}

static void test_known_values(void)
{
	char h[AUDIT_HASH_HEX];

	audit_chain_hash("", 0, h);
	CHECK_STR(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	audit_chain_hash("abc", 3, h);
	CHECK_STR(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	/* a context reused after a long input starts afresh */
	static char big[100000];
	memset(big, 'x', sizeof(big));
	audit_chain_hash(big, sizeof(big), h);
	audit_chain_hash("abc", 3, h);
	CHECK_STR(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_random_lines(void)
{
	struct job j = { .seed = 0x9e3779b97f4a7c15ull, .rounds = 3000 };

	hash_many(&j);
	CHECK(j.bad == 0);
}

static void test_threads(void)
{
	struct job j[4];
	pthread_t t[4];

	for (int round = 0; round < 2; round++) {   /* threads that exit, then new ones */
		for (int i = 0; i < 4; i++) {
			j[i] = (struct job){ .seed = 1234567 + i * 7919 + round, .rounds = 500 };
			CHECK(pthread_create(&t[i], NULL, hash_many, &j[i]) == 0);
		}
		for (int i = 0; i < 4; i++) {
			pthread_join(t[i], NULL);
			CHECK(j[i].bad == 0);
		}
	}
}

int main(void)
{
	RUN(test_known_values);
	RUN(test_random_lines);
	RUN(test_threads);
	UNIT_DONE("audit_chain_hash");
}
