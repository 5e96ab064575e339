/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP sinks (libcurl, one reused handle per sink, on the sink's thread):
 *
 * splunk_hec     POST <url>/services/collector/event, "Authorization: Splunk
 *                <token>", concatenated {"time","host","source","sourcetype",
 *                "event"} objects. With ack: true every request carries
 *                X-Splunk-Request-Channel and the batch counts as delivered
 *                only once POST /services/collector/ack says its ackId is
 *                true (a 200 alone only means "looks valid"); an ack that
 *                never comes means the batch is sent again.
 * elasticsearch  POST <url>/_bulk, NDJSON {"create":{"_index","_id":
 *                metadata.uid}} + event: per item 2xx or 409 (already
 *                stored: the _id makes resending idempotent) is delivered,
 *                429/5xx is retried, other 4xx goes to the dead-letter file.
 * webhook        POST <url> with a JSON array of the events; 2xx delivered.
 *
 * Everywhere: 408, 429 and 5xx (and transport errors) are retried by the
 * runner with backoff; other 4xx are permanent (dead letter). The token is
 * read once from token_file, never logged, and wiped at the end.
 */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "audit_sink.h"
#include "util.h"

#define HTTP_CONNECT_TIMEOUT_MS 2000L
#define HTTP_TIMEOUT_MS 10000L
#define HTTP_RESP_MAX (8u << 20)
#define HEC_ACK_POLL_MS 100
/* A batch's indexer acknowledgement is polled this long per attempt (by
 * the clock), and its ackId is polled again by the retries of the same
 * batch before the batch is posted anew: acks of tens of seconds are
 * normal under load, and each new POST is another copy indexed. */
#define HEC_ACK_WAIT_MS env_ms("AGENTGATE_HEC_ACK_WAIT_MS", 30000, &hec_ack_wait_ms)   /* test knob */
static _Atomic uint64_t hec_ack_wait_ms;
/* Then the batch is posted again: no answer tells a slow ack from one the
 * indexer lost (both are false), so a lost one costs this long. The
 * sink's ack_timeout sets it (and caps the wait per attempt). */
#define HEC_ACK_GIVE_UP_MS 60000
#define ES_DEFAULT_INDEX "agentgate-audit"

enum kind { K_HEC, K_ES, K_HOOK };

static uint64_t give_up(const struct audit_sink *s)
{
	return s->cfg->ack_timeout_ms ? s->cfg->ack_timeout_ms : HEC_ACK_GIVE_UP_MS;
}

struct hsink {
	enum kind kind;
	CURL *curl;
	char url[2048], ack_url[2048];
	char token[1024];
	char channel[37];
	char host[256];
	char *body;
	size_t blen, bcap;
	char *resp;
	size_t rlen;
	bool resp_over;
	/* splunk_hec with ack: the batch posted and not yet acknowledged */
	long pend_ack;                 /* -1 none */
	uint64_t pend_first, pend_since_ms;   /* monotonic: a clock step re-posts nothing */
	bool noack_warned;             /* 200 without an ackId: said once */
	size_t pend_n;
};

static int read_token(const char *path, char *out, size_t n)
{
	size_t len;
	char why[300];
	char *t = secret_read(path, n - 1, &len, NULL, why, sizeof(why));

	if (!t) {
		ag_log(LOG_LVL_ERR, "audit: %s", why);
		return -errno ? -errno : -EINVAL;
	}
	while (len && (t[len - 1] == '\n' || t[len - 1] == '\r' || t[len - 1] == ' '))
		len--;
	memcpy(out, t, len);
	out[len] = 0;
	OPENSSL_cleanse(t, n);
	free(t);
	for (size_t i = 0; i < len; i++)   /* it goes into a header */
		if ((unsigned char)out[i] < 0x21 || (unsigned char)out[i] > 0x7e)
			return -EINVAL;
	return len ? 0 : -EINVAL;
}

static void uuid4(char out[37])
{
	uint8_t b[16];

	if (getrandom(b, sizeof(b), 0) != sizeof(b))
		memset(b, 0x5a, sizeof(b));
	b[6] = 0x40 | (b[6] & 0x0f);
	b[8] = 0x80 | (b[8] & 0x3f);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
}

static void strip_suffix(char *s, const char *suffix)
{
	size_t l = strlen(s), sl = strlen(suffix);

	if (l >= sl && strcmp(s + l - sl, suffix) == 0)
		s[l - sl] = 0;
}

