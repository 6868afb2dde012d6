"""Burgers' fit of the determined modes, re-implemented in float64 (numpy and the family's scheme:
Crank-Nicolson with conservative central differences, Newton at each step), to say where its floor
comes from: the fit of u(t = 0)'s modes |k| <= 3 to u(t >= 1/2) from different starts and finer
modes, the noise lowered from 1e-2 to 1e-6 over its stages.

    $PIDDM_PYTHON scripts/burgers_fit.py [MODEL [PROBLEMS]]
    $PIDDM_PYTHON scripts/burgers_fit.py --gains [PROBLEMS]

MODEL: the shipped Burgers model (its amortised graph gives the encoder's one-call answers).
Prints the median error on modes |k| <= 3 for each row of the table in trainer/results/README.md
("Burgers' inverse on the scales the observation determines"). With --gains: the singular values
of the linearised map from u(t = 0) (unit Fourier modes 1 to 15) to the first observed row and to
all of t >= 1/2, per prior draw, and the share of modes 1 to 3 in the leading right singular
vectors (the same table; its Rust twin is `BurgersParams::observed_gains`).
"""

import sys

import numpy as np
import onnxruntime as ort

NU, N, KEEP = 0.05, 32, 3
DX, DT = 1.0 / N, 1.0 / (N - 1)
K = np.arange(1, 32)
AMP = (4 * np.pi**2 * K**2 + 49.0) ** (-1.25)
AMP *= 0.5 / np.sqrt((AMP**2).sum())  # the GRF(2.5, 7) of std 0.5, per coefficient
X = np.arange(N) / N
BASIS = np.array([f(2 * np.pi * k * X) for k in range(1, KEEP + 1) for f in (np.cos, np.sin)]).T
VAR = np.array([AMP[k - 1] ** 2 for k in range(1, KEEP + 1) for _ in (0, 1)])
NOISES = [1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6]


def flux(u):
    e, w = np.roll(u, -1), np.roll(u, 1)
    return (e * e - w * w) / (4 * DX) - NU * (e - 2 * u + w) / DX**2


def solve(u0):
    out, prev = [u0], u0.copy()
    idx = np.arange(N)
    for _ in range(1, N):
        fp, v = flux(prev), prev.copy()
        for _ in range(50):
            g = (v - prev) / DT + 0.5 * (flux(v) + fp)
            if np.abs(g).max() < 1e-12:
                break
            jac = np.zeros((N, N))
            jac[idx, idx] = 1 / DT + NU / DX**2
            jac[idx, (idx + 1) % N] = 0.5 * (2 * v[(idx + 1) % N] / (4 * DX) - NU / DX**2)
            jac[idx, (idx - 1) % N] = 0.5 * (-2 * v[(idx - 1) % N] / (4 * DX) - NU / DX**2)
            v = v - np.linalg.solve(jac, g)
        out.append(v)
        prev = v
    return np.array(out)


def field(c, s):
    return (c[:, None] * np.cos(2 * np.pi * K[:, None] * X) + s[:, None] * np.sin(2 * np.pi * K[:, None] * X)).sum(0)


def lowpass(u, k):
    f = np.fft.rfft(u)
    f[k + 1 :] = 0
    return np.fft.irfft(f, N)


