# SPDX-License-Identifier: Apache-2.0
"""A local HTTP collector for the audit sink tests: a TEST DOUBLE for Splunk
HEC, Elasticsearch `_bulk` and a generic webhook.

No real Splunk or Elasticsearch is available on the test machine, so this
Python-stdlib server (http.server, one thread per request) behaves the way
their documentation describes, closely enough to exercise the sink's
delivery logic:

* HEC `POST /services/collector/event`: `Authorization: Splunk <token>`
  (401 otherwise), a body of concatenated JSON objects with an `event` each
  (400 "Invalid data format" otherwise). With acks on, the
  `X-Splunk-Request-Channel` header is required (400 "Data channel is
  missing") and the answer carries an `ackId`; `POST /services/collector/ack`
  with `{"acks":[..]}` answers `{"acks":{"N":true|false}}`. Events count as
  indexed only once their ack turns true (after `ack_delay` seconds);
  `lose_unacked` batches are accepted with 200 and an ackId but never
  indexed: their ack stays false, as when an indexer dies.
* `POST /_bulk` (NDJSON, final newline required): per `create` item 201,
  409 when that `_id` is already stored, or an injected 429 / 400.
* Any other POST path: the webhook, a JSON array of events.
* `fail_next` injects that many 503 answers (any endpoint) first;
  `hec_400` answers every HEC event POST 400 "Invalid data format";
  `max_events` answers 413 to a webhook POST carrying more events
  (a proxy's body limit); `hook_pad` makes webhook answers that many bytes
  longer (a receiver that echoes what it got).

Run it in-process (`Collector().start()`), or standalone:
`python3 collector.py PORT [TOKEN]` logs what it receives.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Collector:
    def __init__(self, token="test-token", acks=False, ack_delay=0.2):
        self.token = token
        self.acks = acks
        self.ack_delay = ack_delay
        self.lock = threading.Lock()
        self.fail_next = 0
        self.redirect_next = 0         # next N requests answer 307 (a balancer's maintenance)
        self.hec_400 = False           # HEC event POSTs answer 400 (events refused)
        self.fake_answers = []         # (status, body) for the next HEC event POSTs: not HEC's own
                                       # (a proxy's 202, a 200 page), nothing indexed
        self.max_events = 0            # more events in one POST: 413 (0: no limit)
        self.hook_pad = 0              # webhook 200 answers carry this many more bytes
        self.lose_unacked = 0
        self.es_429_items = 0          # next N new items answer 429
        self.es_400_ids = set()        # these _id answer 400 (mapping error)
        self.es_400_seqs = set()       # events with these metadata.sequence answer 400
        self.es_reverse = False        # items answered in reverse order (an answer
                                       # that is not in request order: a proxy between)
        self.hec = []                  # indexed HEC envelopes, in arrival order
        self.hec_posts = []            # the sequences each HEC POST carried
        self.hec_pending = {}          # ackId -> (ready_at, [envelopes] or None if lost)
        self.hec_channels = set()
        self.next_ack = 0
        self.es_docs = {}              # _id -> (index, doc)
        self.es_order = []             # _id in creation order
        self.es_statuses = []          # every item status answered
        self.webhook = []              # every event received, duplicates included
        self.requests = []             # (path, status)
        self.server = None

    # ---- control ---------------------------------------------------------
    def start(self, port=0):
        col = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                status, resp = col.handle(self.path, self.headers, body)
                data = json.dumps(resp).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server.server_address[1]

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def port(self):
        return self.server.server_address[1]

    # ---- protocol --------------------------------------------------------
    def handle(self, path, headers, body):
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                self.requests.append((path, 503))
                return 503, {"text": "Server is busy", "code": 9}
            if self.redirect_next > 0:
                self.redirect_next -= 1
                self.requests.append((path, 307))
                return 307, {"text": "try the other node"}
            if path.startswith("/services/collector/event"):
                st, r = self.hec_event(headers, body)
            elif path.startswith("/services/collector/ack"):
                st, r = self.hec_ack(headers, body)
            elif path.endswith("/_bulk"):
                st, r = self.bulk(headers, body)
            else:
                st, r = self.hook(headers, body)
            self.requests.append((path, st))
            return st, r

    def hec_auth(self, headers):
        return headers.get("Authorization") == f"Splunk {self.token}"

    def too_large(self, n):
        return self.max_events and n > self.max_events

    def hec_event(self, headers, body):
        if not self.hec_auth(headers):
            return 401, {"text": "Invalid token", "code": 4}
        if self.hec_400:
            return 400, {"text": "Invalid data format", "code": 6}
        if self.fake_answers:
            return self.fake_answers.pop(0)
        chan = headers.get("X-Splunk-Request-Channel")
        if self.acks and not chan:
            return 400, {"text": "Data channel is missing", "code": 10}
        dec = json.JSONDecoder()
        text = body.decode()
        i, envs = 0, []
        while i < len(text):
            while i < len(text) and text[i] in " \r\n\t":
                i += 1
            if i == len(text):
                break
            try:
                obj, i = dec.raw_decode(text, i)
            except ValueError:
                return 400, {"text": "Invalid data format", "code": 6}
            if not isinstance(obj, dict) or "event" not in obj:
                return 400, {"text": "Event field is required", "code": 12}
            envs.append(obj)
        if not envs:
            return 400, {"text": "No data", "code": 5}
        self.hec_posts.append([e["event"].get("metadata", {}).get("sequence") for e in envs
                               if isinstance(e["event"], dict)])
        if not self.acks:
            self.hec.extend(envs)
            return 200, {"text": "Success", "code": 0}
        self.hec_channels.add(chan)
        ack = self.next_ack
        self.next_ack += 1
        if self.lose_unacked > 0:
            self.lose_unacked -= 1
            self.hec_pending[ack] = (time.time() + self.ack_delay, None)
        else:
            self.hec_pending[ack] = (time.time() + self.ack_delay, envs)
        return 200, {"text": "Success", "code": 0, "ackId": ack}

    def hec_ack(self, headers, body):
        if not self.hec_auth(headers):
            return 401, {"text": "Invalid token", "code": 4}
        if not headers.get("X-Splunk-Request-Channel"):
            return 400, {"text": "Data channel is missing", "code": 10}
        try:
            ids = json.loads(body)["acks"]
        except (ValueError, KeyError, TypeError):
            return 400, {"text": "Invalid data format", "code": 6}
        out = {}
        now = time.time()
        for a in ids:
            p = self.hec_pending.get(a)
            done = p is not None and p[1] is not None and now >= p[0]
            if done:
                self.hec.extend(p[1])
                self.hec_pending[a] = (p[0], [])   # indexed once
            out[str(a)] = done or (p is not None and p[1] == [] and now >= p[0])
        return 200, {"acks": out}

    def bulk(self, headers, body):
        text = body.decode()
        if not text.endswith("\n"):
            return 400, {"error": {"type": "illegal_argument_exception",
                                   "reason": "The bulk request must be terminated by a newline [\\n]"}}
        lines = text.split("\n")[:-1]
        if len(lines) % 2:
            return 400, {"error": {"type": "illegal_argument_exception", "reason": "odd lines"}}
        items, errors = [], False
        for k in range(0, len(lines), 2):
            action = json.loads(lines[k])
            meta = action.get("create")
            if meta is None:
                return 400, {"error": {"type": "action_request_validation_exception",
                                       "reason": "only create is expected here"}}
            doc = json.loads(lines[k + 1])
            _id = meta.get("_id")
            if _id in self.es_docs:
                st = 409
            elif _id in self.es_400_ids or doc.get("metadata", {}).get("sequence") in self.es_400_seqs:
                st = 400
            elif self.es_429_items > 0:
                self.es_429_items -= 1
                st = 429
            else:
                self.es_docs[_id] = (meta.get("_index"), doc)
                self.es_order.append(_id)
                st = 201
            self.es_statuses.append(st)
            item = {"_index": meta.get("_index"), "_id": _id, "status": st}
            if st >= 300:
                errors = True
                item["error"] = {"type": {409: "version_conflict_engine_exception",
                                          429: "es_rejected_execution_exception",
                                          400: "mapper_parsing_exception"}[st],
                                 "reason": "injected"}
            items.append({"create": item})
        if self.es_reverse:
            items.reverse()
        return 200, {"took": 1, "errors": errors, "items": items}

    def hook(self, headers, body):
        try:
            arr = json.loads(body)
        except ValueError:
            return 400, {"error": "not JSON"}
        if not isinstance(arr, list):
            return 400, {"error": "expected a JSON array"}
        if self.too_large(len(arr)):
            return 413, {"error": "Request Entity Too Large"}
        self.webhook.extend(arr)
        if self.hook_pad:
            return 200, {"received": len(arr), "echo": "x" * self.hook_pad}
        return 200, {"received": len(arr)}


if __name__ == "__main__":
    c = Collector(token=sys.argv[2] if len(sys.argv) > 2 else "test-token", acks=True)
    port = c.start(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(f"collector on 127.0.0.1:{port}", flush=True)
    try:
        while True:
            time.sleep(5)
            with c.lock:
                print(f"hec {len(c.hec)} es {len(c.es_docs)} webhook {len(c.webhook)}", flush=True)
    except KeyboardInterrupt:
        c.stop()