/* "type scheme://host/path" for logs and status: a user and password in
 * the URL (Elasticsearch's basic auth) never appear there. */
static void desc_without_userinfo(char *out, size_t cap, const char *type, const char *url)
{
	const char *hs = strstr(url, "://"), *at, *end;

	if (hs) {
		hs += 3;
		/* the last '@' anywhere: a password may hold an unencoded '/'
		 * (never shown, at the cost of an odd description when a path
		 * holds an '@') */
		end = hs + strlen(hs);
		at = memrchr(hs, '@', (size_t)(end - hs));
		if (at) {
			snprintf(out, cap, "%s %.*s%s", type, (int)(hs - url), url, at + 1);
			return;
		}
	}
	snprintf(out, cap, "%s %s", type, url);
}

static int http_init(struct audit_sink *s, enum kind kind)
{
	struct hsink *h = calloc(1, sizeof(*h));
	char base[2048];
	int err;

	if (!h)
		return -ENOMEM;
	s->priv = h;
	h->kind = kind;
	h->pend_ack = -1;
	snprintf(base, sizeof(base), "%s", s->cfg->url);
	strip_suffix(base, "/");
	desc_without_userinfo(s->desc, sizeof(s->desc), s->ops->type, base);
	if (kind == K_HEC) {
		strip_suffix(base, "/services/collector/event");
		strip_suffix(base, "/services/collector");
		snprintf(h->url, sizeof(h->url), "%s/services/collector/event", base);
		snprintf(h->ack_url, sizeof(h->ack_url), "%s/services/collector/ack", base);
		uuid4(h->channel);
	} else if (kind == K_ES) {
		strip_suffix(base, "/_bulk");
		snprintf(h->url, sizeof(h->url), "%s/_bulk", base);
	} else {
		snprintf(h->url, sizeof(h->url), "%s", s->cfg->url);
	}
	if (s->cfg->token_file && (err = read_token(s->cfg->token_file, h->token, sizeof(h->token)))) {
		ag_log(LOG_LVL_ERR, "audit: %s: token_file '%s' unreadable or not one printable token",
		       s->desc, s->cfg->token_file);
		return err;
	}
	gethostname(h->host, sizeof(h->host) - 1);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (!(h->curl = curl_easy_init()))
		return -ENOMEM;
	return 0;
}

static int hec_init(struct audit_sink *s) { return http_init(s, K_HEC); }
static int es_init(struct audit_sink *s) { return http_init(s, K_ES); }
static int hook_init(struct audit_sink *s) { return http_init(s, K_HOOK); }

static void http_fini(struct audit_sink *s)
{
	struct hsink *h = s->priv;

	if (!h)
		return;
	if (h->curl)
		curl_easy_cleanup(h->curl);
	OPENSSL_cleanse(h->token, sizeof(h->token));
	free(h->body);
	free(h->resp);
	free(h);
	s->priv = NULL;
}

static int grow(struct hsink *h, size_t add)
{
	if (h->blen + add <= h->bcap)
		return 0;
	size_t cap = h->bcap ? h->bcap : 64 * 1024;
	while (cap < h->blen + add)
		cap *= 2;
	char *b = realloc(h->body, cap);
	if (!b)
		return -ENOMEM;
	h->body = b;
	h->bcap = cap;
	return 0;
}

static int add(struct hsink *h, const char *p, size_t n)
{
	int err = grow(h, n);

	if (!err) {
		memcpy(h->body + h->blen, p, n);
		h->blen += n;
	}
	return err;
}

static size_t on_data(char *p, size_t sz, size_t n, void *arg)
{
	struct hsink *h = arg;
	size_t len = sz * n;

	if (h->kind == K_HOOK)
		return len;   /* a webhook's 2xx is the acknowledgement; its body is not read */
	if (h->rlen + len > HTTP_RESP_MAX) {
		h->resp_over = true;
		return 0;
	}
	char *r = realloc(h->resp, h->rlen + len + 1);
	if (!r)
		return 0;
	h->resp = r;
	memcpy(h->resp + h->rlen, p, len);
	h->rlen += len;
	h->resp[h->rlen] = 0;
	return len;
}

static int on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	return audit_sink_stopping();   /* nonzero aborts the transfer */
}