def fit(g, obs):
    """Levenberg-Marquardt on the coarse coefficients added to g, the data's prior on the fitted
    input's own coefficients, the noise lowered stage by stage."""
    a0 = np.linalg.lstsq(BASIS, g, rcond=None)[0]
    resid = lambda c: (solve(g + BASIS @ c)[N // 2 :] - obs).ravel()
    c = np.zeros(len(a0))
    for noise in NOISES:
        w, lam = noise**2, 1e-3
        obj = lambda r, c: (r**2).sum() + w * ((a0 + c) ** 2 / VAR).sum()
        cur = resid(c)
        for _ in range(4):
            h = np.sqrt(VAR) * 0.1
            jac = np.array([(resid(c + h[j] * np.eye(len(c))[j]) - cur) / h[j] for j in range(len(c))]).T
            a = jac.T @ jac + w * np.diag(1 / VAR)
            d = np.linalg.solve(a + lam * np.diag(np.diag(a)), -(jac.T @ cur + w * (a0 + c) / VAR))
            new = resid(c + d)
            if obj(new, c + d) < obj(cur, c):
                c, cur, lam = c + d, new, lam / 3
            else:
                lam *= 10
    return g + BASIS @ c


def objective(x, obs):
    """The fit's objective at its last noise."""
    r = (solve(x)[N // 2 :] - obs).ravel()
    a = np.linalg.lstsq(BASIS, x, rcond=None)[0]
    return (r**2).sum() / NOISES[-1] ** 2 + (a**2 / VAR).sum()


def best_of(starts, obs):
    """Each start fitted; the fit of least objective (a start whose fit fails is passed over)."""
    best, least = None, np.inf
    for g in starts:
        try:
            x = fit(g, obs)
        except np.linalg.LinAlgError:
            continue
        o = objective(x, obs)
        if o < least:
            best, least = x, o
    return best


def gains(problems):
    rng = np.random.default_rng(0)
    unit = np.array([f(2 * np.pi * k * X) for k in range(1, N // 2) for f in (np.cos, np.sin)]).T
    unit /= np.sqrt(N / 2)
    h = 1e-5
    for p in range(problems):
        c, s = rng.standard_normal(31) * AMP, rng.standard_normal(31) * AMP
        u0 = field(c, s)
        cols = [(solve(u0 + h * b)[N // 2 :] - solve(u0 - h * b)[N // 2 :]) / (2 * h) for b in unit.T]
        jac = np.array(cols).transpose(1, 2, 0)  # rows t >= 1/2, x, mode
        first = np.linalg.svd(jac[0], compute_uv=False)
        _, every, vt = np.linalg.svd(jac.reshape(-1, unit.shape[1]), full_matrices=False)
        share = (vt[:6] ** 2).reshape(6, -1, 2).sum(2)[:, :3]
        print(f"draw {p}: gains to t = 1/2 " + " ".join(f"{g:.1e}" for g in first[:8]))
        print("    to all of t >= 1/2 " + " ".join(f"{g:.1e}" for g in every[:8]))
        print("    modes 1, 2, 3 in the leading right singular vectors: "
              + "; ".join(" ".join(f"{w:.3f}" for w in v) for v in share))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--gains":
        return gains(int(sys.argv[2]) if len(sys.argv) > 2 else 12)
    model = sys.argv[1] if len(sys.argv) > 1 else "examples/models/burgers.onnx"
    problems = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    enc = ort.InferenceSession(model.replace(".onnx", ".amortised.onnx"))
    rng, other, zr, draws = (np.random.default_rng(s) for s in (0, 5, 11, 77))
    mask = np.zeros((1, 1, N, N), np.float32)
    mask[..., N // 2 :, :] = 1
    rows = {}
    for _ in range(problems):
        c, s = rng.standard_normal(31) * AMP, rng.standard_normal(31) * AMP
        u0 = field(c, s)
        u = solve(u0)
        obs = u[N // 2 :]
        z = zr.standard_normal((1, 1, N, N)).astype(np.float32)
        _, x_mix = enc.run(None, {"observed": (u * mask[0, 0]).astype(np.float32)[None, None], "mask": mask, "z": z})
        answer = x_mix[0, 0, 0].astype(np.float64)
        c2, s2 = other.standard_normal(31) * AMP, other.standard_normal(31) * AMP
        moved = field(np.r_[c[:3] + 0.5 * c2[:3], c[3:]], np.r_[s[:3] + 0.5 * s2[:3], s[3:]])
        fresh = field(np.r_[c[:3] + 0.5 * c2[:3], c2[3:]], np.r_[s[:3] + 0.5 * s2[:3], s2[3:]])
        fine = lambda v: v - lowpass(v, KEEP)
        prior_fine = fine(field(c2, s2))
        starts = {
            "the truth's coarse modes moved by half their prior std; the truth's finer modes": moved,
            "the same; a fresh prior draw's finer modes": fresh,
            "the truth's coarse modes; the encoder's finer modes": lowpass(u0, KEEP) + fine(answer),
            "the encoder's one-call answer": answer,
            "its coarse modes; zero finer modes": lowpass(answer, KEEP),
            "its coarse modes; a fresh prior draw's finer modes": lowpass(answer, KEEP) + prior_fine,
        }
        truth = lowpass(u0, KEEP)
        err = lambda x: np.linalg.norm(lowpass(x, KEEP) - truth) / np.linalg.norm(truth)
        for name, g in starts.items():
            rows.setdefault(name, []).append(err(fit(g, obs)))
        # a search over the coarse modes' basins: the answer and 4 prior draws of its coarse
        # modes, each fitted, the least objective kept
        others = [fine(answer) + BASIS @ (draws.standard_normal(len(VAR)) * np.sqrt(VAR)) for _ in range(4)]
        name = "the best of the encoder's answer and 4 prior draws of its coarse modes, each fitted"
        rows.setdefault(name, []).append(err(best_of([answer] + others, obs)))
    for name, errs in rows.items():
        print(f"{name}: {100 * np.median(errs):.1f} %")


if __name__ == "__main__":
    main()
