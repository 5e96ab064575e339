/* SPDX-License-Identifier: Apache-2.0 */
/*
 * path_trusted(): a file the enforcer reads with root's rights for an agent
 * (its token_file) must be one no one but root can re-point. Found by
 * review: with the token file in a directory the agent owned, the agent
 * replaced it by a symlink to another agent's root-only token and took
 * that identity. Runs as root (make test does): it chowns to nobody.
 */
#include <ftw.h>
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

static void mkfile(const char *rel, uid_t uid)
{
	char p[512];
	int fd;

	snprintf(p, sizeof(p), "%s/%s", D, rel);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK(write(fd, "x", 1) == 1);
		close(fd);
	}
	CHECK(chown(p, uid, uid) == 0);
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

int main(void)
{
	RUN(test_paths);
	UNIT_DONE("path_trusted");
}
