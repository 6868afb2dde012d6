# Per-channel MMSE / SMSE of a model's one-step samples against a test set, normalised units: where
# the SMSE comes from. usage: sample_moments.py MODEL.onnx TEST.safetensors [SAMPLES [TAU [DY,DX]]]
# (TAU scales eps: a temperature; the samples are drawn from seed 2 of numpy's generator; DY,DX
# moves each sample by an independent random multiple of that translation of its periodic grid)
import sys, json, struct, numpy as np, onnxruntime as ort, onnx
model, data = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 256
with open(data, 'rb') as f:
    hl = struct.unpack('<Q', f.read(8))[0]; hdr = json.loads(f.read(hl)); buf = f.read()
t = hdr['fields']; a, b = t['data_offsets']
dt = {'F32': np.float32, 'F64': np.float64}[t['dtype']]
x = np.frombuffer(buf[a:b], dtype=dt).reshape(t['shape']).astype(np.float64)
m = onnx.load(model, load_external_data=False)
card = json.loads([p.value for p in m.metadata_props if p.key == 'piddm.card'][0])
mean = np.array(card['normalisation']['mean'])[None, :, None, None]
scale = np.array(card['normalisation']['scale'])[None, :, None, None]
s = ort.InferenceSession(model, providers=['CPUExecutionProvider'])
rng = np.random.default_rng(2)
tau = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
eps = (tau * rng.standard_normal((n,) + x.shape[1:])).astype(np.float32)
out = np.concatenate([s.run(['x'], {'eps': eps[i:i+64]})[0] for i in range(0, n, 64)]).astype(np.float64)
zt, zg = (x - mean) / scale, (out - mean) / scale
if len(sys.argv) > 5:
    dy, dx = (int(v) for v in sys.argv[5].split(','))
    for i, m in enumerate(rng.integers(0, x.shape[-1], n)):
        zg[i] = np.roll(zg[i], (dy * m, dx * m), axis=(-2, -1))
for c, ch in enumerate(card['channels']):
    mm = np.mean((zt[:, c].mean(0) - zg[:, c].mean(0)) ** 2)
    sm = np.mean((zt[:, c].std(0) - zg[:, c].std(0)) ** 2)
    print(f"{ch['name']}: MMSE {mm:.3e} SMSE {sm:.3e}  test std mean {zt[:, c].std(0).mean():.3f}, samples' {zg[:, c].std(0).mean():.3f}")
mm = np.mean((zt.mean(0) - zg.mean(0)) ** 2); sm = np.mean((zt.std(0) - zg.std(0)) ** 2)
print(f"all: MMSE {mm:.3e} SMSE {sm:.3e}")
# the seam at a periodic grid's wrap: mean |jump| between the last and the first row (column) of
# the first and the last channel against that between neighbours inside (1 for a stationary field)
def seam(f, axis):
    d = np.abs(np.diff(f, axis=axis, append=np.take(f, [0], axis=axis)))
    d = d.mean(axis=tuple(i for i in range(f.ndim) if i != axis))
    return d[-1] / d[:-1].mean()
# ... and wherever it lies: per sample, the largest mean |jump| between neighbouring rows (columns),
# wrap included, against the median row's (column's); the median over the samples
def worst_jump(f, axis):
    d = np.abs(np.roll(f, -1, axis=axis) - f).mean(axis=3 - axis)
    return np.median(d.max(1) / np.median(d, 1))
last = len(card['channels']) - 1
for name, f in [(f"{who}, channel {c}", z[:, c]) for c in sorted({0, last}) for who, z in (("test set", zt), ("samples", zg))]:
    sd = f.std(0)
    edge = np.concatenate([sd[0], sd[-1], sd[1:-1, 0], sd[1:-1, -1]]).mean()
    print(f"{name}: |jump| across the wrap / inside: along H {seam(f, 1):.2f}, along W {seam(f, 2):.2f}; "
          f"largest row jump / median: along H {worst_jump(f, 1):.2f}, along W {worst_jump(f, 2):.2f}; "
          f"pointwise std on the edge rows and columns {edge:.3f}, inside {sd[1:-1, 1:-1].mean():.3f}")
