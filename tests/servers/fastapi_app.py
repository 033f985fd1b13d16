"""FastAPI app for the server-stack tests, served by uvicorn (the HTTP stack of vLLM and
SGLang). The routes match tests/http_server.py:

  GET  /sleep/MS   200 after MS milliseconds      GET  /items/ID  200
  GET  /missing    404                            GET  /error     500
  POST /upload     200, the body's length         GET  /stream    SSE: 150 ms, then 20
                                                                   events 10 ms apart
  POST /v1/completions   for the overhead benchmark (agent/benches/sse.rs): an OpenAI-style
                   streaming completion, one chunk per token of a stand-in engine
Run: python3 -m uvicorn fastapi_app:app --http h11|httptools --workers N --port P
"""
import asyncio
import os
import time
from typing import List, Optional

from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel

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


# The overhead benchmark's route: the shape of vLLM's OpenAI-compatible front end. A
# stand-in engine hands one token to every running request each decode step (a continuous
# batch, on its own clock like a GPU); the front end turns each token into a pydantic chunk
# and sends it as one server-sent event (one write).


class CompletionRequest(BaseModel):
    model: str = "bench"
    prompt: str
    max_tokens: int = 16
    stream: bool = False


class Choice(BaseModel):
    index: int
    text: str
    logprobs: Optional[dict] = None
    finish_reason: Optional[str] = None


class CompletionChunk(BaseModel):
    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: List[Choice]


class Engine:
    """Every `step` seconds, one token for each running request (BENCH_STEP_MS, default
    10 ms). Steps the front end is late for are handed out as soon as it gets to them."""

    def __init__(self, step):
        self.step = step
        self.running = {}  # queue -> tokens left
        self.task = None

    def add(self, queue, tokens):
        self.running[queue] = tokens
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self):
        loop = asyncio.get_running_loop()
        next_step = loop.time()
        while True:
            next_step += self.step
            await asyncio.sleep(max(0.0, next_step - loop.time()))
            for queue, left in list(self.running.items()):
                queue.put_nowait(None)
                if left <= 1:
                    del self.running[queue]
                else:
                    self.running[queue] = left - 1


ENGINE = Engine(float(os.environ.get("BENCH_STEP_MS", "10")) / 1000)
REQUESTS = iter(range(1 << 62))


@app.post("/v1/completions")
async def completions(req: CompletionRequest):
    rid = "cmpl-%d" % next(REQUESTS)
    created = int(time.time())

    async def events():
        queue = asyncio.Queue()
        ENGINE.add(queue, req.max_tokens)
        try:
            for i in range(req.max_tokens):
                await queue.get()
                last = i == req.max_tokens - 1
                chunk = CompletionChunk(
                    id=rid,
                    created=created,
                    model=req.model,
                    choices=[Choice(index=0, text=" tok%d" % i,
                                    finish_reason="length" if last else None)],
                )
                yield "data: %s\n\n" % chunk.json()
            yield "data: [DONE]\n\n"
        finally:
            ENGINE.running.pop(queue, None)

    return StreamingResponse(events(), media_type="text/event-stream")
