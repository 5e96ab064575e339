// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for userspace/http_mask.c: zlib decoding (gzip, zlib, raw
 * deflate; bounded; corrupt and trailing bytes refused) and masking of
 * response bodies (JSON whatever the label, detectors for text, refusal).
 */
#include "http_mask.h"
#include "policy.h"
#include "unit.h"

#include <zlib.h>

/* Compresses in with windowBits wb (31 gzip, 15 zlib, -15 raw). */
static size_t zip(const void *in, size_t len, int wb, uint8_t *out, size_t cap)
{
	z_stream zs;

	memset(&zs, 0, sizeof(zs));
	if (deflateInit2(&zs, 6, Z_DEFLATED, wb, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		abort();
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)len;
	zs.next_out = out;
	zs.avail_out = (uInt)cap;
	if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
		abort();
	deflateEnd(&zs);
	return cap - zs.avail_out;
}

static void test_inflate(void)
{
	static const char text[] = "{\"a\": \"hello hello hello hello\"}";
	int wbs[] = { 31, 15, -15 };
	uint8_t z[256], *out;
	size_t zl, ol;

	for (int i = 0; i < 3; i++) {
		zl = zip(text, sizeof(text) - 1, wbs[i], z, sizeof(z));
		CHECK(http_inflate(z, zl, 1024, &out, &ol) == 0);
		CHECK(ol == sizeof(text) - 1 && memcmp(out, text, ol) == 0);
		free(out);
		CHECK(http_inflate(z, zl, 10, &out, &ol) == -E2BIG);   /* over the bound */
		if (wbs[i] != -15)   /* a raw stream has no end marker to miss */
			CHECK(http_inflate(z, zl - 3, 1024, &out, &ol) == -EINVAL);   /* truncated */
	}
	zl = zip(text, sizeof(text) - 1, 31, z, sizeof(z));
	z[zl] = 'X';   /* bytes after the stream */
	CHECK(http_inflate(z, zl + 1, 1024, &out, &ol) == -EINVAL);
	CHECK(http_inflate((const uint8_t *)"not zlib at all", 15, 1024, &out, &ol) == -EINVAL);
	/* a bomb: 4 MiB of zeros in a few KiB, refused at the bound */
	{
		size_t big = 4u << 20;
		char *zeros = calloc(1, big);
		uint8_t *zb = malloc(big);

		zl = zip(zeros, big, 31, zb, big);
		CHECK(zl < 16384);
		CHECK(http_inflate(zb, zl, 1u << 20, &out, &ol) == -E2BIG);
		free(zeros);
		free(zb);
	}
}

static struct mask_rules *compile(char **json, size_t nj, char **det, size_t nd)
{
	struct policy_mask pm = { .present = true };
	const struct policy_mask *pms[1] = { &pm };
	char err[128];

	pm.json.v = json;
	pm.json.n = nj;
	pm.detectors.v = det;
	pm.detectors.n = nd;
	return mask_compile(pms, 1, err, sizeof(err));
}

static void test_mask_body(void)
{
	char *paths[] = { "$.customer.email" }, *dets[] = { "credit_card" };
	struct mask_rules *both = compile(paths, 1, dets, 1), *json_only = compile(paths, 1, NULL, 0);
	const char *body = "{\"customer\": {\"email\": \"a@b.com\"}, \"card\": \"4111111111111111\"}";
	const char *why;
	struct mask_report rep;
	uint8_t z[512];
	size_t zl, ol;
	char *out;

	CHECK(both && json_only);
	CHECK(http_mask_body(both, (const uint8_t *)body, strlen(body), NULL, 0, &out, &ol, &rep, &why) == 0);
	CHECK_STR(out, "{\"customer\":{\"email\":\"****\"},\"card\":\"****\"}");
	CHECK(rep.hits == 2);
	free(out);
	zl = zip(body, strlen(body), 31, z, sizeof(z));
	CHECK(http_mask_body(both, z, zl, "gzip", 4, &out, &ol, &rep, &why) == 0);
	CHECK_STR(out, "{\"customer\":{\"email\":\"****\"},\"card\":\"****\"}");
	free(out);
	CHECK(http_mask_body(both, z, zl, "GZIP", 4, &out, &ol, &rep, &why) == 0);
	free(out);
	/* a coding we cannot decode, or a lie about the coding */
	CHECK(http_mask_body(both, z, zl, "br", 2, &out, &ol, &rep, &why) == -EINVAL && why);
	CHECK(http_mask_body(both, (const uint8_t *)body, strlen(body), "gzip", 4, &out, &ol, &rep, &why) == -EINVAL);
	/* text: detectors; with JSON paths only: refused */
	CHECK(http_mask_body(both, (const uint8_t *)"card 4111111111111111.", 22, NULL, 0, &out, &ol, &rep, &why) == 0);
	CHECK_STR(out, "card ****.");
	free(out);
	CHECK(http_mask_body(json_only, (const uint8_t *)"card 4111111111111111.", 22, NULL, 0, &out, &ol, &rep,
			     &why) == -EINVAL);
	/* JSON with a duplicate name is not JSON we can mask by path */
	CHECK(http_mask_body(json_only, (const uint8_t *)"{\"a\":1,\"a\":2}", 13, NULL, 0, &out, &ol, &rep, &why) ==
	      -EINVAL);
	mask_free(both);
	mask_free(json_only);
}

int main(void)
{
	RUN(test_inflate);
	RUN(test_mask_body);
	UNIT_DONE("http_mask");
}
