"""HTTP/1.1 test server for the request-tracing tests (ThreadingHTTPServer, keep-alive).

Routes:
  GET  /sleep/MS      200 after sleeping MS milliseconds
  GET  /items/ID      200
  GET  /r/NAME        200 (distinct routes for the cap test)
  GET  /missing[/…]   404 (a scanner's probes)
  DELETE any          405
  GET  /error         500
  GET  /big           200 with a 1 MiB body, written in one call
  POST /upload        200 after reading the Content-Length body
  GET  /stream        SSE over chunked encoding: 150 ms, then 20 events 10 ms apart
  GET  /dribble       200, the whole response written one byte per write
  GET  /bighead       SSE as /stream, after a 2 KiB head (Content-Type last)
  GET  /split-head    200 "ok", the status line written on its own, then the rest
Prints the port on stdout, then serves until killed. With the argument "1.0" it speaks
HTTP/1.0 (a connection per request), as http.server does by default; with "tls CERT KEY"
it serves HTTPS through Python's ssl module.
"""
import http.server
import sys
import time


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as production servers set it: otherwise Nagle holds the body write
    # until the client's delayed ACK, and the client sees ~40 ms the server never spent.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"ok"):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path
        if path.startswith("/sleep/"):
            time.sleep(int(path.split("/")[2]) / 1000)
            self.reply(200)
        elif path == "/missing" or path.startswith("/missing/"):
            self.reply(404, b"missing")
        elif path == "/error":
            self.reply(500, b"error")
        elif path == "/big":
            self.reply(200, b"x" * (1 << 20))
        elif path == "/dribble":
            raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            for i in range(len(raw)):
                self.wfile.write(raw[i : i + 1])
        elif path == "/split-head":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            time.sleep(0.010)
            self.wfile.write(b"Content-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
        elif path in ("/stream", "/bighead"):
            self.send_response(200)
            if path == "/bighead":
                for i in range(32):
                    self.send_header("X-Padding-%02d" % i, "p" * 48)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            time.sleep(0.150)
            for i in range(20):
                if i:
                    time.sleep(0.010)
                data = b"data: {\"token\": %d}\n\n" % i
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.reply(200)

    def do_DELETE(self):
        self.reply(405, b"method not allowed")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)
        self.reply(200, str(length).encode())


if sys.argv[1:] == ["1.0"]:
    Handler.protocol_version = "HTTP/1.0"
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if sys.argv[1:2] == ["tls"]:
    # HTTPS through the ssl module (OpenSSL's libssl.so.3): "tls CERT KEY".
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