/* POSTs body to url; *status receives the HTTP status (0: no answer). */
static int post(struct audit_sink *s, const char *url, const char *ctype, const char *body,
		size_t len, long *status, char *why, size_t wl)
{
	struct hsink *h = s->priv;
	struct curl_slist *hd = NULL;
	char line[1200];
	CURLcode rc;

	h->rlen = 0;
	h->resp_over = false;
	*status = 0;
	snprintf(line, sizeof(line), "Content-Type: %s", ctype);
	hd = curl_slist_append(hd, line);
	if (h->token[0]) {
		snprintf(line, sizeof(line), "Authorization: %s %s",
			 h->kind == K_HEC ? "Splunk" : h->kind == K_ES ? "ApiKey" : "Bearer", h->token);
		hd = curl_slist_append(hd, line);
		OPENSSL_cleanse(line, sizeof(line));
	}
	if (h->kind == K_HEC && s->cfg->ack) {
		snprintf(line, sizeof(line), "X-Splunk-Request-Channel: %s", h->channel);
		hd = curl_slist_append(hd, line);
	}
	hd = curl_slist_append(hd, "Expect:");
	curl_easy_reset(h->curl);
	/* the cookie engine on (reset turns it off, keeping the cookies): a
	 * load balancer's sticky-session cookie keeps the ack polls on the
	 * indexer that took the batch (each counts its ackIds on its own) */
	curl_easy_setopt(h->curl, CURLOPT_COOKIEFILE, "");
	curl_easy_setopt(h->curl, CURLOPT_URL, url);
	curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, hd);
	curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, h);
	curl_easy_setopt(h->curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT_MS, HTTP_CONNECT_TIMEOUT_MS);
	curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, HTTP_TIMEOUT_MS);
	curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h->curl, CURLOPT_FOLLOWLOCATION, 0L);   /* never send the token elsewhere */
	curl_easy_setopt(h->curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h->curl, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);   /* as every context of ours */
	if (s->cfg->ca_file)
		curl_easy_setopt(h->curl, CURLOPT_CAINFO, s->cfg->ca_file);
	rc = curl_easy_perform(h->curl);
	curl_slist_free_all(hd);
	if (rc != CURLE_OK) {
		if (h->resp_over)
			snprintf(why, wl, "the collector's answer is over %u MiB", HTTP_RESP_MAX >> 20);
		else
			snprintf(why, wl, "%s", curl_easy_strerror(rc));
		return -EIO;
	}
	curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, status);
	return 0;
}

/*
 * Retried, not dead-lettered: a collector busy or down, and the answers
 * that refuse the request rather than its events: credentials (401, 403,
 * 407: a token rotated on one side first), the URL (404: an index or an
 * endpoint not there yet). Dead-lettering on those moved the whole backlog
 * out of the SIEM as fast as the collector answered (review, stop 27).
 */
static bool transient(long st)
{
	return st == 401 || st == 403 || st == 404 || st == 407 || st == 408 || st == 429 || st >= 500;
}

/* HEC's "code" in the answer body, or -1. */
static int hec_code(const struct hsink *h)
{
	json_t *r = json_loadb(h->resp ? h->resp : "", h->rlen, 0, NULL);
	json_t *c = json_object_get(r, "code");
	int code = json_is_integer(c) ? (int)json_integer_value(c) : -1;

	json_decref(r);
	return code;
}

/* A 400 of HEC's that refuses the request, not its events: 7 incorrect
 * index, 10 data channel missing, 11 invalid data channel, 14 ACK is
 * disabled, 16 query string authorization not enabled (Splunk's HEC
 * status codes). Events it cannot take are 5, 6, 12, 13, 15. */
static bool hec_config_refused(const struct hsink *h)
{
	int c = hec_code(h);

	return c == 7 || c == 10 || c == 11 || c == 14 || c == 16;
}

/* Common outcome of a whole-batch answer. */
static int settle_status(struct sink_batch *b, long st, const char *what)
{
	if (st >= 200 && st < 300) {
		memset(b->st, SINK_ACK, b->n);
		return 0;
	}
	snprintf(b->why, sizeof(b->why), "%s: HTTP %ld", what, st);
	/* too large for a proxy in front of the collector: smaller batches
	 * (audit.c halves them), a single event dead-lettered */
	if (st == 413 && b->n > 1)
		return -E2BIG;
	/* only a 4xx says the events themselves are refused: a 3xx (a load
	 * balancer's redirect during maintenance; redirects are not followed,
	 * the token stays put) or anything else is retried */
	if (transient(st) || st < 400 || st >= 500)
		return -EAGAIN;
	memset(b->st, SINK_DEAD, b->n);
	return 0;
}

