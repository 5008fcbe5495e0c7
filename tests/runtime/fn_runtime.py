#!/usr/bin/env python3
"""A function runtime for the end-to-end tests (tests/tests/e2e.rs).

It speaks the runtime side of api.md "Dispatch to functions": the control plane POSTs
{"input", "metadata"} with X-Execution-Id, X-Dispatch-Attempt, X-Trace-Id,
Idempotency-Key (first attempt only) and X-Callback-Url. Standard library only, so a
fresh CI machine needs nothing but python3.

The behaviour of one invocation is chosen by its input, so one runtime serves every
test. An input that is not an object, or has no "mode", is echoed.

  {"mode": "echo", ...}                       200, the input as JSON
  {"mode": "fail", "status": 503, "times": 1} answer `status` (default 500) to the first
                                              `times` attempts of the execution (default:
                                              all of them), then echo
  {"mode": "sleep", "ms": 300}                sleep, then echo
  {"mode": "cold", "init_ms": 1234}           echo with X-Cold-Start: true and
                                              X-Init-Duration-Ms
  {"mode": "text", "text": "hello"}           200 text/plain
  {"mode": "callback", "output": X}           POST {"success": true, "output": X} to
                                              <X-Callback-Url>/<X-Execution-Id>:complete,
                                              then answer 202 with an empty body
  {"mode": "callback", "output": X,           answer 202 with an empty body at once; a
   "after": "answer"}                         thread posts the callback once the test
                                              calls POST /release/<execution id>
  {"mode": "callback", "output": X,           hold the call until the test calls
   "after": "release"}                        POST /release/<execution id>, then post the
                                              callback, then answer 202
  {"mode": "callback", "via": "env", ...}     as above, to $CALLBACK_URL (what a replica of
                                              the process provider is given) instead of
                                              X-Callback-Url

GET /stats answers what the runtime saw: every call per execution (attempt and
headers), the most invocations it ever ran at once, and the status each callback got.

It binds 127.0.0.1 on the port given as its only argument, else on `PORT` (how the
control plane's `process` provider starts it as a `DEPLOYMENT` replica), else on a free
one, and prints the port it got as its first line of stdout and `pid=<its pid>` as the
second (the replica tests find a replica's process through its log).
"""

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Callbacks go straight to the control plane: never through a proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Stats:
    """What the runtime saw, shared by the handler threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = {}  # execution id -> [{"attempt", "idempotencyKey", ...}]
        self.in_flight = 0
        self.max_in_flight = 0
        self.callbacks = {}  # execution id -> HTTP status the callback got
        self.releases = {}  # execution id -> threading.Event

    def enter(self, execution_id, call):
        with self.lock:
            self.calls.setdefault(execution_id, []).append(call)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return len(self.calls[execution_id])

    def leave(self):
        with self.lock:
            self.in_flight -= 1

    def release_event(self, execution_id):
        with self.lock:
            return self.releases.setdefault(execution_id, threading.Event())

    def snapshot(self):
        with self.lock:
            return {
                "calls": self.calls,
                "inFlight": self.in_flight,
                "maxInFlight": self.max_in_flight,
                "callbacks": self.callbacks,
            }


STATS = Stats()


def post_callback(callback_base, execution_id, attempt, output):
    """Completes the execution the way the nanofaas runtimes do, and records the answer."""
    url = f"{callback_base.rstrip('/')}/{execution_id}:complete"
    body = json.dumps({"success": True, "output": output}).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "X-Dispatch-Attempt": attempt},
    )
    try:
        with OPENER.open(request, timeout=10) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError as error:
        status = f"failed: {error}"
    with STATS.lock:
        STATS.callbacks[execution_id] = status


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the control plane pools connections
    disable_nagle_algorithm = True  # else every response stalls ~40 ms (delayed ACK)

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass

    def answer(self, status, body=b"", content_type="application/json", headers=None):
        # Leave before the first byte goes out: once the control plane has the answer it
        # may dispatch the next invocation, and that one must not count this one as
        # still running.
        self.leave()
        self.send_response(status)
        if body or content_type != "application/json":
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def answer_json(self, value, status=200, headers=None):
        self.answer(status, json.dumps(value).encode(), headers=headers)

    def do_GET(self):
        if self.path == "/stats":
            self.answer_json(STATS.snapshot())
        elif self.path == "/health":
            self.answer_json({"status": "ok"})
        else:
            self.answer_json({"error": "no such path"}, status=404)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.startswith("/release/"):
            STATS.release_event(self.path[len("/release/"):]).set()
            self.answer(204)
            return
        execution_id = self.headers.get("X-Execution-Id", "")
        call = {
            "attempt": self.headers.get("X-Dispatch-Attempt"),
            "idempotencyKey": self.headers.get("Idempotency-Key"),
            "traceId": self.headers.get("X-Trace-Id"),
            "callbackUrl": self.headers.get("X-Callback-Url"),
        }
        seen = STATS.enter(execution_id, call)
        self.running = True
        try:
            self.invoke(json.loads(raw or b"null"), execution_id, seen)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the control plane gave up on this call (timeout, callback won)
        finally:
            self.leave()

    def leave(self):
        if getattr(self, "running", False):
            self.running = False
            STATS.leave()

    def invoke(self, body, execution_id, seen):
        payload = body.get("input") if isinstance(body, dict) else None
        spec = payload if isinstance(payload, dict) else {}
        mode = spec.get("mode", "echo")
        if mode == "fail":
            times = spec.get("times")
            if times is None or seen <= times:
                status = int(spec.get("status", 500))
                self.answer(status, f"failure {seen} requested".encode(), "text/plain")
                return
        elif mode == "sleep":
            time.sleep(spec.get("ms", 0) / 1000)
        elif mode == "cold":
            headers = {"X-Cold-Start": "true", "X-Init-Duration-Ms": str(spec.get("init_ms", 0))}
            self.answer_json(payload, headers=headers)
            return
        elif mode == "text":
            self.answer(200, spec.get("text", "").encode(), "text/plain; charset=utf-8")
            return
        elif mode == "callback":
            self.callback(spec, execution_id)
            return
        self.answer_json(payload)

    def callback(self, spec, execution_id):
        if spec.get("via") == "env":
            callback_base = os.environ.get("CALLBACK_URL")
        else:
            callback_base = self.headers.get("X-Callback-Url")
        attempt = self.headers.get("X-Dispatch-Attempt", "1")
        output = spec.get("output")
        if spec.get("after") == "answer":
            release = STATS.release_event(execution_id)

            def later():
                release.wait(timeout=30)
                post_callback(callback_base, execution_id, attempt, output)

            self.answer(202)
            threading.Thread(target=later, daemon=True).start()
        elif spec.get("after") == "release":
            STATS.release_event(execution_id).wait(timeout=30)
            post_callback(callback_base, execution_id, attempt, output)
            self.answer(202)
        else:
            post_callback(callback_base, execution_id, attempt, output)
            self.answer(202)


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A control plane killed with its connections open (tests/tests/durability.rs
        # does it on purpose) resets them: not worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("PORT") or 0)
    server = Server(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    print(f"pid={os.getpid()}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
