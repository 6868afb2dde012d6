"""What the scale of the amortised encoder's noise z does to Darcy's one-call answers.

The amortised graph maps (observation, mask, z) to an answer; the runtime draws z ~ N(0, I). This
runs the graph directly on fresh problems with z scaled by tau: tau = 0 gives one deterministic
answer, larger tau widens the answers' spread. Printed per task and tau: the coverage of the truth
by the mean +- 2 std of 8 answers (points every answer agrees on left out), the error of their mean
and the mean error of a single answer.

    piddm-train problems --n 32 --seed 7919 --out runs/problems.f32
    $PIDDM_PYTHON scripts/noise_scale.py runs/problems.f32 examples/models/darcy32.amortised.onnx
"""

import struct
import sys

import numpy as np
import onnxruntime as ort

THRESHOLD = 7.5  # Darcy's a: 12 or 3


def load(path):
    raw = open(path, "rb").read()
    if raw[:8] != b"PIDDMF32":
        sys.exit(f"{path} is not a piddm field file")
    count, channels, ny, nx = struct.unpack("<4I", raw[8:24])
    return np.frombuffer(raw[24:], dtype=np.float32).reshape(count, channels, ny, nx)


def main():
    problems, graph = sys.argv[1], sys.argv[2]
    truth = load(problems)[:, :2]
    p, _, ny, nx = truth.shape
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(99)
    tasks = {
        # (observed channel, observed points), wanted channel
        "forward": ((0, np.ones((p, ny, nx), bool)), 1),
        "inverse": ((1, np.ones((p, ny, nx), bool)), 0),
        "sparse 3 % of u": ((1, rng.random((p, ny, nx)) < 0.03), 0),
    }
    print("| task | tau | coverage of 2 std (8 answers) | error of their mean | error of one answer |")
    print("|---|---|---|---|---|")
    for name, ((seen, points), k) in tasks.items():
        mask = np.zeros_like(truth)
        mask[:, seen] = points
        for tau in (0.0, 0.5, 1.0, 1.25, 1.5, 2.0):
            answers = []
            for seed in range(8):
                z = np.random.default_rng(seed).standard_normal(truth.shape).astype(np.float32)
                out = session.run(["x_mix"], {"observed": truth * mask, "mask": mask, "z": tau * z})
                answers.append(out[0][:, k])
            answers = np.stack(answers)
            mean, std = answers.mean(0), answers.std(0, ddof=1)
            t = truth[:, k]
            settled = std <= 1e-4 * np.abs(mean)
            cover = "-" if settled.all() else f"{100 * (np.abs(t - mean) <= 2 * std)[~settled].mean():.1f} %"

            def err(x):
                if k == 0:  # error rate of the binary coefficient
                    return np.mean([((x[i] >= THRESHOLD) != (t[i] >= THRESHOLD)).mean() for i in range(p)])
                return np.mean([np.linalg.norm(x[i] - t[i]) / np.linalg.norm(t[i]) for i in range(p)])

            print(f"| {name} | {tau} | {cover} | {100 * err(mean):.2f} % | {100 * err(answers[0]):.2f} % |")


if __name__ == "__main__":
    main()