/* metadata.uid of a spooled line (the metadata object comes after the
 * agent's, whose user also has a uid). */
static bool event_uid(const char *line, size_t len, const char **uid, size_t *ul)
{
	const char *m = memmem(line, len, "\"metadata\":{", 12), *u, *e;

	if (!m || !(u = memmem(m, line + len - m, "\"uid\":\"", 7)))
		return false;
	u += 7;
	if (!(e = memchr(u, '"', line + len - u)) || e - u > 64)
		return false;
	*uid = u;
	*ul = e - u;
	return true;
}

static const char *class_of(const char *line, size_t len, char out[16])
{
	const char *p = memmem(line, len, "\"class_uid\":", 12);

	snprintf(out, 16, "%ld", p ? strtol(p + 12, NULL, 10) : 0L);
	return out;
}

/* ---- splunk_hec ---------------------------------------------------------- */

/* The first n lines of b were posted under ack_id. */
static int hec_wait_ack(struct audit_sink *s, long ack_id, struct sink_batch *b, size_t n)
{
	struct hsink *h = s->priv;
	char body[64], key[24];
	long st;

	uint64_t end = now_ns_mono() / 1000000ull + (give_up(s) < HEC_ACK_WAIT_MS ? give_up(s) : HEC_ACK_WAIT_MS);

	snprintf(body, sizeof(body), "{\"acks\":[%ld]}", ack_id);
	snprintf(key, sizeof(key), "%ld", ack_id);
	/* the first poll soon (an indexer acknowledges in tens of ms), then
	 * less often: one batch in flight, so the wait bounds the rate */
	for (unsigned delay = 10; now_ns_mono() / 1000000ull < end && !audit_sink_stopping();
	     delay = delay * 2 < HEC_ACK_POLL_MS ? delay * 2 : HEC_ACK_POLL_MS) {
		usleep(delay * 1000);
		if (post(s, h->ack_url, "application/json", body, strlen(body), &st, b->why,
			 sizeof(b->why)))
			continue;
		if (st != 200)
			continue;
		json_t *r = json_loadb(h->resp ? h->resp : "", h->rlen, 0, NULL);
		bool done = json_is_true(json_object_get(json_object_get(r, "acks"), key));

		json_decref(r);
		if (done) {
			memset(b->st, SINK_ACK, n);   /* the rest (a longer batch) go next */
			h->pend_ack = -1;
			return 0;
		}
	}
	snprintf(b->why, sizeof(b->why), "splunk_hec: ackId %ld not acknowledged by the indexer", ack_id);
	return -ETIMEDOUT;
}

