"""aiohttp server for the server-stack tests; the routes of tests/servers/fastapi_app.py.
Prints the port, then serves until killed."""
import asyncio
import socket
import sys

from aiohttp import web


async def sleep(request):
    await asyncio.sleep(int(request.match_info["ms"]) / 1000)
    return web.Response(text="ok")


async def items(request):
    return web.Response(text="ok")


async def missing(request):
    return web.Response(text="missing", status=404)


async def error(request):
    return web.Response(text="error", status=500)


async def upload(request):
    body = await request.read()
    return web.Response(text=str(len(body)))


async def stream(request):
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await asyncio.sleep(0.150)
    for i in range(20):
        if i:
            await asyncio.sleep(0.010)
        await resp.write(b'data: {"token": %d}\n\n' % i)
    await resp.write_eof()
    return resp


app = web.Application(client_max_size=64 << 20)
app.add_routes(
    [
        web.get("/sleep/{ms}", sleep),
        web.get("/items/{item}", items),
        web.get("/missing", missing),
        web.get("/error", error),
        web.post("/upload", upload),
        web.get("/stream", stream),
    ]
)
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
web.run_app(app, sock=sock, print=None, access_log=None)
