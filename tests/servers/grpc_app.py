"""gRPC test server and client (grpcio, Debian's python3-grpcio), no generated code: the
methods take and return raw bytes.

Server (`grpc_app.py`): prints its port, serves until killed. Service test.Infer:
  Unary   request b"MS": sleeps MS milliseconds, answers b"ok"
  Fail    aborts with UNAVAILABLE
  Stream  request b"DELAY,COUNT,GAP": sleeps DELAY ms, then sends COUNT messages GAP ms apart
Client (`grpc_app.py client PORT`): runs the fixed mix below on one channel and prints one
JSON line per call: method, status code, seconds, seconds to the first message, messages.
"""
import json
import sys
import time
from concurrent import futures

import grpc


def unary(request, context):
    time.sleep(int(request or b"0") / 1000)
    return b"ok"


def fail(request, context):
    context.abort(grpc.StatusCode.UNAVAILABLE, "down for the test")


def stream(request, context):
    delay, count, gap = (int(x) for x in request.decode().split(","))
    time.sleep(delay / 1000)
    for i in range(count):
        if i:
            time.sleep(gap / 1000)
        yield b"token %d" % i


def serve():
    handlers = grpc.method_handlers_generic_handler(
        "test.Infer",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def client(port):
    channel = grpc.insecure_channel("127.0.0.1:%s" % port)
    grpc.channel_ready_future(channel).result(timeout=10)
    calls = {
        "Unary": channel.unary_unary("/test.Infer/Unary"),
        "Fail": channel.unary_unary("/test.Infer/Fail"),
        "Stream": channel.unary_stream("/test.Infer/Stream"),
    }
    plan = [("Unary", b"20")] * 20 + [("Fail", b"")] * 5 + [("Stream", b"50,10,5")] * 5
    for method, request in plan:
        start = time.perf_counter()
        first = None
        messages = 0
        code = 0
        try:
            if method == "Stream":
                for _ in calls[method](request, timeout=10):
                    if first is None:
                        first = time.perf_counter() - start
                    messages += 1
            else:
                calls[method](request, timeout=10)
                messages = 1
        except grpc.RpcError as e:
            code = e.code().value[0]
        seconds = time.perf_counter() - start
        print(json.dumps({"method": method, "code": code, "seconds": seconds,
                          "first": first, "messages": messages}), flush=True)
    channel.close()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "client":
        client(sys.argv[2])
    else:
        serve()
