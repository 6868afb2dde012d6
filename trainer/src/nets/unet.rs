//! A DDPM++-style U-Net: GroupNorm + SiLU residual blocks with a noise-level embedding, strided
//! convolutions down, nearest-neighbour upsampling, skip connections by concatenation, optional
//! self-attention at the coarsest level. Layer names are stable: checkpoints and export key on them.

use super::ops::{NetOps, Unary};
use crate::pde::ops::Tch;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Kind, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Field channels out (and in, unless `in_channels` says otherwise).
    pub channels: i64,
    /// Channels in, when they differ from those out (the amortised encoder reads the observation,
    /// its mask and a noise draw).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_channels: Option<i64>,
    /// Base width; level l has width * mults[l] channels.
    pub width: i64,
    pub mults: Vec<i64>,
    /// Residual blocks per level on the way down (one more on the way up).
    pub blocks: usize,
    /// Self-attention in the middle (coarsest) block.
    pub attention: bool,
    /// GroupNorm groups; must divide every level's width.
    pub groups: i64,
    /// Every convolution padded by wrapping round the field's edges, for a field periodic in x
    /// and y (zero padding would make the network's output, and so its samples' statistics,
    /// depend on the distance to an edge the field does not have).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub periodic: bool,
}

impl UNetConfig {
    pub fn validate(&self, grid_n: usize) -> Result<()> {
        if self.mults.is_empty()
            || self.width <= 0
            || self.channels <= 0
            || self.in_channels() <= 0
            || self.blocks == 0
        {
            bail!("U-Net needs positive width, channels, blocks and at least one level");
        }
        for m in &self.mults {
            if (self.width * m) % self.groups != 0 {
                bail!(
                    "GroupNorm groups {} do not divide level width {}",
                    self.groups,
                    self.width * m
                );
            }
        }
        let down = 1usize << (self.mults.len() - 1);
        if !grid_n.is_multiple_of(down) {
            bail!(
                "grid {grid_n} is not divisible by 2^{} (the U-Net's levels)",
                self.mults.len() - 1
            );
        }
        Ok(())
    }
    pub fn in_channels(&self) -> i64 {
        self.in_channels.unwrap_or(self.channels)
    }
    fn emb_dim(&self) -> i64 {
        4 * self.width
    }
}

fn conv(p: nn::Path, i: i64, o: i64, k: i64, stride: i64) -> nn::Conv2D {
    nn::conv2d(
        p,
        i,
        o,
        k,
        nn::ConvConfig {
            stride,
            padding: k / 2,
            ..Default::default()
        },
    )
}

/// A convolution with "same" padding: wrapped round a periodic field's edges, else zeros.
fn conv_same<B: NetOps>(b: &mut B, x: &B::V, c: &nn::Conv2D, stride: i64, periodic: bool) -> B::V {
    if periodic {
        b.conv_wrapped(x, c, stride)
    } else {
        b.conv(x, c, stride)
    }
}

fn gn(p: nn::Path, groups: i64, c: i64) -> nn::GroupNorm {
    nn::group_norm(p, groups, c, Default::default())
}

#[derive(Debug)]
pub(crate) struct ResBlock {
    pub(crate) norm1: nn::GroupNorm,
    pub(crate) conv1: nn::Conv2D,
    pub(crate) emb: nn::Linear,
    pub(crate) norm2: nn::GroupNorm,
    pub(crate) conv2: nn::Conv2D,
    pub(crate) skip: Option<nn::Conv2D>,
}

impl ResBlock {
    fn new(p: nn::Path, cfg: &UNetConfig, i: i64, o: i64) -> Self {
        ResBlock {
            norm1: gn(&p / "norm1", cfg.groups, i),
            conv1: conv(&p / "conv1", i, o, 3, 1),
            emb: nn::linear(&p / "emb", cfg.emb_dim(), o, Default::default()),
            norm2: gn(&p / "norm2", cfg.groups, o),
            conv2: conv(&p / "conv2", o, o, 3, 1),
            skip: (i != o).then(|| conv(&p / "skip", i, o, 1, 1)),
        }
    }
    fn apply<B: NetOps>(&self, b: &mut B, x: &B::V, emb: &B::V, periodic: bool) -> B::V {
        let h = b.group_norm(x, &self.norm1);
        let h = b.silu(&h);
        let h = conv_same(b, &h, &self.conv1, 1, periodic);
        let e = b.linear(emb, &self.emb);
        let o = self.conv1.ws.size()[0];
        let e = b.reshape(&e, &[-1, o, 1, 1]);
        let h = b.add(&h, &e);
        let h = b.group_norm(&h, &self.norm2);
        let h = b.silu(&h);
        let h = conv_same(b, &h, &self.conv2, 1, periodic);
        let s = match &self.skip {
            Some(c) => b.conv(x, c, 1),
            None => b.dup(x),
        };
        let y = b.add(&s, &h);
        b.affine(&y, std::f64::consts::FRAC_1_SQRT_2, 0.0)
    }
}

