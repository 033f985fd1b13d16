"""A server that stalls on command, for the failure tests. Prints its port, then serves.

GET /stream: a chunked event stream that writes one event, then writes nothing until a
line arrives on stdin, then two more events and ends.
GET /hold: reads the request, then answers only once a line arrives on stdin.
Each stdin line releases every request waiting at that moment."""
import http.server
import socketserver
import sys
import threading

release = threading.Condition()
generation = 0


def wait_release():
    with release:
        start = generation
        release.wait_for(lambda: generation != start)


def stdin_reader():
    global generation
    for _ in sys.stdin:
        with release:
            generation += 1
            release.notify_all()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self):
        if self.path == "/stream":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.chunk(b'data: {"token": 0}\n\n')
            wait_release()
            self.chunk(b'data: {"token": 1}\n\n')
            self.chunk(b'data: {"token": 2}\n\n')
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        elif self.path == "/hold":
            wait_release()
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


server = Server(("127.0.0.1", 0), Handler)
threading.Thread(target=stdin_reader, daemon=True).start()
print(server.server_address[1], flush=True)
server.serve_forever()
