"""Independent checks of exported ONNX files: ONNX's own checker and ONNX Runtime.

Usage: run_onnx.py MANIFEST.json. The manifest lists files to check and runs to execute:
  {"check": [model paths], "runs": [{"model": path, "inputs": {name: [file, shape]},
   "outputs": {name: file}, "fd": {"loss": name, "wrt": name, "coords": [[flat index]...], "h": float}}]}
Arrays are raw little-endian float32 files. Prints a JSON report on stdout.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort

man = json.load(open(sys.argv[1]))
report = {"checked": [], "fd": []}
for path in man.get("check", []):
    onnx.checker.check_model(onnx.load(path), full_check=True)
    report["checked"].append(path)

opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
for run in man.get("runs", []):
    sess = ort.InferenceSession(run["model"], opts, providers=["CPUExecutionProvider"])
    feed = {k: np.fromfile(f, dtype="<f4").reshape(s) for k, (f, s) in run["inputs"].items()}
    names = list(run["outputs"])
    outs = sess.run(names, feed)
    for n, o in zip(names, outs):
        np.asarray(o, dtype="<f4").tofile(run["outputs"][n])
    fd = run.get("fd")
    if fd:
        base = feed[fd["wrt"]]
        for idx in fd["coords"]:
            vals = []
            for sgn in (1.0, -1.0):
                x = base.copy().reshape(-1).astype(np.float64)
                x[idx] += sgn * fd["h"]
                f = dict(feed)
                f[fd["wrt"]] = x.reshape(base.shape).astype(np.float32)
                vals.append(float(np.sum(sess.run([fd["loss"]], f)[0], dtype=np.float64)))
            report["fd"].append({"index": idx, "grad": (vals[0] - vals[1]) / (2 * fd["h"])})
print(json.dumps(report))