#[derive(Debug)]
pub(crate) struct Attention {
    pub(crate) norm: nn::GroupNorm,
    pub(crate) qkv: nn::Conv2D,
    pub(crate) proj: nn::Conv2D,
}

impl Attention {
    fn new(p: nn::Path, cfg: &UNetConfig, c: i64) -> Self {
        Attention {
            norm: gn(&p / "norm", cfg.groups, c),
            qkv: conv(&p / "qkv", c, 3 * c, 1, 1),
            proj: conv(&p / "proj", c, c, 1, 1),
        }
    }
    /// Single-head self-attention over the H x W positions, residual.
    fn apply<B: NetOps>(&self, b: &mut B, x: &B::V) -> B::V {
        let [c, h, w] = b.chw(x)[..] else {
            unreachable!("attention on a 4-D field")
        };
        let n = b.group_norm(x, &self.norm);
        let qkv = b.conv(&n, &self.qkv, 1);
        let mut part = |i: i64| {
            let p = b.channels(&qkv, i * c, c);
            b.reshape(&p, &[-1, c, h * w])
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let qt = b.transpose(&q);
        let logits = b.matmul(&qt, &k);
        let logits = b.affine(&logits, 1.0 / (c as f64).sqrt(), 0.0);
        let att = b.softmax(&logits);
        let att_t = b.transpose(&att);
        let o = b.matmul(&v, &att_t);
        let o = b.reshape(&o, &[-1, c, h, w]);
        let p = b.conv(&o, &self.proj, 1);
        let y = b.add(x, &p);
        b.affine(&y, std::f64::consts::FRAC_1_SQRT_2, 0.0)
    }
}

#[derive(Debug)]
pub(crate) enum Layer {
    Res(Box<ResBlock>),
    Down(nn::Conv2D),
    Up(nn::Conv2D),
}

#[derive(Debug)]
pub struct UNet {
    pub cfg: UNetConfig,
    pub(crate) emb1: nn::Linear,
    pub(crate) emb2: nn::Linear,
    pub(crate) conv_in: nn::Conv2D,
    pub(crate) down: Vec<Layer>,
    pub(crate) mid1: ResBlock,
    pub(crate) mid_attn: Option<Attention>,
    pub(crate) mid2: ResBlock,
    pub(crate) up: Vec<Layer>,
    pub(crate) norm_out: nn::GroupNorm,
    pub(crate) conv_out: nn::Conv2D,
}

impl UNet {
    pub fn new(p: &nn::Path, cfg: &UNetConfig) -> Self {
        let w = cfg.width;
        let mut down = Vec::new();
        let mut skips = vec![w];
        let mut ch = w;
        let levels = cfg.mults.len();
        for (l, m) in cfg.mults.iter().enumerate() {
            let o = w * m;
            for b in 0..cfg.blocks {
                down.push(Layer::Res(Box::new(ResBlock::new(
                    p / format!("down{l}_res{b}"),
                    cfg,
                    ch,
                    o,
                ))));
                ch = o;
                skips.push(ch);
            }
            if l + 1 < levels {
                down.push(Layer::Down(conv(p / format!("down{l}_conv"), ch, ch, 3, 2)));
                skips.push(ch);
            }
        }
        let mid1 = ResBlock::new(p / "mid_res0", cfg, ch, ch);
        let mid_attn = cfg
            .attention
            .then(|| Attention::new(p / "mid_attn", cfg, ch));
        let mid2 = ResBlock::new(p / "mid_res1", cfg, ch, ch);
        let mut up = Vec::new();
        for (l, m) in cfg.mults.iter().enumerate().rev() {
            let o = w * m;
            for b in 0..=cfg.blocks {
                let s = skips.pop().expect("skip stack matches the encoder");
                up.push(Layer::Res(Box::new(ResBlock::new(
                    p / format!("up{l}_res{b}"),
                    cfg,
                    ch + s,
                    o,
                ))));
                ch = o;
            }
            if l > 0 {
                up.push(Layer::Up(conv(p / format!("up{l}_conv"), ch, ch, 3, 1)));
            }
        }
        UNet {
            cfg: cfg.clone(),
            emb1: nn::linear(p / "emb1", w, cfg.emb_dim(), Default::default()),
            emb2: nn::linear(p / "emb2", cfg.emb_dim(), cfg.emb_dim(), Default::default()),
            conv_in: conv(p / "conv_in", cfg.in_channels(), w, 3, 1),
            down,
            mid1,
            mid_attn,
            mid2,
            up,
            norm_out: gn(p / "norm_out", cfg.groups, ch),
            conv_out: conv(p / "conv_out", ch, cfg.channels, 3, 1),
        }
    }

