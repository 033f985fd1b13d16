#!/usr/bin/env python3
"""Cost of the CUDA driver uprobes per call, measured side by side in one run.

Builds the stand-in libcuda.so.1 and tests/cuda_app.c, then times 20000 loops of 170
driver calls untraced and traced (the agent attached to the app's libcuda), best of 5
each, interleaved. Needs root and target/release/infersight (cargo build --release).
Run: python3 agent/benches/cuda_uprobe.py
"""
import os, subprocess, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENT = os.path.join(ROOT, "target/release/infersight")
LOOPS = 20000
CALLS = 170 * LOOPS

tmp = tempfile.mkdtemp(prefix="infersight-cuda-bench-")
lib, app_bin = os.path.join(tmp, "libcuda.so.1"), os.path.join(tmp, "cuda-app")
subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", lib, f"{ROOT}/tests/fake_cuda.c"], check=True)
subprocess.run(["cc", "-O1", "-o", app_bin, f"{ROOT}/tests/cuda_app.c", "-ldl"], check=True)


def run(traced):
    app = subprocess.Popen([app_bin, lib, str(LOOPS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert app.stdout.readline().strip() == b"ready"
    agent = None
    if traced:
        agent = subprocess.Popen(
            [AGENT, "--listen", "127.0.0.1:0", "--pid", f"{app.pid}=app", "--no-host"],
            stderr=subprocess.PIPE,
        )
        while b"listening" not in agent.stderr.readline():
            pass
    app.stdin.write(b"g"); app.stdin.flush()
    assert app.stdout.readline().strip() == b"loaded"
    if traced:
        while b"entry points attached" not in agent.stderr.readline():
            pass
    start = time.perf_counter()
    app.stdin.write(b"g"); app.stdin.flush()
    assert app.stdout.readline().strip() == b"done"
    elapsed = time.perf_counter() - start
    app.wait()
    if agent:
        agent.kill(); agent.wait()
    return elapsed


times = {False: [], True: []}
for _ in range(5):
    for traced in (False, True):
        times[traced].append(run(traced))
u, t = min(times[False]), min(times[True])
print(f"untraced {u * 1e9 / CALLS:.1f} ns/call, traced {t * 1e9 / CALLS:.1f} ns/call: "
      f"{(t - u) * 1e9 / CALLS:.0f} ns per probed call, ratio {t / u:.0f}x ({CALLS} calls, best of 5)")
