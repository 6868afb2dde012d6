//! Export of a trained student to the ONNX artifact that the runtime loads (the contract is
//! `piddm::card`): generate, refine (forward and reverse pass) and residual graphs, each with the
//! model card in its metadata.

pub mod fold;
pub mod graph;
pub mod quantise;

use crate::checkpoint::{load_role, weights_sha256, CheckpointMeta, Net, Role};
use crate::config::InferConfig;
use crate::nets::UNet;
use crate::pde::ops::FieldOps;
use crate::stages::encoder::{self, load_encoder};
use crate::stages::solve::Student;
use anyhow::{bail, Context, Result};
use fold::{Folding, Gv};
use graph::Graph;
use onnx_protobuf::{
    tensor_proto::DataType, tensor_shape_proto::dimension, type_proto, Message, ModelProto,
    OperatorSetIdProto, StringStringEntryProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use piddm::card::{self, io, ModelCard, Part, Precision};
use std::path::Path;

/// ONNX opset and IR version written (ONNX Runtime 1.31 reads both).
pub const OPSET: i64 = 17;
pub const IR_VERSION: i64 = 8;

impl FieldOps for Graph {
    type V = String;
    fn channel(&mut self, x: &String, c: i64) -> String {
        self.channels(x, c, 1)
    }
    fn conv3(&mut self, x: &String, k: &[f64; 9]) -> String {
        let w: Vec<f32> = k.iter().map(|&v| v as f32).collect();
        let w = self.constant("stencil", &[1, 1, 3, 3], &w);
        self.conv(x, &w, None, 3, 1, 0, 1)
    }
    fn crop1(&mut self, x: &String) -> String {
        self.crop(x, 1)
    }
    fn pad1(&mut self, x: &String) -> String {
        self.pad(x, 1)
    }
    fn shift(&mut self, x: &String, axis: i64, by: i64, periodic: bool) -> String {
        Graph::shift(self, x, axis, by, periodic)
    }
    fn add(&mut self, a: &String, b: &String) -> String {
        Graph::add(self, a, b)
    }
    fn sub(&mut self, a: &String, b: &String) -> String {
        Graph::sub(self, a, b)
    }
    fn mul(&mut self, a: &String, b: &String) -> String {
        Graph::mul(self, a, b)
    }
    fn affine(&mut self, x: &String, k: f64, c: f64) -> String {
        let y = if k == 1.0 {
            x.clone()
        } else {
            self.scale(x, k as f32)
        };
        if c == 0.0 {
            return y;
        }
        let c = self.scalar(c as f32);
        Graph::add(self, &y, &c)
    }
    fn affine_channels(&mut self, x: &String, k: &[f64], b: &[f64]) -> String {
        let n = k.len() as i64;
        let kc = self.constant(
            "chan_scale",
            &[1, n, 1, 1],
            &k.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        );
        let bc = self.constant(
            "chan_shift",
            &[1, n, 1, 1],
            &b.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        );
        let y = Graph::mul(self, x, &kc);
        Graph::add(self, &y, &bc)
    }
    fn mean_chw(&mut self, x: &String) -> String {
        self.reduce_mean(x, &[1, 2, 3])
    }
    fn matmul_axis(&mut self, x: &String, axis: i64, m: &[f64]) -> String {
        self.matmul_const(x, axis, m)
    }
    fn affine_plane(&mut self, x: &String, k: &[f64], b: &[f64]) -> String {
        let [_, h, w] = self.chw[x];
        let f32s = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<_>>();
        let kc = self.constant("plane_scale", &[1, 1, h, w], &f32s(k));
        let bc = self.constant("plane_shift", &[1, 1, h, w], &f32s(b));
        let y = Graph::mul(self, x, &kc);
        Graph::add(self, &y, &bc)
    }
}

/// A one-step sample in normalised units as graph nodes: `Student::emit_sample`, the code that
/// generates in training and evaluation, run over the folding builder.
fn student_nodes(g: &mut Graph, st: &Student, eps: &str) -> String {
    let mut f = Folding::new(g);
    let d = st.emit_sample(&mut f, &Gv::Node(eps.into()));
    f.name(&d)
}

fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| {
            let mut x = onnx_protobuf::tensor_shape_proto::Dimension::new();
            x.value = Some(match d {
                Some(v) => dimension::Value::DimValue(*v),
                None => dimension::Value::DimParam(io::BATCH.into()),
            });
            x
        })
        .collect();
    let tt = type_proto::Tensor {
        elem_type: DataType::FLOAT as i32,
        shape: Some(TensorShapeProto {
            dim,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.into(),
        type_: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(tt)),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

pub type Io<'a> = (&'a str, Vec<Option<i64>>);

/// Wraps the graph of one artifact part with the interface the contract gives it (`Part::interface`).
fn part_model(g: Graph, part: Part, chw: [usize; 3], rc: usize) -> ModelProto {
    let (inputs, outputs) = part.interface(card::CARD_FORMAT, chw[0], rc, chw[1], chw[2]);
    let io = |v: Vec<card::TensorSpec>| v.into_iter().map(|t| (t.name, t.dims)).collect::<Vec<_>>();
    let name = format!("{part:?}").to_lowercase();
    model(g, &name, &io(inputs), &io(outputs))
}

/// The bytes of a model file: `m` in the canonical encoding (`piddm::canonical`), what the
/// reference serialisers and `onnx.save` write.
pub fn encode(m: &ModelProto) -> Result<Vec<u8>> {
    let bytes = m.write_to_bytes().context("serialising the ONNX model")?;
    piddm::canonical::canonical_model(&bytes).map_err(anyhow::Error::msg)
}

/// Records each graph's digests (of the whole graph and of its structure, over the canonical
/// encoding: what the runtime recomputes at load) in the card and writes the card, with its part,
/// into each file.
pub fn seal(models: &mut [ModelProto], card: &mut ModelCard) -> Result<()> {
    let parts = card.parts();
    if parts.len() != models.len() {
        bail!(
            "{} graphs for the card's {} parts",
            models.len(),
            parts.len()
        );
    }
    let mut digests = Vec::new();
    for m in models.iter() {
        let bytes = encode(m)?;
        let graph = piddm::artifact::scan(&bytes)
            .map_err(anyhow::Error::msg)?
            .graph
            .context("the model has no graph")?;
        digests.push(piddm::canonical::graph_digests(graph).map_err(anyhow::Error::msg)?);
    }
    let of = |f: fn(&piddm::canonical::Digests) -> &String| {
        let get = |p: Part| {
            parts
                .iter()
                .position(|q| *q == p)
                .map(|i| f(&digests[i]).clone())
        };
        card::GraphDigests {
            generate: f(&digests[0]).clone(),
            refine: f(&digests[1]).clone(),
            residual: f(&digests[2]).clone(),
            amortised: get(Part::Amortised),
            generate_int8: get(Part::GenerateInt8),
            amortised_int8: get(Part::AmortisedInt8),
            resolve: get(Part::Resolve),
        }
    };
    card.graph_sha256 = Some(of(|d| &d.graph));
    card.graph_structure_sha256 = Some(of(|d| &d.structure));
    card.validate().map_err(anyhow::Error::msg)?;
    for (m, part) in models.iter_mut().zip(parts) {
        let c = card.for_part(part);
        m.doc_string = format!("PIDDM one-step student, {part:?} graph");
        m.metadata_props = vec![StringStringEntryProto {
            key: card::CARD_KEY.into(),
            value: c.to_json(),
            ..Default::default()
        }];
    }
    Ok(())
}

/// Wraps a graph as a model with typed inputs and outputs (`None` = the dynamic batch); [`seal`]
/// adds the model card.
pub fn model(g: Graph, name: &str, inputs: &[Io], outputs: &[Io]) -> ModelProto {
    let mut gp = g.into_proto(name);
    gp.input = inputs.iter().map(|(n, d)| value_info(n, d)).collect();
    gp.output = outputs.iter().map(|(n, d)| value_info(n, d)).collect();
    ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
            ..Default::default()
        }],
        producer_name: "piddm-train".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(gp).into(),
        ..Default::default()
    }
}

