/* SPDX-License-Identifier: Apache-2.0 */
/* `agentgate replay`: prints a recorded session (format in recording.h). */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "admin.h"
#include "cli_audit.h"

#define RBUF (64 * 1024)

static int usage(void)
{
	fprintf(stderr, "usage: agentgate replay SESSION [--dir DIR] [--raw]\n"
		"  SESSION: a .rec/.idx path, a session name in DIR, or a connection uid\n");
	return 2;
}

static bool exists(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static bool ends_with(const char *s, const char *suf)
{
	size_t l = strlen(s), sl = strlen(suf);

	return l >= sl && strcmp(s + l - sl, suf) == 0;
}

/* base path (without extension) of the session, or -ENOENT. */
static int find_session(const char *sess, const char *dir, char *base, size_t n)
{
	char p[4400], best[256] = "", want[160];
	DIR *d;
	struct dirent *de;

	if ((ends_with(sess, ".rec") || ends_with(sess, ".idx")) && exists(sess)) {
		snprintf(base, n, "%.*s", (int)strlen(sess) - 4, sess);
		return 0;
	}
	if (strchr(sess, '/'))
		return -ENOENT;
	snprintf(p, sizeof(p), "%s/%s.idx", dir, sess);
	if (exists(p)) {
		snprintf(base, n, "%s/%s", dir, sess);
		return 0;
	}
	/* a connection uid: the newest session of that socket */
	snprintf(want, sizeof(want), "-%s.idx", sess);
	if (!(d = opendir(dir)))
		return -errno;
	while ((de = readdir(d)))
		if (ends_with(de->d_name, want) && strcmp(de->d_name, best) > 0)
			snprintf(best, sizeof(best), "%s", de->d_name);
	closedir(d);
	if (!best[0])
		return -ENOENT;
	snprintf(base, n, "%s/%.*s", dir, (int)strlen(best) - 4, best);
	return 0;
}

struct zin {
	FILE *f;
	z_stream zs;
	unsigned char in[RBUF];
	bool end;
};

/* Exactly n bytes of the inflated stream into out; false when the stream
 * ends first (a session cut short). */
static bool zread(struct zin *z, unsigned char *out, size_t n)
{
	z->zs.next_out = out;
	z->zs.avail_out = n;
	while (z->zs.avail_out) {
		if (!z->zs.avail_in) {
			size_t got = fread(z->in, 1, sizeof(z->in), z->f);

			if (!got)
				return false;
			z->zs.next_in = z->in;
			z->zs.avail_in = got;
		}
		int rc = inflate(&z->zs, Z_NO_FLUSH);

		if (rc == Z_STREAM_END && z->zs.avail_out)
			return false;
		if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
			return false;
	}
	return true;
}

static void print_escaped(const unsigned char *b, size_t n)
{
	fputs("    ", stdout);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = b[i];

		if (c == '\n') {
			fputs("\\n", stdout);
			if (i + 1 < n)
				fputs("\n    ", stdout);
		} else if (c == '\\') {
			fputs("\\\\", stdout);
		} else if (c == '\r') {
			fputs("\\r", stdout);
		} else if (c == '\t') {
			fputs("\\t", stdout);
		} else if (c >= 0x20 && c < 0x7f) {
			putchar(c);
		} else {
			printf("\\x%02x", c);
		}
	}
	putchar('\n');
}

static void print_header(const char *line, const char *name)
{
	json_t *h = json_loads(line, 0, NULL);
	const char *s;

	printf("session %s", name);
	if ((s = json_string_value(json_object_get(h, "agent"))))
		printf("  agent %s", s);
	if ((s = json_string_value(json_object_get(h, "target"))))
		printf("  target %s", s);
	json_t *src = json_object_get(h, "src"), *dst = json_object_get(h, "dst");
	if (src && dst)
		printf("  %s:%lld -> %s:%lld", json_string_value(json_object_get(src, "ip")),
		       json_integer_value(json_object_get(src, "port")),
		       json_string_value(json_object_get(dst, "ip")),
		       json_integer_value(json_object_get(dst, "port")));
	if ((s = json_string_value(json_object_get(h, "upstream"))) && *s)
		printf("  via %s", s);
	printf("\n");
	json_decref(h);
}

