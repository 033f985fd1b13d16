// Node's http server for the server-stack tests; the routes of tests/servers/fastapi_app.py.
// Prints the port, then serves until killed.
const http = require("http");

const server = http.createServer((req, res) => {
  const path = req.url.split("?")[0];
  const reply = (status, body) => {
    res.writeHead(status, { "Content-Type": "text/plain", "Content-Length": Buffer.byteLength(body) });
    res.end(body);
  };
  if (req.method === "POST" && path === "/upload") {
    let n = 0;
    req.on("data", (c) => (n += c.length));
    req.on("end", () => reply(200, String(n)));
  } else if (path.startsWith("/sleep/")) {
    setTimeout(() => reply(200, "ok"), Number(path.split("/")[2]));
  } else if (path === "/missing") {
    reply(404, "missing");
  } else if (path === "/error") {
    reply(500, "error");
  } else if (path === "/stream") {
    res.writeHead(200, { "Content-Type": "text/event-stream" });
    let i = 0;
    const next = () => {
      res.write(`data: {"token": ${i}}\n\n`);
      i += 1;
      if (i < 20) setTimeout(next, 10);
      else res.end();
    };
    setTimeout(next, 150);
  } else {
    reply(200, "ok");
  }
});
server.keepAliveTimeout = 60000;
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
