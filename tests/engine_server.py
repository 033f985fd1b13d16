"""A stand-in inference server for the engine tests: serves an engine's Prometheus page
(a fixture from tests/fixtures/engines) and a health endpoint, and answers completions.

  python3 engine_server.py FIXTURE [--split] [--control DIR] [--live 'SERIES=DELTA']...
                           [--sleep SECONDS] [--health-path PATH]

  GET  /metrics        the fixture (on the second port with --split; 404 on the first).
                       With --control DIR, the file DIR/metrics picks: ok (default), 500,
                       hang (never answers), big (50 MB of valid lines, no length).
  GET  /health         (or --health-path) DIR/health picks: 200 (default), 503, hang.
  POST /v1/completions reads the body, sleeps --sleep seconds (default 0.15), answers
                       200; then each --live series of the page grows by its DELTA (the
                       text before the value must match the fixture's line exactly).
Prints "API_PORT METRICS_PORT" on stdout, then serves until killed.
"""
import http.server
import os
import sys
import threading
import time

args = sys.argv[1:]
fixture = open(args.pop(0)).read()
split = False
control = None
live = []
sleep = 0.15
health_path = "/health"
while args:
    a = args.pop(0)
    if a == "--split":
        split = True
    elif a == "--control":
        control = args.pop(0)
    elif a == "--live":
        series, delta = args.pop(0).rsplit("=", 1)
        live.append((series, float(delta)))
    elif a == "--sleep":
        sleep = float(args.pop(0))
    elif a == "--health-path":
        health_path = args.pop(0)
    else:
        sys.exit("unknown argument " + a)

lock = threading.Lock()
completed = 0


def mode(name, default):
    if control is None:
        return default
    try:
        with open(os.path.join(control, name)) as f:
            return f.read().strip() or default
    except FileNotFoundError:
        return default


def page():
    """The fixture with the --live series grown by the completed requests."""
    with lock:
        n = completed
    if not live or n == 0:
        return fixture
    out = []
    for line in fixture.split("\n"):
        for series, delta in live:
            if line.startswith(series + " "):
                value = float(line[len(series) + 1 :])
                line = "%s %r" % (series, value + n * delta)
        out.append(line)
    return "\n".join(out)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    serves_metrics = True
    serves_api = True

    def log_message(self, *args):
        pass

    def reply(self, status, body, kind="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/metrics" and self.serves_metrics:
            m = mode("metrics", "ok")
            if m == "500":
                self.reply(500, b"engine error")
            elif m == "hang":
                time.sleep(3600)
            elif m == "big":
                self.protocol_version = "HTTP/1.0"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                line = b'vllm:num_requests_waiting{engine="0",model_name="%s"} 1.0\n' % (b"m" * 40)
                block = line * (65536 // len(line))
                sent = 0
                try:
                    while sent < 50 * 1000 * 1000:
                        self.wfile.write(block)
                        sent += len(block)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True
            else:
                self.reply(200, page().encode(), "text/plain; version=0.0.4; charset=utf-8")
        elif path == health_path and self.serves_api:
            m = mode("health", "200")
            if m == "hang":
                time.sleep(3600)
            else:
                self.reply(int(m), b"" if m == "200" else b"unhealthy")
        else:
            self.reply(404, b"not found")

    def do_POST(self):
        global completed
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        if self.path.split("?")[0] != "/v1/completions" or not self.serves_api:
            self.reply(404, b"not found")
            return
        time.sleep(sleep)
        with lock:
            completed += 1
        self.reply(200, b'{"choices": [{"text": "ok"}]}', "application/json")


class ApiOnly(Handler):
    serves_metrics = False


class MetricsOnly(Handler):
    serves_api = False


def serve(handler):
    s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    s.daemon_threads = True
    threading.Thread(target=s.serve_forever, daemon=True).start()
    return s.server_address[1]


if split:
    api = serve(ApiOnly)
    metrics = serve(MetricsOnly)
else:
    api = metrics = serve(Handler)
print(api, metrics, flush=True)
threading.Event().wait()