static int hec_send(struct audit_sink *s, struct sink_batch *b)
{
	struct hsink *h = s->priv;
	char head[1024], cls[16];
	long st;
	int err;

	/* the same batch again (its ack did not come in time): its ackId
	 * first, rather than another copy, until give_up() */
	if (s->cfg->ack && h->pend_ack >= 0 && h->pend_first == b->first && h->pend_n <= b->n &&
	    now_ns_mono() / 1000000ull - h->pend_since_ms < give_up(s)) {
		size_t done = h->pend_n;
		int err = hec_wait_ack(s, h->pend_ack, b, done);

		if (err || done == b->n)
			return err;
		/* the batch grew since: the lines after the acknowledged ones
		 * go now, as a batch of their own */
		struct sink_batch rest = { .first = b->first + done, .n = b->n - done, .line = b->line + done,
					   .len = b->len + done, .st = b->st + done };

		/* whatever becomes of them (their statuses say), the first
		 * ones are acknowledged: the cursor passes them */
		if (hec_send(s, &rest))
			memcpy(b->why, rest.why, sizeof(b->why));
		return 0;
	}
	h->pend_ack = -1;
	h->blen = 0;
	for (size_t i = 0; i < b->n; i++) {
		const char *t = memmem(b->line[i], b->len[i], "\"time\":", 7);
		long long ms = t ? strtoll(t + 7, NULL, 10) : (long long)now_ms_realtime();
		json_t *j = json_pack("{s:s, s:s, s:s}", "host", h->host, "source", "agentgate",
				      "sourcetype", "ocsf:");
		char *enc;
		int n;

		json_object_set_new(j, "sourcetype", json_sprintf("ocsf:%s",
					class_of(b->line[i], b->len[i], cls)));
		if (s->cfg->index)
			json_object_set_new(j, "index", json_string(s->cfg->index));
		enc = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
		json_decref(j);
		if (!enc)
			return -ENOMEM;
		/* {"time":S.mmm,<host..>,"event":<line>} */
		n = snprintf(head, sizeof(head), "{\"time\":%lld.%03lld,%s", ms / 1000, ms % 1000, enc + 1);
		free(enc);
		if (n <= 0 || (size_t)n >= sizeof(head))
			return -EINVAL;
		head[n - 1] = ',';
		if ((err = add(h, head, n)) || (err = add(h, "\"event\":", 8)) ||
		    (err = add(h, b->line[i], b->len[i])) || (err = add(h, "}\n", 2)))
			return err;
	}
	if ((err = post(s, h->url, "application/json", h->body, h->blen, &st, b->why,
			sizeof(b->why))))
		return err;
	if (st == 400 && hec_config_refused(h)) {
		/* the request or the configuration refused, not the events:
		 * dead-lettering them would move the backlog out of the SIEM
		 * (review, stop 34); retried until someone fixes the token */
		snprintf(b->why, sizeof(b->why), "splunk_hec: HTTP 400, HEC code %d (the token's index or "
			 "channel settings refuse the request)", hec_code(h));
		return -EAGAIN;
	}
	if (s->cfg->ack && st >= 200 && st < 300 && st != 200) {
		/* a proxy's 202 or 204 is no indexer acknowledgement */
		snprintf(b->why, sizeof(b->why), "splunk_hec: HTTP %ld, not HEC's 200 with an ackId", st);
		return -EAGAIN;
	}
	if (st != 200 || !s->cfg->ack)
		return settle_status(b, st, "splunk_hec");
	json_t *r = json_loadb(h->resp ? h->resp : "", h->rlen, 0, NULL);
	json_t *id = json_object_get(r, "ackId");
	long ack_id = json_is_integer(id) ? (long)json_integer_value(id) : -1;
	/* no ackId: delivered only if this is HEC saying Success (code 0),
	 * not a page a proxy or WAF answered 200 with */
	bool hec_ok = json_is_integer(json_object_get(r, "code")) && json_integer_value(json_object_get(r, "code")) == 0;

	json_decref(r);
	if (ack_id < 0 && !hec_ok) {
		snprintf(b->why, sizeof(b->why), "splunk_hec: HTTP 200 without HEC's answer (no ackId, no code 0)");
		return -EAGAIN;
	}
	if (ack_id < 0) {
		/* Indexer acknowledgement is off for this token (or the
		 * receiver): the batch was taken (200) and there is no ack to
		 * wait for. Posting it again would index it again, every few
		 * seconds, for good, while the spool filled (review, stop 27):
		 * it counts as delivered at 200, and the log says that this
		 * sink is no better than an unacknowledged one. */
		if (!h->noack_warned)
			ag_log(LOG_LVL_WARN, "audit: sink %s: ack: true, but the collector answers no ackId "
			       "(indexer acknowledgement disabled on this token?): events count as delivered "
			       "when it answers 200", s->desc);
		h->noack_warned = true;
		memset(b->st, SINK_ACK, b->n);
		return 0;
	}
	h->pend_ack = ack_id;
	h->pend_first = b->first;
	h->pend_n = b->n;
	h->pend_since_ms = now_ns_mono() / 1000000ull;
	return hec_wait_ack(s, ack_id, b, b->n);
}

/* ---- elasticsearch --------------------------------------------------------- */

/*
 * The "create" item of a _bulk answer for the event whose _id is uid: the
 * one at position k (Elasticsearch answers in request order) when it names
 * that _id, else the one that does, anywhere in the answer; NULL when none
 * does. An answer that is short, reordered or names other documents (a
 * proxy in between, another version) never has one event's status taken
 * for another's: a 201 for the wrong _id would ack an event never stored,
 * a 400 would dead-letter one that was.
 */
