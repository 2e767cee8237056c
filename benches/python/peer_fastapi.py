"""The Python serving peer of the HTTP benchmark: onnxruntime behind FastAPI and uvicorn, the
stack people commonly write. The body is the raw little-endian float32 input (no JSON cost,
as for our binary body); the answer is the raw float32 output. One uvicorn worker; the
session runs in FastAPI's thread pool with the given intra-op thread count.

usage: peer_fastapi.py MODEL PORT THREADS
"""
import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

model, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
spec = sess.get_inputs()[0]
row = [d for d in spec.shape[1:]]
app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> Response:
    body = await request.body()
    x = np.frombuffer(body, dtype="<f4").reshape([-1] + row)
    (y,) = await run_in_threadpool(sess.run, None, {spec.name: x})
    return Response(content=y.astype("<f4").tobytes(), media_type="application/octet-stream")


@app.get("/health")
def health():
    return {"ok": True}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", workers=1)
