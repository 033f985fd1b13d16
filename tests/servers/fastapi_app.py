"""FastAPI app for the server-stack tests, served by uvicorn (the HTTP stack of vLLM and
SGLang). The routes match tests/http_server.py:

  GET  /sleep/MS   200 after MS milliseconds      GET  /items/ID  200
  GET  /missing    404                            GET  /error     500
  POST /upload     200, the body's length         GET  /stream    SSE: 150 ms, then 20
                                                                   events 10 ms apart
Run: python3 -m uvicorn fastapi_app:app --http h11|httptools --workers N --port P
"""
import asyncio

from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

app = FastAPI()


@app.get("/sleep/{ms}")
async def sleep(ms: int):
    await asyncio.sleep(ms / 1000)
    return PlainTextResponse("ok")


@app.get("/items/{item}")
async def items(item: str):
    return PlainTextResponse("ok")


@app.get("/missing")
async def missing():
    return PlainTextResponse("missing", status_code=404)


@app.get("/error")
async def error():
    return PlainTextResponse("error", status_code=500)


@app.post("/upload")
async def upload(request: Request):
    body = await request.body()
    return PlainTextResponse(str(len(body)))


@app.get("/stream")
async def stream():
    async def events():
        await asyncio.sleep(0.150)
        for i in range(20):
            if i:
                await asyncio.sleep(0.010)
            yield b'data: {"token": %d}\n\n' % i

    return StreamingResponse(events(), media_type="text/event-stream")
