"""Seconds ONNX Runtime takes to load each graph of the given models (session creation, one
thread, default optimisation level; the minimum of three loads), and their node counts.

    $PIDDM_PYTHON scripts/load_times.py examples/models/*.onnx
"""
import sys
import time

import onnx
import onnxruntime as ort


def load_seconds(path):
    best = float("inf")
    for _ in range(3):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        t = time.perf_counter()
        ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        best = min(best, time.perf_counter() - t)
    return best


print("| graph | nodes | load (s) |\n|---|---|---|")
for path in sys.argv[1:]:
    print(f"| {path} | {len(onnx.load(path).graph.node)} | {load_seconds(path):.2f} |")