fn source_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The card of a student; `infer` gives its solve defaults, `amortised` says whether the artifact
/// has the encoder (its fast path then being `infer`).
pub fn card_for(
    meta: &CheckpointMeta,
    net: &Net,
    infer: &InferConfig,
    amortised: bool,
    evaluation: serde_json::Value,
    main: &Path,
) -> Result<ModelCard> {
    let info = meta.student.as_ref().context("not a student checkpoint")?;
    let d = &meta.data;
    let n = d.grid.n;
    let name = |p: Part| {
        card::sibling(main, p)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let determined = match (infer.determined, d.pde.family().determined(d.grid)) {
        (None, _) => None,
        (Some(fit), Some(m)) if info.corrections > 0 => Some(card::Determined {
            channel: m.channel,
            rows: m.rows,
            modes: m.modes,
            noise: fit.noise,
            iterations: fit.iterations,
        }),
        (Some(_), _) => bail!(
            "the preset asks for the determined fit, which needs a family with determined modes \
             ({} has none) and a student with corrections ({})",
            d.pde.name(),
            info.corrections
        ),
    };
    Ok(ModelCard {
        format: card::CARD_FORMAT,
        part: Part::Generate,
        pde: card::Pde {
            name: d.pde.name().into(),
            equation: d.pde.family().equation(),
            parameters: d.pde.family().parameters(),
            threshold: d.pde.family().threshold(),
        },
        grid: {
            let g = d.pde.family().geometry(d.grid);
            card::GridInfo {
                nx: n,
                ny: n,
                domain: g.domain,
                spacing: g.spacing[0],
                spacing_y: (g.spacing[1] != g.spacing[0]).then_some(g.spacing[1]),
                boundary: Some(g.boundary.map(|b| b.name().to_string())),
            }
        },
        channels: d
            .pde
            .channels()
            .iter()
            .map(|(c, u)| card::Channel {
                name: c.to_string(),
                units: u.to_string(),
            })
            .collect(),
        normalisation: card::Normalisation {
            mean: d.normalisation.mean.clone(),
            scale: d.normalisation.scale.clone(),
        },
        lambda_train: info.lambda_train,
        lambda_consistency: info.lambda_consistency,
        corrections: info.corrections,
        residual_channels: d.pde.family().residual_channels(),
        defaults: card::SolveDefaults {
            lambda_infer: infer.lambda,
            steps: infer.steps,
            learning_rate: infer.lr,
            start: card::Start::Auto,
            optimizer: infer.optimizer,
            noise_scale: infer.noise_scale,
        },
        teacher_steps: info.heun_steps,
        provenance: card::Provenance {
            dataset_seed: d.seed,
            dataset_count: d.count,
            teacher_train_steps: info.teacher_train_steps,
            student_train_steps: meta.step,
            source_revision: source_revision(),
            trainer_version: env!("CARGO_PKG_VERSION").into(),
        },
        evaluation,
        weights_sha256: weights_sha256(net),
        graph_sha256: None,
        graph_structure_sha256: None,
        files: card::Files {
            refine: name(Part::Refine),
            residual: name(Part::Residual),
            amortised: amortised.then(|| name(Part::Amortised)),
            generate_int8: None,
            amortised_int8: None,
            resolve: determined.as_ref().map(|_| name(Part::Resolve)),
        },
        spread: None,
        determined,
    })
}

/// Names the graphs of `precision` in `card` (the main file `main`), so that [`build`] writes them.
pub fn add_precision(card: &mut ModelCard, precision: Precision, main: &Path) {
    let name = |p: Part| {
        card::sibling(main, p)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    if precision == Precision::Int8 {
        card.files.generate_int8 = Some(name(Part::GenerateInt8));
        card.files.amortised_int8 = card
            .files
            .amortised
            .is_some()
            .then(|| name(Part::AmortisedInt8));
    }
}

/// Calibration batches of the int8 graphs (4 batches of 16 samples, a fixed seed): for generation
/// standard normal eps; for the amortised graph the student's own samples observed through the
/// encoder's training tasks (forward, inverse, sparse), z standard normal.
fn calibration_feeds(st: &Student, meta: &CheckpointMeta, part: Part) -> Vec<quantise::Feed> {
    let _g = tch::no_grad_guard();
    tch::manual_seed(20_251_204);
    let (c, n) = (meta.unet.channels, meta.data.grid.n as i64);
    let dims = vec![16, c, n, n];
    let vals = |t: &tch::Tensor| Vec::<f32>::try_from(t.reshape([-1])).expect("float tensor");
    (0..4)
        .map(|_| {
            let eps = tch::Tensor::randn(dims.clone(), (tch::Kind::Float, tch::Device::Cpu));
            match part {
                Part::Generate => vec![(io::EPS.to_string(), dims.clone(), vals(&eps))],
                _ => {
                    let x = st.generate(&eps);
                    let tasks =
                        encoder::family_masks(&meta.data.pde, meta.data.grid, tch::Device::Cpu);
                    let mask = encoder::task_masks(&x, &tasks, [1.0; 3]);
                    let z = tch::Tensor::randn(dims.clone(), (tch::Kind::Float, tch::Device::Cpu));
                    vec![
                        (io::OBSERVED.to_string(), dims.clone(), vals(&(&x * &mask))),
                        (io::MASK.to_string(), dims.clone(), vals(&mask)),
                        (io::Z.to_string(), dims.clone(), vals(&z)),
                    ]
                }
            }
        })
        .collect()
}

/// The graphs of a student, as protobuf messages in the order of `card.parts()` (main, refine,
/// residual, and amortised when `encoder` is given), sealed with `card` (whose graph digests this
/// fills in).
pub fn build(
    net: &Net,
    meta: &CheckpointMeta,
    encoder: Option<&UNet>,
    card: &mut ModelCard,
) -> Result<Vec<ModelProto>> {
    let c = meta.unet.channels;
    let n = meta.data.grid.n as i64;
    let chw = [c, n, n];
    let shape = [
        meta.unet.channels as usize,
        meta.data.grid.n,
        meta.data.grid.n,
    ];
    let op = meta.data.residual_op();
    let rc = op.pde.family().residual_channels();
    let norm = &meta.data.normalisation;
    let st = Student::of(net, meta);

    // generate: eps -> x (physical), residual
    let mut g = Graph::new();
    g.chw.insert(io::EPS.into(), chw);
    let d = student_nodes(&mut g, &st, io::EPS);
    let x = g.affine_channels(&d, &norm.scale, &norm.mean);
    let r = op.emit(&mut g, &x);
    g.rename(&x, io::X);
    g.rename(&r, io::RESIDUAL);
    let generate_net = std::mem::take(&mut g.net_nodes);
    let generate = part_model(g, Part::Generate, shape, rc);

    // refine: eps, observed, mask, lambda -> loss, grad, x_mix
    let mut g = Graph::new();
    g.input_diff(io::EPS, chw);
    g.chw.insert(io::OBSERVED.into(), chw);
    g.chw.insert(io::MASK.into(), chw);
    let (loss, x_mix) = {
        let mut f = Folding::new(&mut g);
        let node = |n: &str| Gv::Node(n.into());
        let d = st.emit_one_step(&mut f, &node(io::EPS));
        let (loss, x) = st.emit_loss(
            &mut f,
            &d,
            &node(io::OBSERVED),
            &node(io::MASK),
            &node(io::LAMBDA),
        );
        (f.name(&loss), f.name(&x))
    };
    // the reverse pass's seed, ones shaped as the loss [B]: loss * 0 + 1 keeps the batch's
    // symbol (ConstantOfShape of its Shape would give a new one, see `Graph::reshape`); it is
    // not finite only where the loss is not, whose gradient is not either
    let zero = g.scalar(0.0);
    let one = g.scalar(1.0);
    let zeros = g.node("Mul", &[&loss, &zero], vec![]);
    let seed = g.node("Add", &[&zeros, &one], vec![]);
    let grad = g.backward(&loss, &seed, io::EPS)?;
    g.rename(&loss, io::LOSS);
    g.rename(&grad, io::GRAD);
    g.rename(&x_mix, io::X_MIX);
    let refine = part_model(g, Part::Refine, shape, rc);

    // residual: x -> residual, residual_mse
    let mut g = Graph::new();
    g.chw.insert(io::X.into(), chw);
    let (r, mse) = op.emit_with_mse(&mut g, &io::X.to_string());
    g.rename(&r, io::RESIDUAL);
    g.rename(&mse, io::RESIDUAL_MSE);
    let residual = part_model(g, Part::Residual, shape, rc);
    let mut models = vec![generate, refine, residual];
    let mut nets = vec![(0usize, generate_net)];

    // amortised: observed, mask, z -> eps, x_mix
    if let Some(enc) = encoder {
        let mut g = Graph::new();
        for n in [io::OBSERVED, io::MASK, io::Z] {
            g.chw.insert(n.into(), chw);
        }
        let mut f = Folding::new(&mut g);
        let node = |n: &str| Gv::Node(n.into());
        let (eps, x) = encoder::answer(
            &mut f,
            &st,
            enc,
            &node(io::OBSERVED),
            &node(io::MASK),
            &node(io::Z),
        );
        let (eps, x) = (f.name(&eps), f.name(&x));
        g.rename(&eps, io::EPS);
        g.rename(&x, io::X_MIX);
        let amortised_net = std::mem::take(&mut g.net_nodes);
        models.push(part_model(g, Part::Amortised, shape, rc));
        nets.push((3, amortised_net));
    }
    if card.files.generate_int8.is_some() {
        for (i, net) in &nets {
            let fp32 = &models[*i];
            let part = if *i == 0 {
                Part::Generate
            } else {
                Part::Amortised
            };
            let tensors = quantise::calibrated_tensors(fp32, net);
            let ranges = quantise::calibrate(fp32, &tensors, &calibration_feeds(&st, meta, part))?;
            let mut q = quantise::quantise(fp32, net, &ranges)?;
            if let Some(g) = q.graph.as_mut() {
                g.name = format!("{:?}", Precision::Int8.part(part)).to_lowercase();
            }
            models.push(q);
        }
    }

    // resolve: x -> x_resolved, the solved channel derived again from the input
    if card.files.resolve.is_some() {
        let corr = st
            .correction
            .as_ref()
            .context("the resolve graph needs a student with corrections")?;
        let mut g = Graph::new();
        g.chw.insert(io::X.into(), chw);
        let y = {
            let mut f = Folding::new(&mut g);
            let y = corr.emit_physical(&mut f, &Gv::Node(io::X.into()));
            f.name(&y)
        };
        g.rename(&y, io::X_RESOLVED);
        models.push(part_model(g, Part::Resolve, shape, rc));
    }
    seal(&mut models, card)?;
    Ok(models)
}

/// Exports the student checkpoint to `out` (the main file) and its siblings, with the amortised
/// encoder when `encoder` gives its checkpoint and the fast path's solve defaults. Returns the card.
pub fn export(
    student: &Path,
    out: &Path,
    infer: &InferConfig,
    encoder: Option<(&Path, &InferConfig)>,
    evaluation: serde_json::Value,
) -> Result<ModelCard> {
    export_precision(student, out, infer, encoder, evaluation, Precision::Fp32)
}

/// [`export`], with the graphs of `precision` beside the float32 ones (int8: the generate and
/// amortised graphs with their networks quantised).
pub fn export_precision(
    student: &Path,
    out: &Path,
    infer: &InferConfig,
    encoder: Option<(&Path, &InferConfig)>,
    evaluation: serde_json::Value,
    precision: Precision,
) -> Result<ModelCard> {
    let (net, meta) = load_role(student, Role::Student)?;
    if out.extension().and_then(|e| e.to_str()) != Some("onnx") {
        bail!("the output file must end in .onnx, got {}", out.display());
    }
    let enc = encoder.map(|(p, _)| load_encoder(p, &net)).transpose()?;
    let defaults = encoder.map_or(infer, |e| e.1);
    let mut card = card_for(&meta, &net, defaults, enc.is_some(), evaluation, out)?;
    add_precision(&mut card, precision, out);
    let models = build(&net, &meta, enc.as_ref().map(|e| &e.net), &mut card)?;
    write_parts(&models, &card, out)?;
    Ok(card)
}

/// Writes each part of a sealed model beside the main file `main`, canonically and atomically.
fn write_parts(models: &[ModelProto], card: &ModelCard, main: &Path) -> Result<()> {
    for (m, part) in models.iter().zip(card.parts()) {
        crate::util::fs::write_atomic(&card::sibling(main, part), &encode(m)?)?;
    }
    Ok(())
}

/// `piddm-train seal`: re-seals the model at `main` after a deliberate edit of its graphs (or
/// after a tool re-wrote them): each part's digests recomputed into the card, every part rewritten
/// canonically. The card's other fields are kept; cards before format 4 (another interface) are
/// refused: re-export those.
pub fn reseal(main: &Path) -> Result<ModelCard> {
    reseal_with(main, |_| ())
}

/// [`reseal`] with `edit` applied to the card first (a field added after export, such as the
/// spread calibration).
pub fn reseal_with(main: &Path, edit: impl FnOnce(&mut ModelCard)) -> Result<ModelCard> {
    let (mut card, generate) = read_card(main)?;
    let mut generate = Some(generate);
    if card.format < 4 {
        bail!(
            "{} has a format {} card, whose graphs have another interface: re-export it from its checkpoint",
            main.display(),
            card.format
        );
    }
    card.format = card::CARD_FORMAT;
    edit(&mut card);
    let mut models = Vec::new();
    for part in card.parts() {
        let path = card::sibling(main, part);
        let (c, m) = match part {
            Part::Generate => (card.clone(), generate.take().context("one generate part")?),
            _ => read_card(&path)?,
        };
        if c.part != part {
            bail!(
                "{} holds the {:?} graph, not the {part:?} graph",
                path.display(),
                c.part
            );
        }
        models.push(m);
    }
    seal(&mut models, &mut card)?;
    write_parts(&models, &card, main)?;
    Ok(card)
}

/// Reads the card of an ONNX file written by [`export`].
pub fn read_card(path: &Path) -> Result<(ModelCard, ModelProto)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let m = ModelProto::parse_from_bytes(&bytes)
        .with_context(|| format!("{} is not an ONNX model", path.display()))?;
    let json = m
        .metadata_props
        .iter()
        .find(|p| p.key == card::CARD_KEY)
        .with_context(|| {
            format!(
                "{} is an ONNX model but not a piddm artifact (no {} metadata)",
                path.display(),
                card::CARD_KEY
            )
        })?;
    let card = ModelCard::from_json(&json.value)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((card, m))
}

/// `piddm-train export`: the student at `student` exported to `out` with the card's solve defaults
/// from `preset` (its `[amortise.refine]` when `encoder` is given), figures from the evaluation at
/// `eval`.
pub fn export_files(
    student: &Path,
    out: &Path,
    preset: &crate::config::Preset,
    eval: Option<&Path>,
    encoder: Option<&Path>,
    precision: Precision,
) -> Result<()> {
    let evaluation = match eval {
        Some(p) => serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        )?,
        None => serde_json::json!({}),
    };
    let fast = match (encoder, &preset.amortise) {
        (Some(e), Some(a)) => Some((e, &a.refine)),
        (Some(_), None) => bail!("preset {} has no [amortise] section", preset.name),
        (None, _) => None,
    };
    let card = export_precision(student, out, &preset.infer, fast, evaluation, precision)?;
    let siblings: Vec<&str> = card
        .parts()
        .into_iter()
        .filter_map(|p| card.files.get(p))
        .collect();
    eprintln!(
        "wrote {} (+ {}); weights sha256 {}",
        out.display(),
        siblings.join(", "),
        card.weights_sha256
    );
    Ok(())
}

/// `piddm-train inspect`: what an exported file is (part, opset, IR, sizes, inputs, outputs) and
/// its model card.
pub fn inspect(file: &Path) -> Result<String> {
    let (card, m) = read_card(file)?;
    let g = m.graph.as_ref().context("model has no graph")?;
    let names = |v: &[ValueInfoProto]| {
        v.iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(format!(
        "{}: {:?} graph, opset {}, IR {}, {} nodes, {} initializers\ninputs:  {}\noutputs: {}\n{}\n",
        file.display(),
        card.part,
        m.opset_import.first().map_or(0, |o| o.version),
        m.ir_version,
        g.node.len(),
        g.initializer.len(),
        names(&g.input),
        names(&g.output),
        serde_json::to_string_pretty(&card)?
    ))
}