    /// Sinusoidal embedding of the noise level c_noise [B] into the blocks' embedding [B, 4 width].
    fn embed<B: NetOps>(&self, b: &mut B, c_noise: &B::V) -> B::V {
        let half = self.cfg.width / 2;
        let freqs = (Tensor::arange(half, (Kind::Float, tch::Device::Cpu))
            * (-(10000f64.ln()) / half as f64))
            .exp()
            .unsqueeze(0);
        let freqs = b.constant(&freqs.to_device(self.device()));
        let c = b.reshape(c_noise, &[-1, 1]);
        let args = b.mul(&c, &freqs);
        let args = b.affine(&args, 1000.0, 0.0);
        let (cos, sin) = (b.unary(&args, Unary::Cos), b.unary(&args, Unary::Sin));
        let e = b.concat(&[&cos, &sin]);
        let e = b.linear(&e, &self.emb1);
        let e = b.silu(&e);
        let e = b.linear(&e, &self.emb2);
        b.silu(&e)
    }

    /// F(x; c_noise) on any backend: x [B, C, H, W], c_noise [B].
    pub fn apply<B: NetOps>(&self, b: &mut B, x: &B::V, c_noise: &B::V) -> B::V {
        b.network(true);
        let emb = self.embed(b, c_noise);
        let periodic = self.cfg.periodic;
        let mut h = conv_same(b, x, &self.conv_in, 1, periodic);
        let mut skips = vec![b.dup(&h)];
        for layer in &self.down {
            h = match layer {
                Layer::Res(r) => r.apply(b, &h, &emb, periodic),
                Layer::Down(c) => conv_same(b, &h, c, 2, periodic),
                Layer::Up(_) => unreachable!("no upsampling on the way down"),
            };
            skips.push(b.dup(&h));
        }
        h = self.mid1.apply(b, &h, &emb, periodic);
        if let Some(a) = &self.mid_attn {
            h = a.apply(b, &h);
        }
        h = self.mid2.apply(b, &h, &emb, periodic);
        for layer in &self.up {
            h = match layer {
                Layer::Res(r) => {
                    let s = skips.pop().expect("skip stack matches the decoder");
                    let c = b.concat(&[&h, &s]);
                    r.apply(b, &c, &emb, periodic)
                }
                Layer::Up(c) => {
                    let u = b.upsample2(&h);
                    conv_same(b, &u, c, 1, periodic)
                }
                Layer::Down(_) => unreachable!("no downsampling on the way up"),
            };
        }
        let h = b.group_norm(&h, &self.norm_out);
        let h = b.silu(&h);
        let y = conv_same(b, &h, &self.conv_out, 1, periodic);
        b.network(false);
        y
    }

    /// The device of the weights.
    pub fn device(&self) -> tch::Device {
        self.conv_in.ws.device()
    }

    /// F(x; c_noise) on tch tensors.
    pub fn forward(&self, x: &Tensor, c_noise: &Tensor) -> Tensor {
        self.apply(&mut Tch, x, c_noise)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small network of two levels on two channels.
    fn small(attention: bool, periodic: bool) -> UNetConfig {
        UNetConfig {
            channels: 2,
            in_channels: None,
            width: 8,
            mults: vec![1, 2],
            blocks: 1,
            attention,
            groups: 4,
            periodic,
        }
    }

    #[test]
    fn shapes_round_trip() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let cfg = small(true, false);
        cfg.validate(16).unwrap();
        let net = UNet::new(&vs.root(), &cfg);
        let y = net.forward(
            &Tensor::randn([3, 2, 16, 16], (Kind::Float, tch::Device::Cpu)),
            &Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)),
        );
        assert_eq!(y.size(), vec![3, 2, 16, 16]);
        assert!(cfg.validate(17).is_err());
        let bad = UNetConfig { groups: 3, ..cfg };
        assert!(bad.validate(16).is_err());
    }

    /// A periodic network commutes with rolling its input by a multiple of its coarsest stride
    /// (here 2): wrapped padding has no edge; with zero padding the same roll changes the output.
    #[test]
    fn periodic_network_commutes_with_rolls() {
        tch::manual_seed(4);
        for periodic in [true, false] {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let cfg = small(false, periodic);
            let net = UNet::new(&vs.root(), &cfg);
            let x = Tensor::randn([2, 2, 16, 16], (Kind::Float, tch::Device::Cpu));
            let c = Tensor::from_slice(&[0.3f32, -0.2]);
            let f = |x: &Tensor| net.apply(&mut Tch, x, &c);
            let rolled = f(&x.roll([4, -6], [2, 3]));
            let want = f(&x).roll([4, -6], [2, 3]);
            let err = f64::try_from((&rolled - &want).abs().max()).unwrap();
            let size = f64::try_from(want.abs().max()).unwrap();
            if periodic {
                assert!(err < 1e-5 * size, "periodic: off by {err} of {size}");
            } else {
                assert!(
                    err > 1e-3 * size,
                    "zero padding commuted with the roll: {err}"
                );
            }
        }
    }
}
