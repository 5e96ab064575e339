/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the audit keys of the policy added with the sinks: ca_file,
 * ack, file rotation (rotate_bytes, rotate_age, keep) and recording.
 */
#include "policy.h"
#include "unit.h"

#define HEAD "version: 1\nagents: [{name: a}]\n"

static struct policy *load(const char *text, struct policy_errors *e)
{
	return policy_load_buffer("audit.yaml", text, strlen(text), e);
}

static bool has_msg(const struct policy_errors *e, const char *sub)
{
	for (int i = 0; i < e->n; i++)
		if (strstr(e->e[i].msg, sub))
			return true;
	return false;
}

static void test_sink_fields(void)
{
	struct policy_errors e;
	struct policy *p = load(HEAD
		"audit:\n"
		"  sinks:\n"
		"    - {type: file, path: /tmp/a.jsonl, rotate_bytes: 10MiB, rotate_age: 1h, keep: 3}\n"
		"    - {type: syslog, address: 127.0.0.1:514, transport: tls, ca_file: /etc/ca.pem}\n"
		"    - {type: splunk_hec, url: 'https://h:8088', token_file: /t, ack: true, ca_file: /c}\n"
		"    - {type: elasticsearch, url: 'http://e:9200', index: audit, ca_file: /c}\n"
		"    - {type: webhook, url: 'http://w/x', ca_file: /c}\n"
		"  recording: {dir: /var/lib/agentgate/rec, max_bytes: 1GiB, max_age: 48h}\n", &e);

	CHECK(p != NULL);
	if (!p)
		return;
	CHECK(p->audit.nsinks == 5);
	CHECK(p->audit.sinks[0].rotate_bytes == 10ull << 20);
	CHECK(p->audit.sinks[0].rotate_age_ms == 3600000);
	CHECK(p->audit.sinks[0].keep == 3);
	CHECK_STR(p->audit.sinks[1].ca_file, "/etc/ca.pem");
	CHECK_STR(p->audit.sinks[1].transport, "tls");
	CHECK(p->audit.sinks[2].ack);
	CHECK(!p->audit.sinks[3].ack);
	CHECK_STR(p->audit.recording_dir, "/var/lib/agentgate/rec");
	CHECK(p->audit.recording_max_bytes == 1ull << 30);
	CHECK(p->audit.recording_max_age_ms == 48u * 3600000);
	policy_free(p);
}

static void test_defaults(void)
{
	struct policy_errors e;
	struct policy *p = load(HEAD "audit: {sinks: [{type: file, path: /tmp/a}]}\n", &e);

	CHECK(p != NULL);
	if (!p)
		return;
	CHECK(p->audit.sinks[0].keep == 5);
	CHECK(p->audit.sinks[0].rotate_bytes == 0);
	CHECK(p->audit.sinks[0].rotate_age_ms == 0);
	CHECK(p->audit.sinks[0].ca_file == NULL);
	CHECK(p->audit.recording_dir == NULL);
	policy_free(p);
}

/* Each key is refused where it does not apply, and bad values are named. */
static void test_refused(void)
{
	static const struct { const char *audit, *msg; } cases[] = {
		{ "{sinks: [{type: file, path: /a, ack: true}]}", "'ack' does not apply to file" },
		{ "{sinks: [{type: syslog, address: 127.0.0.1:514, rotate_bytes: 1MiB}]}",
		  "'rotate_bytes' does not apply to syslog" },
		{ "{sinks: [{type: webhook, url: 'http://w', ack: true}]}", "'ack' does not apply to webhook" },
		{ "{sinks: [{type: stdout, ca_file: /c}]}", "'ca_file' does not apply to stdout" },
		{ "{sinks: [{type: splunk_hec, url: 'http://h', token_file: /t, ack: yes}]}",
		  "ack must be true or false" },
		{ "{sinks: [{type: file, path: /a, rotate_bytes: lots}]}", "bad size 'lots'" },
		{ "{sinks: [{type: file, path: /a, rotate_age: soon}]}", "bad duration 'soon'" },
		{ "{sinks: [{type: file, path: /a, keep: 0}]}", "keep must be in 1..1000" },
		{ "{sinks: [{type: file, path: /a, keep: 1001}]}", "keep must be in 1..1000" },
		{ "{sinks: [{type: file, path: /a, rotate: 5}]}", "rotate" },
		{ "{sinks: [], recording: {dir: /r, max_files: 3}}", "max_files" },
		{ "{sinks: [], recording: {max_bytes: 1GiB}}", "dir" },
		{ "{sinks: [], recording: {dir: /r, max_age: forever}}", "bad duration 'forever'" },
		{ "{sinks: [], recording: {dir: /r, max_bytes: 0}}", "bad size '0'" },
		{ "{sinks: [], recording: [/r]}", "recording" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[512];
		struct policy_errors e;
		struct policy *p;

		snprintf(text, sizeof(text), HEAD "audit: %s\n", cases[i].audit);
		p = load(text, &e);
		CHECK(p == NULL);
		if (p) {
			fprintf(stderr, "  accepted: %s\n", cases[i].audit);
			policy_free(p);
			continue;
		}
		if (!has_msg(&e, cases[i].msg)) {
			fprintf(stderr, "  %s: no error containing \"%s\"; got \"%s\"\n", cases[i].audit,
				cases[i].msg, e.n ? e.e[0].msg : "");
			CHECK(0);
		}
	}
}

int main(void)
{
	RUN(test_sink_fields);
	RUN(test_defaults);
	RUN(test_refused);
	UNIT_DONE("policy_audit");
}
