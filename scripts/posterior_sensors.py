"""The phase of a at the sensor points: how often the posterior means put the low phase there, against
the truth, from a `darcy_posterior` run's OUT_DIR/posterior.f32 (per problem: true a, sensors, MCMC
mean and std, the surrogate's mean and std), the phase threshold halfway between the two values.

    $PIDDM_PYTHON scripts/posterior_sensors.py OUT_DIR [OUT_DIR ...]

(examples/RESULTS.md, "Encoders trained on noisy sensors", the table's last column.)
"""

import sys

import numpy as np


def read(path):
    raw = open(path, "rb").read()
    if raw[:8] != b"PIDDMF32":
        raise SystemExit(f"{path}: not a piddm field file")
    dims = np.frombuffer(raw[8:24], np.uint32)
    return np.frombuffer(raw[24:], np.float32).reshape(*dims)


def main():
    for run in sys.argv[1:]:
        f = read(run + "/posterior.f32")
        truth, sensors, mcmc, surrogate = f[:, 0], f[:, 1] == 1, f[:, 2], f[:, 4]
        threshold = 0.5 * (truth.min() + truth.max())
        low = lambda a: 100 * (a[sensors] < threshold).mean()
        print(f"{run}: low phase at the sensor points: surrogate {low(surrogate):.1f} %, "
              f"MCMC {low(mcmc):.1f} %, truth {low(truth):.1f} %")


if __name__ == "__main__":
    main()
