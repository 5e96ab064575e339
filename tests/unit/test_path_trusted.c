/* SPDX-License-Identifier: Apache-2.0 */
/*
 * path_trusted(): a file the enforcer reads with root's rights for an agent
 * (its token_file) must be one no one but root can re-point. Found by
 * review: with the token file in a directory the agent owned, the agent
 * replaced it by a symlink to another agent's root-only token and took
 * that identity. Runs as root (make test does): it chowns to nobody.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <string.h>
#include <sys/stat.h>

#include "unit.h"
#include "util.h"

static char D[] = "/tmp/agentgate-unit-path-XXXXXX";

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st, (void)type, (void)ftw;
	return remove(path);
}

static int trusted(const char *rel, char *why, size_t wl)
{
	char p[512];

	if (rel[0] == '/')
		snprintf(p, sizeof(p), "%s", rel);
	else
		snprintf(p, sizeof(p), "%s/%s", D, rel);
	why[0] = 0;
	return path_trusted(p, why, wl);
}

static void putn(const char *rel, const char *text, size_t n, mode_t mode, uid_t uid)
{
	char p[512];
	int fd;

	snprintf(p, sizeof(p), "%s/%s", D, rel);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK(write(fd, text, n) == (ssize_t)n);
		close(fd);
	}
	CHECK(chmod(p, mode) == 0 && chown(p, uid, uid) == 0);
}

static void put(const char *rel, const char *text, mode_t mode, uid_t uid)
{
	putn(rel, text, strlen(text), mode, uid);
}

static void mkfile(const char *rel, uid_t uid)
{
	put(rel, "x", 0600, uid);
}

static void mkd(const char *rel, mode_t mode, uid_t uid)
{
	char p[512];

	snprintf(p, sizeof(p), "%s/%s", D, rel);
	CHECK(mkdir(p, 0700) == 0);
	CHECK(chmod(p, mode) == 0);
	CHECK(chown(p, uid, uid) == 0);
}

static void link_(const char *target, const char *rel, uid_t uid)
{
	char p[512];

	snprintf(p, sizeof(p), "%s/%s", D, rel);
	CHECK(symlink(target, p) == 0);
	CHECK(lchown(p, uid, uid) == 0);
}

static void test_paths(void)
{
	char why[512], abs_[512];
	const uid_t nobody = 65534;

	CHECK(mkdtemp(D) != NULL);
	mkfile("tok", 0);
	mkfile("victim", 0);
	mkd("open", 0777, 0);          /* anyone may write */
	mkd("agent", 0755, nobody);    /* the agent owns it */
	mkd("grp", 0770, 0);
	CHECK(chown(D, 0, 0) == 0);
	mkd("sticky", 01777, 0);
	mkfile("open/tok", 0);
	mkfile("agent/tok", 0);
	mkfile("sticky/tok", 0);
	link_("../victim", "agent/swapped", nobody);
	link_("tok", "rootlink", 0);
	snprintf(abs_, sizeof(abs_), "%s/agent/swapped", D);
	link_(abs_, "via_agent", 0);     /* a root symlink into the agent's directory */
	link_("../victim", "sticky/mine", nobody);
	link_("../tok", "sticky/ours", 0);
	link_("loop2", "loop1", 0);
	link_("loop1", "loop2", 0);

	/* a root-owned file in root-owned directories (the test's dir is under sticky /tmp) */
	CHECK(trusted("tok", why, sizeof(why)) == 0);
	CHECK(trusted("rootlink", why, sizeof(why)) == 0);
	CHECK(trusted("sticky/tok", why, sizeof(why)) == 0);
	CHECK(trusted("sticky/ours", why, sizeof(why)) == 0);
	CHECK(trusted("open/../tok", why, sizeof(why)) == 0);
	CHECK(trusted("./tok", why, sizeof(why)) == 0);
	/* the ways around it */
	CHECK(trusted("agent/tok", why, sizeof(why)) == -EPERM && strstr(why, "may be changed by others"));
	CHECK(trusted("agent/swapped", why, sizeof(why)) == -EPERM);
	CHECK(trusted("via_agent", why, sizeof(why)) == -EPERM);
	CHECK(trusted("open/tok", why, sizeof(why)) == -EPERM);
	CHECK(trusted("grp/x", why, sizeof(why)) == -ENOENT);   /* group root may write */
	CHECK(trusted("sticky/mine", why, sizeof(why)) == -EPERM);
	CHECK(trusted("open/missing", why, sizeof(why)) == -EPERM && strstr(why, "others may create it"));
	CHECK(trusted("missing", why, sizeof(why)) == -ENOENT);
	CHECK(trusted("loop1", why, sizeof(why)) == -ELOOP);
	CHECK(trusted("tok/x", why, sizeof(why)) == -ENOTDIR);
	CHECK(path_trusted("relative/tok", why, sizeof(why)) == -EINVAL);
	CHECK(path_trusted(NULL, why, sizeof(why)) == -EINVAL);
	CHECK(trusted("/etc/passwd", why, sizeof(why)) == 0);

	CHECK(nftw(D, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
}

static char *sread(const char *rel, size_t max, size_t *len, char *why, size_t wl)
{
	char p[512];

	snprintf(p, sizeof(p), "%s/%s", D, rel);
	why[0] = 0;
	errno = 0;
	return secret_read(p, max, len, NULL, why, wl);
}

/* secret_open / secret_read: the upstream passwords, injected tokens and
 * client secrets (review, stop 24: only the token_file went through
 * path_trusted). Every way around it is refused, a FIFO without hanging. */
static void test_secrets(void)
{
	char why[512], p[512], *s;
	size_t len = 0;
	const uid_t nobody = 65534;

	strcpy(D, "/tmp/agentgate-unit-path-XXXXXX");
	CHECK(mkdtemp(D) != NULL);
	mkd("agent", 0755, nobody);
	mkd("open", 0777, 0);
	put("pw", "s3cret\n", 0600, 0);
	put("agent/pw", "s3cret", 0600, 0);
	put("open/pw", "s3cret", 0600, 0);
	put("ww", "s3cret", 0666, 0);             /* anyone may rewrite it */
	put("gw", "s3cret", 0620, 0);             /* group root: allowed */
	put("gwn", "s3cret", 0620, 0);
	snprintf(p, sizeof(p), "%s/gwn", D);
	CHECK(chown(p, 0, nobody) == 0);          /* a group other than root's may write it */
	put("theirs", "s3cret", 0600, nobody);    /* owned by another user */
	put("empty", "", 0600, 0);
	put("big", "0123456789", 0600, 0);
	put("nl", "\r\n\n", 0600, 0);            /* only a newline: empty */
	putn("nul", "s3c\0ret", 7, 0600, 0);           /* a NUL would cut the secret short */
	put("gr", "s3cret\r\n", 0640, 0);
	snprintf(p, sizeof(p), "%s/fifo", D);
	CHECK(mkfifo(p, 0600) == 0);
	snprintf(p, sizeof(p), "%s/adir", D);
	CHECK(mkdir(p, 0700) == 0);

	s = sread("pw", 64, &len, why, sizeof(why));   /* the trailing newline is not the secret */
	CHECK(s && len == 6 && strcmp(s, "s3cret") == 0);
	free(s);
	{
		mode_t m = 0;

		snprintf(p, sizeof(p), "%s/gr", D);
		s = secret_read(p, 64, &len, &m, why, sizeof(why));
		CHECK(s && len == 6 && strcmp(s, "s3cret") == 0 && (m & 07777) == 0640);
		free(s);
	}
	CHECK(!sread("nl", 64, &len, why, sizeof(why)) && errno == ENODATA && strstr(why, "empty"));
	CHECK(!sread("nul", 64, &len, why, sizeof(why)) && errno == EINVAL && strstr(why, "NUL") &&
	      !strstr(why, "s3c"));
	s = sread("gw", 64, &len, why, sizeof(why));
	CHECK(s && len == 6);
	free(s);
	s = sread("big", 10, &len, why, sizeof(why));   /* exactly the bound */
	CHECK(s && len == 10);
	free(s);
	CHECK(!sread("big", 9, &len, why, sizeof(why)) && errno == EFBIG && strstr(why, "larger"));
	CHECK(!sread("empty", 64, &len, why, sizeof(why)) && errno == ENODATA && strstr(why, "empty"));
	CHECK(!sread("agent/pw", 64, &len, why, sizeof(why)) && errno == EPERM &&
	      strstr(why, "may be changed by others"));
	CHECK(!sread("open/pw", 64, &len, why, sizeof(why)) && errno == EPERM);
	CHECK(!sread("ww", 64, &len, why, sizeof(why)) && errno == EPERM && strstr(why, "may be written by others"));
	CHECK(!sread("gwn", 64, &len, why, sizeof(why)) && errno == EPERM);
	CHECK(!sread("theirs", 64, &len, why, sizeof(why)) && errno == EPERM);
	CHECK(!sread("fifo", 64, &len, why, sizeof(why)) && errno == EINVAL && strstr(why, "not a regular file"));
	CHECK(!sread("adir", 64, &len, why, sizeof(why)) && errno == EINVAL);
	CHECK(!sread("missing", 64, &len, why, sizeof(why)) && errno == ENOENT);
	CHECK(secret_open("relative/pw", why, sizeof(why)) == -EINVAL);
	CHECK(!strstr(why, "s3cret"));
	CHECK(nftw(D, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
}

/* private_dir: the state, spool and recording directories (review, stop
 * 24: an existing directory's owner went unchecked, and its files are
 * opened by name with root's rights). */
static void test_private_dir(void)
{
	char why[512], p[512];
	struct stat st;
	const uid_t nobody = 65534;

	strcpy(D, "/tmp/agentgate-unit-path-XXXXXX");
	CHECK(mkdtemp(D) != NULL);
	CHECK(chmod(D, 0755) == 0);
	mkd("agent", 0755, nobody);
	mkd("open", 0777, 0);
	mkd("grp", 0770, 0);
	mkd("wide", 0755, 0);
	mkd("sticky", 01777, 0);
	link_("wide", "link", 0);

	snprintf(p, sizeof(p), "%s/new/spool", D);     /* made, 0700 */
	CHECK(private_dir(p, why, sizeof(why)) == 0);
	CHECK(stat(p, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0700);
	snprintf(p, sizeof(p), "%s/wide", D);          /* root's, made private */
	CHECK(private_dir(p, why, sizeof(why)) == 0);
	CHECK(stat(p, &st) == 0 && (st.st_mode & 07777) == 0700);
	/* the ways around it */
	snprintf(p, sizeof(p), "%s/agent", D);         /* another user's */
	CHECK(private_dir(p, why, sizeof(why)) == -EPERM && strstr(why, "owner uid 65534"));
	snprintf(p, sizeof(p), "%s/agent/spool", D);   /* inside another user's */
	CHECK(private_dir(p, why, sizeof(why)) == -EPERM && strstr(why, "may be changed by others"));
	snprintf(p, sizeof(p), "%s/open", D);          /* anyone may write it: refused, not changed */
	CHECK(private_dir(p, why, sizeof(why)) == -EPERM && strstr(why, "may be written by others"));
	CHECK(stat(p, &st) == 0 && (st.st_mode & 07777) == 0777);
	snprintf(p, sizeof(p), "%s/sticky", D);        /* /tmp's kind */
	CHECK(private_dir(p, why, sizeof(why)) == -EPERM);
	CHECK(stat(p, &st) == 0 && (st.st_mode & 07777) == 01777);
	snprintf(p, sizeof(p), "%s/grp", D);
	CHECK(private_dir(p, why, sizeof(why)) == -EPERM);
	snprintf(p, sizeof(p), "%s/link", D);          /* a symbolic link to a directory */
	CHECK(private_dir(p, why, sizeof(why)) == -ENOTDIR && strstr(why, "not a directory"));
	CHECK(nftw(D, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
}

int main(void)
{
	RUN(test_paths);
	RUN(test_secrets);
	RUN(test_private_dir);
	UNIT_DONE("path_trusted");
}
