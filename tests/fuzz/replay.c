// SPDX-License-Identifier: Apache-2.0
/*
 * Replay fuzz corpora without libFuzzer (systemd's fuzz-main.c idea), so
 * every input a fuzzer ever kept runs in `make test` as a regression test.
 * Link with one fuzz_<name>.c and the code it tests, under ASan/UBSan.
 *
 *   replay DIR...   feed every regular file in each DIR to
 *                   LLVMFuzzerTestOneInput, in name order, and print
 *                   "fuzz-replay <basename of DIR>: N passed, M failed"
 *
 * An input that crashes kills the process (that is the point); its path is
 * printed first. M counts files that could not be read. Exit 0 only when
 * every input in every directory ran.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REPLAY_MAX_INPUT (1u << 20)   /* libFuzzer never keeps inputs this big */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Present when built with a sanitizer; called before it exits on a finding. */
void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

static char current[4096];

/* Async-signal-safe: only write(2). */
static void say_current(void)
{
	static const char pre[] = "fuzz-replay: crashed on input '";
	static const char post[] = "'\n";

	if (current[0] == '\0')
		return;
	(void)!write(STDERR_FILENO, pre, sizeof(pre) - 1);
	(void)!write(STDERR_FILENO, current, strlen(current));
	(void)!write(STDERR_FILENO, post, sizeof(post) - 1);
}

static void on_fatal_signal(int sig)
{
	say_current();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Read a whole file into an exact-size buffer, so ASan sees over-reads. */
static int read_input(int dirfd, const char *name, uint8_t **buf, size_t *len)
{
	struct stat st;
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	int err = 0;

	*buf = NULL;
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		err = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		err = -EISDIR;
		goto out;
	}
	if (st.st_size < 0 || (uint64_t)st.st_size > REPLAY_MAX_INPUT) {
		err = -EFBIG;
		goto out;
	}
	*len = (size_t)st.st_size;
	*buf = malloc(*len ? *len : 1);
	if (!*buf) {
		err = -ENOMEM;
		goto out;
	}
	for (size_t got = 0; got < *len;) {
		ssize_t r = read(fd, *buf + got, *len - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			err = r < 0 ? -errno : -EIO;   /* shrank under us */
			break;
		}
		got += (size_t)r;
	}
out:
	close(fd);
	if (err) {
		free(*buf);
		*buf = NULL;
	}
	return err;
}

static int skip_entry(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

static const char *base_name(const char *path)
{
	size_t n = strlen(path);

	while (n > 1 && path[n - 1] == '/')
		n--;
	while (n > 0 && path[n - 1] != '/')
		n--;
	return path + n;
}

static int replay_dir(const char *dir)
{
	struct dirent **ents;
	int passed = 0, failed = 0;
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int n = dirfd < 0 ? -1 : scandir(dir, &ents, skip_entry, alphasort);
	char name[256];

	snprintf(name, sizeof(name), "%s", base_name(dir));
	name[strcspn(name, "/")] = '\0';
	if (n < 0) {
		fprintf(stderr, "fuzz-replay: '%s': %s\n", dir, strerror(errno));
		if (dirfd >= 0)
			close(dirfd);
		printf("fuzz-replay %s: 0 passed, 1 failed\n", name);
		return 1;
	}
	for (int i = 0; i < n; i++) {
		uint8_t *buf;
		size_t len = 0;
		int err = read_input(dirfd, ents[i]->d_name, &buf, &len);

		if (err == -EISDIR) {
			free(ents[i]);
			continue;
		}
		if (err < 0) {
			fprintf(stderr, "fuzz-replay: '%s/%s': %s\n", dir, ents[i]->d_name,
				strerror(-err));
			failed++;
		} else {
			snprintf(current, sizeof(current), "%s/%s", dir, ents[i]->d_name);
			LLVMFuzzerTestOneInput(buf, len);
			current[0] = '\0';
			free(buf);
			passed++;
		}
		free(ents[i]);
	}
	free(ents);
	close(dirfd);
	printf("fuzz-replay %s: %d passed, %d failed\n", name, passed, failed);
	fflush(stdout);
	return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
	static const int sigs[] = { SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL };
	int rc = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR...\n", argv[0]);
		return 2;
	}
	/* Under a sanitizer its own SEGV handler reports (and then calls back);
	 * replacing it would lose the report. abort() is ours to catch. */
	if (__sanitizer_set_death_callback)
		__sanitizer_set_death_callback(say_current);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (sigs[i] == SIGABRT || !__sanitizer_set_death_callback)
			signal(sigs[i], on_fatal_signal);
	for (int i = 1; i < argc; i++)
		rc |= replay_dir(argv[i]);
	return rc;
}