static json_t *es_item(json_t *items, size_t k, const char *uid, size_t ul)
{
	size_t n = json_array_size(items);

	for (size_t j = 0; j < n; j++) {
		json_t *it = json_object_get(json_array_get(items, (k + j) % n), "create");
		const char *id = json_string_value(json_object_get(it, "_id"));

		if (id && strlen(id) == ul && memcmp(id, uid, ul) == 0)
			return it;
	}
	return NULL;
}

static int es_send(struct audit_sink *s, struct sink_batch *b)
{
	struct hsink *h = s->priv;
	const char *index = s->cfg->index ? s->cfg->index : ES_DEFAULT_INDEX;
	char act[512];
	long st;
	int err;

	h->blen = 0;
	for (size_t i = 0; i < b->n; i++) {
		const char *uid;
		size_t ul;
		int n;

		if (!event_uid(b->line[i], b->len[i], &uid, &ul)) {
			b->st[i] = SINK_DEAD;   /* cannot happen for our own lines */
			continue;
		}
		n = snprintf(act, sizeof(act), "{\"create\":{\"_index\":\"%s\",\"_id\":\"%.*s\"}}\n",
			     index, (int)ul, uid);
		if ((size_t)n >= sizeof(act))
			return -EINVAL;
		if ((err = add(h, act, n)) || (err = add(h, b->line[i], b->len[i])) ||
		    (err = add(h, "\n", 1)))
			return err;
	}
	if ((err = post(s, h->url, "application/x-ndjson", h->body, h->blen, &st, b->why,
			sizeof(b->why))))
		return err;
	if (st != 200)
		return settle_status(b, st, "elasticsearch");
	json_t *r = json_loadb(h->resp ? h->resp : "", h->rlen, 0, NULL);
	json_t *items = json_object_get(r, "items");
	size_t k = 0;
	for (size_t i = 0; i < b->n; i++) {
		const char *uid;
		size_t ul;

		if (b->st[i] == SINK_DEAD || !event_uid(b->line[i], b->len[i], &uid, &ul))
			continue;
		json_t *it = es_item(items, k++, uid, ul);
		json_t *js = json_object_get(it, "status");
		long ist = json_is_integer(js) ? (long)json_integer_value(js) : 0;

		if (!it) {
			/* no item names this event: not confirmed */
			snprintf(b->why, sizeof(b->why), "elasticsearch: no item in the answer for _id %.*s",
				 (int)ul, uid);
		} else if ((ist >= 200 && ist < 300) || ist == 409) {
			b->st[i] = SINK_ACK;   /* 409: that _id is stored already */
		} else if (ist && !transient(ist)) {
			const char *type = json_string_value(json_object_get(json_object_get(it, "error"),
									     "type"));
			b->st[i] = SINK_DEAD;
			snprintf(b->why, sizeof(b->why), "elasticsearch: item %ld%s%s", ist,
				 type ? " " : "", type ? type : "");
		} else if (!b->why[0] || b->st[i] == SINK_RETRY) {
			snprintf(b->why, sizeof(b->why), "elasticsearch: item %ld", ist);
		}
	}
	json_decref(r);
	return 0;
}

/* ---- webhook ------------------------------------------------------------- */

static int hook_send(struct audit_sink *s, struct sink_batch *b)
{
	struct hsink *h = s->priv;
	long st;
	int err;

	h->blen = 0;
	if ((err = add(h, "[", 1)))
		return err;
	for (size_t i = 0; i < b->n; i++)
		if ((i && (err = add(h, ",", 1))) || (err = add(h, b->line[i], b->len[i])))
			return err;
	if ((err = add(h, "]", 1)))
		return err;
	if ((err = post(s, h->url, "application/json", h->body, h->blen, &st, b->why,
			sizeof(b->why))))
		return err;
	return settle_status(b, st, "webhook");
}

const struct audit_sink_ops audit_sink_hec_ops = {
	.type = "splunk_hec", .init = hec_init, .send = hec_send, .fini = http_fini, .batch_max = 500,
};
const struct audit_sink_ops audit_sink_es_ops = {
	.type = "elasticsearch", .init = es_init, .send = es_send, .fini = http_fini, .batch_max = 500,
};
const struct audit_sink_ops audit_sink_webhook_ops = {
	.type = "webhook", .init = hook_init, .send = hook_send, .fini = http_fini, .batch_max = 500,
};
