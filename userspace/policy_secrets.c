/* SPDX-License-Identifier: Apache-2.0 */
/*
 * policy_secrets: the secret files a policy names for targets' upstreams and
 * for audit sinks, and which of them group or others may access. DESIGN.md
 * §3: such a file is reported (log, policy check, status, audit), never
 * refused, and is read and used as any other. Only the file's mode is looked
 * at (stat): nothing here opens or reads a secret.
 *
 * An identity's client_secret_file and private_key_file are ident.c's, which
 * notes their mode each time it reads them (principal.secret_file_exposed).
 */
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>

#include "policy.h"

static const char *const sink_types[] = {
	[SINK_FILE] = "file", [SINK_STDOUT] = "stdout", [SINK_SYSLOG] = "syslog",
	[SINK_SPLUNK_HEC] = "splunk_hec", [SINK_ELASTICSEARCH] = "elasticsearch",
	[SINK_WEBHOOK] = "webhook",
};

static void each(const struct policy_secret *s, void (*fn)(void *arg, const struct policy_secret *s),
		 void *arg)
{
	if (s->path)
		fn(arg, s);
}

void policy_secret_files(const struct policy *p, void (*fn)(void *arg, const struct policy_secret *s),
			 void *arg)
{
	for (size_t i = 0; i < p->ntargets; i++) {
		const struct policy_target *t = &p->targets[i];
		const struct policy_upstream *u = &t->upstream;
		struct policy_secret s = { .target = t->name };

		s.field = "password_file", s.path = u->password_file, each(&s, fn, arg);
		s.field = "key_file", s.path = u->key_file, each(&s, fn, arg);
		s.field = "bearer_token_file", s.path = u->bearer_token_file, each(&s, fn, arg);
		s.field = "basic_auth_file", s.path = u->basic_auth_file, each(&s, fn, arg);
		s.field = "header.value_file", s.path = u->header_value_file, each(&s, fn, arg);
	}
	for (size_t i = 0; i < p->audit.nsinks; i++) {
		const struct policy_sink *k = &p->audit.sinks[i];
		struct policy_secret s = { .sink = i, .field = "token_file", .path = k->token_file };

		s.sink_type = (unsigned)k->type < sizeof(sink_types) / sizeof(sink_types[0]) ? sink_types[k->type]
											     : "unknown";
		each(&s, fn, arg);
	}
}

unsigned policy_secret_exposed(const char *path)
{
	struct stat st;

	/* stat follows a symbolic link, as the read does: the mode that counts
	 * is the file's the secret comes from */
	if (!path || stat(path, &st) < 0)
		return 0;
	return (st.st_mode & (S_IRWXG | S_IRWXO)) ? (unsigned)(st.st_mode & 07777) : 0;
}

void policy_secret_owner(const struct policy_secret *s, char *out, size_t len)
{
	if (s->target)
		snprintf(out, len, "target '%s'", s->target);
	else
		snprintf(out, len, "audit sink %zu (%s)", s->sink, s->sink_type);
}

struct warn_ctx {
	void (*fn)(void *arg, const char *msg);
	void *arg;
};

static void warn_exposed(void *arg, const struct policy_secret *s)
{
	struct warn_ctx *w = arg;
	unsigned mode = policy_secret_exposed(s->path);
	char owner[300], msg[PATH_MAX + 400];

	if (!mode)
		return;
	policy_secret_owner(s, owner, sizeof(owner));
	snprintf(msg, sizeof(msg), "%s: %s '%s' may be accessed by group or others (mode %04o); make it 0600",
		 owner, s->field, s->path, mode);
	w->fn(w->arg, msg);
}

void policy_secret_warnings(const struct policy *p, void (*fn)(void *arg, const char *msg), void *arg)
{
	struct warn_ctx w = { fn, arg };

	policy_secret_files(p, warn_exposed, &w);
}
