"""Ollama's shape, for the front-door port tests: a front server that answers each request
by calling its runner, a child process of its own, over HTTP on 127.0.0.1 (as Ollama's
server calls its llama runner, and SGLang's router its workers).

Front (HTTP/1.1, keep-alive):
  GET /api/generate/N   200 with the runner's answer, after POST /completion to the runner
Runner (a new connection per call, as a client library without a pool does):
  POST /completion      200 "tokens"
Prints "FRONT_PORT RUNNER_PORT" on stdout, then serves until killed (the runner ends with
it: it exits when its stdin closes).
"""
import http.client
import http.server
import subprocess
import sys
import threading


class Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Runner(Quiet):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/completion":
            self.reply(200, b"tokens")
        else:
            self.reply(404, b"missing")


def runner():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Runner)
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # The front process holds our stdin: when it dies, so do we.
    sys.stdin.read()


def front():
    child = subprocess.Popen(
        [sys.executable, __file__, "runner"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    runner_port = int(child.stdout.readline())

    class Front(Quiet):
        def do_GET(self):
            if not self.path.startswith("/api/generate/"):
                self.reply(404, b"missing")
                return
            conn = http.client.HTTPConnection("127.0.0.1", runner_port, timeout=10)
            conn.request("POST", "/completion", body=b'{"prompt": "hi"}')
            answer = conn.getresponse().read()
            conn.close()
            self.reply(200, answer)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Front)
    print(server.server_address[1], runner_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    if sys.argv[1:] == ["runner"]:
        runner()
    else:
        front()
