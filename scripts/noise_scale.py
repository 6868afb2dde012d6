"""What the scale of the amortised encoder's noise z does to a model's one-call answers.

The amortised graph maps (observation, mask, z) to an answer; the runtime draws z ~ N(0, I). This
runs the graph directly on fresh problems with z scaled by tau: tau = 0 gives one deterministic
answer, larger tau widens the answers' spread. Printed per task and tau: the coverage of the truth
by the mean +- 2 std of 8 answers (points every answer agrees on left out), the error of their mean
and the error of a single answer (Darcy's a: error rate, mean over problems; the others: relative
L2 of the unknown points, median over problems).

    piddm-train data --pde poisson --res 32 --n 32 --seed 7919 --out runs/poisson-problems.safetensors
    $PIDDM_PYTHON scripts/noise_scale.py poisson runs/poisson-problems.safetensors \\
        examples/models/poisson32.amortised.onnx

(`darcy`, `poisson`, `helmholtz` or `burgers`; the data file is a safetensors file of `piddm-train
data` or, for Darcy, a field file of `piddm-train problems`.)
"""

import json
import struct
import sys

import numpy as np
import onnxruntime as ort

THRESHOLD = 7.5  # Darcy's a: 12 or 3


def load(path):
    raw = open(path, "rb").read()
    if raw[:8] == b"PIDDMF32":
        count, channels, ny, nx = struct.unpack("<4I", raw[8:24])
        return np.frombuffer(raw[24:], dtype=np.float32).reshape(count, channels, ny, nx)
    n = struct.unpack("<Q", raw[:8])[0]
    info = json.loads(raw[8 : 8 + n])["fields"]
    a, b = info["data_offsets"]
    return np.frombuffer(raw[8 + n + a : 8 + n + b], dtype=np.float32).reshape(info["shape"])


def masks(family, shape, rng):
    """The family's inverse task and the sparse one (3 % of what the inverse observes)."""
    p, c, ny, nx = shape
    inverse = np.zeros(shape, np.float32)
    if family == "burgers":
        inverse[:, 0, ny // 2 :] = 1  # u for t >= 1/2
    else:
        inverse[:, 1] = 1  # all of u
    sparse = inverse * (rng.random((p, 1, ny, nx)) < 0.03)
    tasks = {"inverse": inverse, "sparse 3 %": sparse}
    if family == "darcy":
        forward = np.zeros(shape, np.float32)
        forward[:, 0] = 1
        tasks = {"forward": forward, **tasks}
    return tasks


def main():
    family, data, graph = sys.argv[1:4]
    truth = load(data)
    if family == "darcy":
        truth = truth[:, :2]  # a field file also holds f
    p = truth.shape[0]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    print("| task | tau | coverage of 2 std (8 answers) | error of their mean | error of one answer |")
    print("|---|---|---|---|---|")
    for name, mask in masks(family, truth.shape, np.random.default_rng(99)).items():
        unknown = mask == 0
        for tau in (0.0, 0.5, 1.0, 1.25, 1.5, 2.0):
            answers = []
            for seed in range(8):
                z = np.random.default_rng(seed).standard_normal(truth.shape).astype(np.float32)
                out = session.run(["x_mix"], {"observed": truth * mask, "mask": mask, "z": tau * z})
                answers.append(out[0])
            answers = np.stack(answers)
            mean, std = answers.mean(0), answers.std(0, ddof=1)
            spread = unknown & ~(std <= 1e-4 * np.abs(mean))
            inside = np.abs(truth - mean) <= 2 * std
            cover = f"{100 * inside[spread].mean():.1f} %" if spread.any() else "-"

            def err(x):
                if family == "darcy" and name != "forward":  # error rate of a
                    wrong = (x[:, 0] >= THRESHOLD) != (truth[:, 0] >= THRESHOLD)
                    return wrong.reshape(p, -1).mean(1).mean()
                e = [
                    np.linalg.norm((x[i] - truth[i])[unknown[i]]) / np.linalg.norm(truth[i][unknown[i]])
                    for i in range(p)
                ]
                return np.median(e)

            print(f"| {name} | {tau} | {cover} | {100 * err(mean):.2f} % | {100 * err(answers[0]):.2f} % |")


if __name__ == "__main__":
    main()