static int replay(const char *base, bool raw)
{
	char p[4400], line[512];
	unsigned char *buf = NULL;
	size_t cap = 0;
	struct zin *z = calloc(1, sizeof(*z));
	FILE *idx;
	int ret = 0;
	uint64_t entries = 0, bytes = 0;
	bool truncated = false;

	snprintf(p, sizeof(p), "%s.idx", base);
	idx = fopen(p, "re");
	snprintf(p, sizeof(p), "%s.rec", base);
	if (z)
		z->f = fopen(p, "re");
	if (!z || !idx || !z->f || inflateInit(&z->zs) != Z_OK) {
		fprintf(stderr, "replay: cannot open session '%s': %s\n", base, strerror(errno));
		ret = 1;
		goto out;
	}
	while (fgets(line, sizeof(line), idx)) {
		uint64_t us, off, len;
		char dir;

		if (line[0] == '#') {
			line[strcspn(line, "\n")] = 0;
			if (strncmp(line, "# truncated", 11) == 0) {
				/* the writer stopped here: said, never hidden */
				fprintf(raw ? stderr : stdout, "%s\n", line + 2);
				truncated = true;
			} else if (!raw && entries == 0 && line[1] == ' ') {
				const char *slash = strrchr(base, '/');

				print_header(line + 2, slash ? slash + 1 : base);
			}
			continue;
		}
		if (sscanf(line, "%" SCNu64 " %c %" SCNu64 " %" SCNu64, &us, &dir, &off, &len) != 4 ||
		    (dir != 'u' && dir != 'd') || off != bytes || len > (1u << 30)) {
			fprintf(stderr, "replay: '%s.idx': bad entry %" PRIu64 "\n", base, entries + 1);
			ret = 1;
			break;
		}
		if (len > cap) {
			unsigned char *nb = realloc(buf, len);

			if (!nb) {
				ret = 1;
				break;
			}
			buf = nb;
			cap = len;
		}
		if (!zread(z, buf, len)) {
			fprintf(stderr, "replay: '%s.rec' ends before entry %" PRIu64 " (session cut "
				"short)\n", base, entries + 1);
			ret = 1;
			break;
		}
		entries++;
		bytes += len;
		if (raw) {
			fwrite(buf, 1, len, stdout);
			continue;
		}
		time_t t = us / 1000000;
		struct tm tm;
		char ts[32];
		gmtime_r(&t, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
		printf("%s.%06" PRIu64 "Z %s %" PRIu64 " bytes\n", ts, us % 1000000,
		       dir == 'u' ? "agent>upstream" : "upstream>agent", len);
		print_escaped(buf, len);
	}
	if (!raw && !ret)
		printf("end of session: %" PRIu64 " writes, %" PRIu64 " bytes%s\n", entries, bytes,
		       truncated ? " (the recording was cut short: see above)" : "");
out:
	if (z) {
		inflateEnd(&z->zs);
		if (z->f)
			fclose(z->f);
	}
	if (idx)
		fclose(idx);
	free(z);
	free(buf);
	return ret;
}

int cmd_replay(int argc, char **argv, const char *state_dir)
{
	const char *sess = NULL, *dir = NULL;
	char defdir[4200], base[4400];
	bool raw = false;
	int err;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
			dir = argv[++i];
		else if (strcmp(argv[i], "--raw") == 0)
			raw = true;
		else if (argv[i][0] != '-' && !sess)
			sess = argv[i];
		else
			return usage();
	}
	if (!sess)
		return usage();
	if (!dir) {
		/* the running enforcer's audit.recording.dir, else the state
		 * directory's recordings/ */
		json_t *req = json_pack("{s:s}", "cmd", "status");
		json_t *st = req ? admin_call(state_dir, req) : NULL;
		const char *rd = json_string_value(json_object_get(json_object_get(st, "audit"),
								   "recording_dir"));

		if (rd)
			snprintf(defdir, sizeof(defdir), "%s", rd);
		else
			snprintf(defdir, sizeof(defdir), "%s/recordings", state_dir);
		dir = defdir;
		json_decref(req);
		json_decref(st);
	}
	if ((err = find_session(sess, dir, base, sizeof(base)))) {
		fprintf(stderr, "replay: no session '%s' in '%s'\n", sess, dir);
		return 1;
	}
	return replay(base, raw);
}
