//! A loaded PIDDM model: its three ONNX Runtime graphs, its card, and the operations on it.
//! Fields are float32 in physical units, laid out [batch][channel][ny][nx].

use crate::artifact;
use crate::card::{self, io, ModelCard, Part, Precision, Start};
use crate::error::{err, Result};
use crate::limits::{
    zeros, CHUNK_SAMPLES, CHUNK_VALUES, MAX_BATCH, MAX_SPREAD_ANSWERS, MAX_STEPS, MAX_THREADS,
    MAX_VALUES,
};
use crate::optim::{self, Optimizer};
use crate::ortlib;
use ort::session::{builder::GraphOptimizationLevel, Session};
use ort::value::TensorRef;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda { device_id: i32 },
}

#[derive(Clone, Debug)]
pub struct Options {
    pub device: Device,
    /// With `Device::Cuda`: run on the CPU instead of failing when CUDA cannot be used.
    pub cuda_fallback_to_cpu: bool,
    /// Threads per call (0: one per core): ONNX Runtime's intra-op threads for a single sample,
    /// the number of single-threaded parts a batch is split into ([`Model::over_batch`]).
    pub intra_op_threads: usize,
    /// Path to libonnxruntime; see [`ortlib`] for the search order when absent.
    pub ort_library: Option<PathBuf>,
    /// Recompute each graph's sha256 and compare it with the model card (on by default). Off
    /// skips the hashing (a few ms per MB of weights) and accepts format 1 cards, which have no
    /// digests.
    pub verify_weights: bool,
    /// The networks' arithmetic: int8 loads the artifact's int8 generate and amortised graphs
    /// (refused where it has none); the refine and residual graphs are float32 in every mode.
    pub precision: Precision,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            device: Device::Cpu,
            cuda_fallback_to_cpu: false,
            intra_op_threads: 0,
            ort_library: None,
            verify_weights: true,
            precision: Precision::Fp32,
        }
    }
}

/// Parameters of the masked solve; `Model::default_solve_params` gives the card's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SolveParams {
    /// Optimisation steps after the start; 0 with the amortised start is the one-call answer.
    pub steps: usize,
    pub learning_rate: f64,
    pub lambda_infer: f64,
    /// Seed of the initial eps (random start) or of z (amortised start).
    pub seed: u64,
    pub start: Start,
    pub optimizer: Optimizer,
    /// Scale of z for the amortised start: 1 draws z as the encoder was trained (answers spread as
    /// it learnt), 0 gives its central answer (every seed the same), between or above narrows or
    /// widens the spread. The random start ignores it.
    pub noise_scale: f64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SolveReport {
    pub steps: usize,
    /// The start the solve took (`Auto` resolved).
    pub start: Start,
    /// Mean loss over the batch before each step and after the last (steps + 1 entries); empty for
    /// the one-call answer, which evaluates no loss.
    pub loss_history: Vec<f64>,
    /// Root-mean-square misfit between the answer and the observations over observed entries,
    /// physical units (0 where nothing is observed).
    pub misfit: f64,
    /// Mean over the batch of the answer's mean squared PDE residual over the interior.
    pub residual: f64,
}

/// Sessions of one graph. `Session::run` needs exclusive access, so concurrent callers each take
/// a session from the pool (made on demand from the same checked bytes), which keeps calls on one
/// model parallel and their results independent of scheduling. A pool may start empty: the graph
/// of a part a caller never uses (the refine graph of one that only generates) then costs no
/// ONNX Runtime session at all. Sessions come in two kinds: with the caller's intra-op threads
/// (one run uses every core), and single-threaded ones that the workers of a batch split across
/// the cores run side by side ([`Model::over_batch`]).
struct Pool {
    bytes: Vec<u8>,
    options: Options,
    part: Part,
    card: ModelCard,
    main: PathBuf,
    idle: Mutex<Vec<Session>>,
    idle_single: Mutex<Vec<Session>>,
    /// Sessions made so far (for [`Model::sessions`]).
    made: std::sync::atomic::AtomicU64,
    /// Calls that used this graph (for [`Model::graph_uses`]).
    uses: std::sync::atomic::AtomicU64,
}

impl Pool {
    /// Counts one call that uses this graph (however many runs and sessions it takes).
    fn used(&self) {
        self.uses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn idle(&self, single: bool) -> &Mutex<Vec<Session>> {
        if single {
            &self.idle_single
        } else {
            &self.idle
        }
    }

    /// An idle session of the kind asked for, made if none is.
    fn checkout(&self, single: bool) -> Result<Session> {
        let taken = self
            .idle(single)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        if let Some(s) = taken {
            return Ok(s);
        }
        let one = Options {
            intra_op_threads: 1,
            ..self.options.clone()
        };
        let o = if single { &one } else { &self.options };
        let s = open_part(&self.main, self.part, &self.bytes, &self.card, o)?.0;
        self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(s)
    }

    fn checkin(&self, single: bool, s: Session) {
        self.idle(single)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(s);
    }

    /// `run` on a session of the kind asked for, checked out and back in whatever it returns.
    fn with<T>(&self, single: bool, run: impl FnOnce(&mut Session) -> Result<T>) -> Result<T> {
        let mut s = self.checkout(single)?;
        let r = run(&mut s);
        self.checkin(single, s);
        r
    }
}

/// Returns the session and whether it fell back to the CPU.
fn make_session(bytes: &[u8], o: &Options) -> Result<(Session, bool)> {
    let env = ortlib::environment(o.ort_library.as_deref().and_then(|p| p.to_str()))?;
    let base = || -> Result<_> {
        let mut b = Session::builder(env)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(ort::Error::from)?;
        if o.intra_op_threads > 0 {
            b = b
                .with_intra_threads(o.intra_op_threads)
                .map_err(ort::Error::from)?;
        }
        Ok(b)
    };
    match o.device {
        Device::Cpu => Ok((
            base()?.commit_from_memory(bytes).map_err(format_error)?,
            false,
        )),
        Device::Cuda { device_id } => {
            let cuda = cuda_session(base()?, device_id, bytes);
            match cuda {
                Ok(s) => Ok((s, false)),
                Err(e) if o.cuda_fallback_to_cpu => {
                    let _ = e;
                    Ok((
                        base()?.commit_from_memory(bytes).map_err(format_error)?,
                        true,
                    ))
                }
                Err(e) => Err(e),
            }
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda_session(
    b: ort::session::builder::SessionBuilder,
    device_id: i32,
    bytes: &[u8],
) -> Result<Session> {
    let ep = ort::ep::CUDA::default()
        .with_device_id(device_id)
        .build()
        .error_on_failure();
    let mut b = b.with_execution_providers([ep]).map_err(|e| {
        err!(
            PIDDM_ERR_DEVICE,
            "CUDA execution provider unavailable (device {device_id}): {e}"
        )
    })?;
    b.commit_from_memory(bytes).map_err(|e| {
        err!(
            PIDDM_ERR_DEVICE,
            "CUDA execution provider unavailable (device {device_id}): {e}"
        )
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda_session(
    _: ort::session::builder::SessionBuilder,
    device_id: i32,
    _: &[u8],
) -> Result<Session> {
    Err(err!(PIDDM_ERR_DEVICE, "this build of piddm has no CUDA support (device {device_id} requested); rebuild with the 'cuda' feature"))
}

fn format_error(e: ort::Error) -> crate::error::Error {
    err!(PIDDM_ERR_FORMAT, "not a loadable ONNX model: {e}")
}

pub struct Model {
    card: ModelCard,
    card_json: std::ffi::CString,
    path: PathBuf,
    generate: Pool,
    refine: Pool,
    residual: Pool,
    amortised: Option<Pool>,
    resolve: Option<Pool>,
    shape: [usize; 3],
    fell_back_to_cpu: bool,
}

/// Reads and checks one graph of an artifact: the file (regular, size-capped), its card
/// (validated), the graph's digest and its declared inputs and outputs against the card. ONNX
/// Runtime sees nothing yet.
fn read_part(main: &Path, part: Part, o: &Options) -> Result<(Vec<u8>, ModelCard)> {
    let path = card::sibling(main, part);
    let what = match part {
        Part::Generate => "model file".to_string(),
        p => format!("{p:?} graph (a sibling file the model needs)").to_lowercase(),
    };
    let bytes = artifact::read_file(&path, &what)?;
    let fmt = |m: String| err!(PIDDM_ERR_FORMAT, "{}: {m}", path.display());
    let scanned = artifact::scan(&bytes).map_err(|e| fmt(format!("not an ONNX model ({e})")))?;
    let json = scanned
        .metadata(card::CARD_KEY)
        .map_err(fmt)?
        .ok_or_else(|| {
            fmt(format!(
                "an ONNX model but not a PIDDM model (no {} metadata)",
                card::CARD_KEY
            ))
        })?;
    let c = ModelCard::from_json(json).map_err(fmt)?;
    if c.part != part {
        return Err(fmt(format!(
            "holds the {:?} graph, expected the {part:?} graph",
            c.part
        )));
    }
    let graph = scanned
        .graph
        .ok_or_else(|| fmt("the model has no graph".into()))?;
    if o.verify_weights {
        let Some(digests) = &c.graph_sha256 else {
            return Err(fmt(format!("card format {} records no graph digest, so its weights cannot be verified: re-export it, or load with weight verification off", c.format)));
        };
        let want = digests.get(part).unwrap_or_default();
        if artifact::graph_sha256(graph) != want {
            verify_reencoded(graph, part, &c, main).map_err(fmt)?;
        }
    }
    check_declared_interface(graph, part, &c).map_err(fmt)?;
    Ok((bytes, c))
}

/// A graph whose bytes are not the ones sealed: accepted when its canonical encoding is (the file
/// was re-saved by other tools, `onnx.save` for one), else refused, saying what differs where the
/// card can tell (weights or structure) and how to re-seal a deliberate edit.
fn verify_reencoded(
    graph: &[u8],
    part: Part,
    c: &ModelCard,
    main: &Path,
) -> std::result::Result<(), String> {
    let want = c
        .graph_sha256
        .as_ref()
        .and_then(|d| d.get(part))
        .unwrap_or_default();
    let found = crate::canonical::graph_digests(graph);
    if found.as_ref().is_ok_and(|d| d.graph == want) {
        return Ok(());
    }
    let structure = c.graph_structure_sha256.as_ref().and_then(|d| d.get(part));
    let what = match (&found, structure) {
        (Ok(d), Some(s)) if d.structure == s => "its weights (initializer values) do not match the model card's sha256; its operators, attributes and wiring do",
        (Ok(_), Some(_)) => "its operators, attributes or wiring do not match the model card's sha256",
        (Err(_), _) => "its graph does not match the model card's sha256 and does not parse",
        (Ok(_), None) => "its graph (weights or operators) does not match the model card's sha256",
    };
    let got = match &found {
        Ok(d) => d.graph.clone(),
        Err(_) => artifact::graph_sha256(graph),
    };
    Err(format!(
        "{what} ({want} recorded, {got} found): the file was modified or corrupted. If the edit \
         is deliberate, re-seal the model: piddm-train seal {}",
        main.display()
    ))
}

/// A session on a checked graph, whose interface must be the contract's for its card.
fn open_part(
    main: &Path,
    part: Part,
    bytes: &[u8],
    card: &ModelCard,
    o: &Options,
) -> Result<(Session, bool)> {
    let path = card::sibling(main, part);
    let fmt = |m: String| err!(PIDDM_ERR_FORMAT, "{}: {m}", path.display());
    // A malformed graph can make the `ort` binding panic while it reads the session's interface
    // (found by tests/fuzz.rs: shapes that ONNX Runtime infers as negative); that is the file's
    // fault, not a bug to report.
    let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| make_session(bytes, o)))
        .map_err(|p| {
            fmt(format!(
                "ONNX Runtime cannot read this graph: {}",
                crate::error::panic_message(p.as_ref())
            ))
        })?;
    let (session, fell_back) = made.map_err(|e| {
        if e.status == crate::error::Status::PIDDM_ERR_FORMAT {
            fmt(e.message)
        } else {
            e
        }
    })?;
    check_interface(&session, part, card).map_err(fmt)?;
    Ok((session, fell_back))
}

/// One input or output of a graph as its interface check sees it: name, whether it is a float32
/// tensor (its type in words otherwise), and its dimensions (None where not fixed).
struct Port {
    name: String,
    float32: std::result::Result<(), String>,
    dims: Vec<Option<i64>>,
}

/// The ports' names, types and shapes must be exactly the contract's `want`.
fn check_ports(
    kind: &str,
    got: &[Port],
    want: &[card::TensorSpec],
) -> std::result::Result<(), String> {
    let mut names: Vec<&str> = got.iter().map(|o| o.name.as_str()).collect();
    names.sort_unstable();
    let mut expect: Vec<&str> = want.iter().map(|t| t.name).collect();
    expect.sort_unstable();
    if names != expect {
        return Err(format!(
            "the graph's {kind} are {names:?}, the contract says {expect:?}"
        ));
    }
    for t in want {
        let o = got.iter().find(|o| o.name == t.name).expect("names match");
        if let Err(ty) = &o.float32 {
            return Err(format!("{kind} '{}' is {ty}, not a float32 tensor", t.name));
        }
        if o.dims != t.dims {
            return Err(format!(
                "{kind} '{}' has shape {:?}, the card makes it {:?} (None: the batch)",
                t.name, o.dims, t.dims
            ));
        }
    }
    Ok(())
}

/// The session's inputs and outputs must be exactly the contract's, float32, with its shapes.
fn check_interface(s: &Session, part: Part, c: &ModelCard) -> std::result::Result<(), String> {
    let (inputs, outputs) = c.interface(part);
    let ports = |got: &[ort::value::Outlet]| -> Vec<Port> {
        got.iter()
            .map(|o| {
                let ty = o.dtype();
                Port {
                    name: o.name().to_string(),
                    float32: (ty.tensor_type() == Some(ort::value::TensorElementType::Float32))
                        .then_some(())
                        .ok_or_else(|| format!("{ty:?}")),
                    dims: ty
                        .tensor_shape()
                        .map(|s| s.iter().map(|&d| (d >= 0).then_some(d)).collect())
                        .unwrap_or_default(),
                }
            })
            .collect()
    };
    check_ports("inputs", &ports(s.inputs()), &inputs)?;
    check_ports("outputs", &ports(s.outputs()), &outputs)
}

/// The interface check on the graph's own declarations, before any session: what a part whose
/// session is made on first use is held to at load.
fn check_declared_interface(
    graph: &[u8],
    part: Part,
    c: &ModelCard,
) -> std::result::Result<(), String> {
    let (inputs, outputs) = c.interface(part);
    let (ins, outs) = artifact::graph_ports(graph)?;
    let ports = |v: Vec<artifact::Port>| -> Vec<Port> {
        v.into_iter()
            .map(|p| Port {
                name: p.name,
                float32: (p.elem_type == Some(artifact::ELEM_FLOAT))
                    .then_some(())
                    .ok_or_else(|| match p.elem_type {
                        Some(t) => format!("element type {t}"),
                        None => "not a tensor".into(),
                    }),
                dims: p.dims,
            })
            .collect()
    };
    check_ports("inputs", &ports(ins), &inputs)?;
    check_ports("outputs", &ports(outs), &outputs)
}

/// A solve's observations, checked: the values where observed (zero elsewhere) and the mask as 0/1.
struct Observed {
    values: Vec<f32>,
    mask: Vec<f32>,
}

impl Model {
    /// Loads `path` (the main file) and its sibling graphs, checking that they belong together.
    /// All three files are read and checked before ONNX Runtime sees any of them.
    pub fn load(path: impl AsRef<Path>, options: &Options) -> Result<Model> {
        let path = path.as_ref();
        if options.intra_op_threads > MAX_THREADS {
            return Err(err!(
                PIDDM_ERR_INVALID_ARGUMENT,
                "intra_op_threads {} is more than the maximum {MAX_THREADS}",
                options.intra_op_threads
            ));
        }
        let (mut gb, card) = read_part(path, Part::Generate, options)?;
        let precision = options.precision;
        if !card.has_precision(precision) {
            return Err(err!(
                PIDDM_ERR_INVALID_ARGUMENT,
                "{} has no {p} graphs; export them with piddm-train export --precision {p}, or load it in fp32",
                path.display(),
                p = precision.name()
            ));
        }
        let gpart = precision.part(Part::Generate);
        let mut others = Vec::new();
        if gpart != Part::Generate {
            let (b, c) = read_part(path, gpart, options)?;
            gb = b;
            others.push((c, gpart));
        }
        let (rb, rcard) = read_part(path, Part::Refine, options)?;
        let (qb, qcard) = read_part(path, Part::Residual, options)?;
        let apart = precision.part(Part::Amortised);
        let amortised = match card.files.amortised {
            Some(_) => Some(read_part(path, apart, options)?),
            None => None,
        };
        let resolve = match card.files.resolve {
            Some(_) => Some(read_part(path, Part::Resolve, options)?),
            None => None,
        };
        others.push((rcard.clone(), Part::Refine));
        others.push((qcard.clone(), Part::Residual));
        if let Some((_, acard)) = &amortised {
            others.push((acard.clone(), apart));
        }
        if let Some((_, c)) = &resolve {
            others.push((c.clone(), Part::Resolve));
        }
        for (other, part) in others {
            if other != card.for_part(part) {
                return Err(err!(
                    PIDDM_ERR_FORMAT,
                    "the graphs beside {} come from a different model (their model cards differ)",
                    path.display()
                ));
            }
        }
        // Generation's session now: every caller generates, and it says whether CUDA fell back.
        // The other parts were checked against their own declarations by `read_part` and get
        // their sessions when a call first needs them.
        let gcard = card.for_part(gpart);
        let (gs, fell_back) = open_part(path, gpart, &gb, &gcard, options)?;
        let shape = [card.channels.len(), card.grid.ny, card.grid.nx];
        let pool = |bytes: Vec<u8>, part: Part, c: &ModelCard, s: Option<Session>| Pool {
            bytes,
            options: options.clone(),
            part,
            card: c.clone(),
            main: path.to_path_buf(),
            made: (s.is_some() as u64).into(),
            idle: Mutex::new(s.into_iter().collect()),
            idle_single: Mutex::new(Vec::new()),
            uses: Default::default(),
        };
        let generate = pool(gb, gpart, &gcard, Some(gs));
        let card_json = std::ffi::CString::new(card.to_json())
            .map_err(|_| err!(PIDDM_ERR_FORMAT, "model card holds a NUL byte"))?;
        Ok(Model {
            card,
            card_json,
            path: path.to_path_buf(),
            generate,
            refine: pool(rb, Part::Refine, &rcard, None),
            residual: pool(qb, Part::Residual, &qcard, None),
            amortised: amortised.map(|(b, c)| pool(b, apart, &c, None)),
            resolve: resolve.map(|(b, c)| pool(b, Part::Resolve, &c, None)),
            shape,
            fell_back_to_cpu: fell_back,
        })
    }

    pub fn card(&self) -> &ModelCard {
        &self.card
    }
    /// The card as JSON, NUL-terminated (for the C API).
    pub fn card_cstr(&self) -> &std::ffi::CStr {
        &self.card_json
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// (channels, ny, nx).
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.shape[0], self.shape[1], self.shape[2])
    }
    /// How many calls on this model have used the graph of `part` so far (0 for a part the
    /// artifact lacks): what a call touched, e.g. that the one-call answer runs no refine graph.
    pub fn graph_uses(&self, part: Part) -> u64 {
        self.pool(part)
            .map_or(0, |p| p.uses.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The sessions of `part`'s graph (None for a part the artifact lacks or this load's
    /// precision does not use).
    fn pool(&self, part: Part) -> Option<&Pool> {
        [
            Some(&self.generate),
            Some(&self.refine),
            Some(&self.residual),
            self.amortised.as_ref(),
            self.resolve.as_ref(),
        ]
        .into_iter()
        .flatten()
        .find(|p| p.part == part)
    }

    /// The precision of the networks this model was loaded with.
    pub fn precision(&self) -> Precision {
        self.options().precision
    }
    fn options(&self) -> &Options {
        &self.generate.options
    }

    /// How many ONNX Runtime sessions of the graph of `part` this model holds or held: 0 until a
    /// call first needs a part other than generation (their sessions are made on first use).
    pub fn sessions(&self, part: Part) -> u64 {
        self.pool(part)
            .map_or(0, |p| p.made.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Whether the artifact has the amortised encoder (the one-call conditional answer).
    pub fn has_amortised(&self) -> bool {
        self.amortised.is_some()
    }
    /// True when CUDA was asked for, could not be used, and the caller allowed the CPU instead.
    pub fn fell_back_to_cpu(&self) -> bool {
        self.fell_back_to_cpu
    }
    /// Channels of the residual map ([batch][residual_channels][ny][nx]): 1 but for a family
    /// whose channels are time levels (Navier-Stokes: one per level).
    pub fn residual_channels(&self) -> usize {
        self.card.residual_channels
    }
    pub fn field_len(&self) -> usize {
        self.shape.iter().product()
    }
    fn plane(&self) -> usize {
        self.shape[1] * self.shape[2]
    }

    fn dims(&self, batch: usize, channels: usize) -> [usize; 4] {
        [batch, channels, self.shape[1], self.shape[2]]
    }

    /// A large batch runs through ONNX Runtime in chunks of this many samples, so that the
    /// network's activations (which grow with its width, not with the caller's arrays) stay bounded
    /// whatever batch is asked for. The graphs compute each sample alone: chunks change no answer.
    fn chunk(&self) -> usize {
        (CHUNK_VALUES / self.field_len()).clamp(1, CHUNK_SAMPLES)
    }

    fn chunks(&self, part: std::ops::Range<usize>) -> impl Iterator<Item = std::ops::Range<usize>> {
        let k = self.chunk();
        (part.start..part.end)
            .step_by(k)
            .map(move |s| s..(s + k).min(part.end))
    }

    /// How many workers a batch of `batch` samples is split across: on the CPU, one per intra-op
    /// thread the caller allows (0: one per core), at most one per sample. A network this small
    /// keeps two cores busier as two single-threaded runs on halves of a batch than as one run
    /// whose every operator is split in two (`trainer/results/bench.md`); a single sample keeps
    /// ONNX Runtime's own threads.
    fn workers(&self, batch: usize) -> usize {
        let o = self.options();
        if matches!(o.device, Device::Cuda { .. }) && !self.fell_back_to_cpu {
            return 1;
        }
        let threads = match o.intra_op_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            t => t,
        };
        threads.min(batch).max(1)
    }

    /// `step` over the chunks of a batch, in order: the results with their sample ranges (the
    /// caller counts its call, [`Pool::used`]). A batch
    /// that [`Model::workers`] splits runs as that many contiguous parts side by side, each on a
    /// single-threaded session of `pool`; every sample is computed alone either way, so the split
    /// changes no answer.
    fn over_batch<T: Send>(
        &self,
        pool: &Pool,
        batch: usize,
        step: impl Fn(&mut Session, std::ops::Range<usize>) -> Result<T> + Sync,
    ) -> Result<Vec<(std::ops::Range<usize>, T)>> {
        let run = |s: &mut Session, part: std::ops::Range<usize>| -> Result<Vec<_>> {
            self.chunks(part)
                .map(|r| step(s, r.clone()).map(|t| (r, t)))
                .collect()
        };
        let w = self.workers(batch);
        if w == 1 {
            return pool.with(false, |s| run(s, 0..batch));
        }
        let parts: Vec<_> = (0..w).map(|i| batch * i / w..batch * (i + 1) / w).collect();
        // one session per worker, taken before any starts: as many sessions as workers, however
        // the workers are scheduled
        let mut sessions = Vec::with_capacity(w);
        for _ in 0..w {
            match pool.checkout(true) {
                Ok(s) => sessions.push(s),
                Err(e) => {
                    sessions.into_iter().for_each(|s| pool.checkin(true, s));
                    return Err(e);
                }
            }
        }
        let results: Vec<(Result<Vec<_>>, Option<Session>)> = std::thread::scope(|sc| {
            let mut own = sessions.into_iter();
            let mut first = own.next().expect("w >= 2 sessions");
            let handles: Vec<_> = parts[1..]
                .iter()
                .zip(own)
                .map(|(p, mut s)| {
                    let (p, run) = (p.clone(), &run);
                    sc.spawn(move || (run(&mut s, p), s))
                })
                .collect();
            let r0 = run(&mut first, parts[0].clone());
            std::iter::once((r0, Some(first)))
                .chain(handles.into_iter().map(|h| match h.join() {
                    Ok((r, s)) => (r, Some(s)),
                    // the session went down with the worker
                    Err(p) => (
                        Err(err!(
                            PIDDM_ERR_PANIC,
                            "a batch worker panicked: {}",
                            crate::error::panic_message(p.as_ref())
                        )),
                        None,
                    ),
                }))
                .collect()
        });
        let mut all = Vec::with_capacity(batch.div_ceil(self.chunk()));
        let mut failed = None;
        for (r, s) in results {
            if let Some(s) = s {
                pool.checkin(true, s);
            }
            match r {
                Ok(v) => all.extend(v),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(all),
        }
    }

    /// A batch is 1 to MAX_BATCH samples whose arrays hold at most MAX_VALUES values each.
    pub(crate) fn check_batch(&self, batch: usize) -> Result<()> {
        if batch == 0 {
            return Err(err!(PIDDM_ERR_INVALID_ARGUMENT, "batch must be at least 1"));
        }
        if batch > MAX_BATCH {
            return Err(err!(
                PIDDM_ERR_SIZE,
                "batch {batch} is larger than the maximum {MAX_BATCH}: split it into several calls"
            ));
        }
        match batch.checked_mul(self.field_len()) {
            Some(n) if n <= MAX_VALUES => Ok(()),
            _ => Err(err!(
                PIDDM_ERR_SIZE,
                "batch {batch} of {} values each exceeds {MAX_VALUES} values per call: split it",
                self.field_len()
            )),
        }
    }

    fn check_len(&self, what: &str, got: usize, batch: usize, channels: usize) -> Result<()> {
        // check_batch bounds batch x field_len, so this product cannot overflow
        let want = batch * channels * self.plane();
        if got != want {
            let (_, ny, nx) = self.shape();
            return Err(err!(PIDDM_ERR_SIZE, "{what} has {got} values; batch {batch} x {channels} channels x {ny} x {nx} needs {want}"));
        }
        Ok(())
    }

    /// Standard normal eps for `batch` samples from `seed` (ChaCha8): the same seed, the same eps.
    pub fn noise(&self, seed: u64, batch: usize) -> Result<Vec<f32>> {
        self.check_batch(batch)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut v = zeros::<f32>(batch * self.field_len(), "eps")?;
        v.iter_mut()
            .for_each(|e| *e = StandardNormal.sample(&mut rng));
        Ok(v)
    }

    /// One-step generation from given eps: fields into `out`, and the residual map into
    /// `residual` when given.
    pub fn generate_from(
        &self,
        eps: &[f32],
        batch: usize,
        out: &mut [f32],
        residual: Option<&mut [f32]>,
    ) -> Result<()> {
        self.check_batch(batch)?;
        let c = self.shape[0];
        self.check_len("eps", eps.len(), batch, c)?;
        self.check_len("output buffer", out.len(), batch, c)?;
        let rc = self.residual_channels();
        if let Some(r) = &residual {
            self.check_len("residual buffer", r.len(), batch, rc)?;
        }
        finite("eps", eps)?;
        let (f, p) = (self.field_len(), rc * self.plane());
        let want_residual = residual.is_some();
        self.generate.used();
        let done = self.over_batch(&self.generate, batch, |s, r| {
            let input =
                TensorRef::from_array_view((self.dims(r.len(), c), &eps[r.start * f..r.end * f]))?;
            let outs = s.run(ort::inputs![io::EPS => input])?;
            let mut x = vec![0f32; r.len() * f];
            copy_out(&outs[io::X], &mut x)?;
            let mut res = vec![0f32; if want_residual { r.len() * p } else { 0 }];
            if want_residual {
                copy_out(&outs[io::RESIDUAL], &mut res)?;
            }
            Ok((x, res))
        })?;
        let mut residual = residual;
        for (r, (x, res)) in done {
            out[r.start * f..r.end * f].copy_from_slice(&x);
            if let Some(all) = residual.as_deref_mut() {
                all[r.start * p..r.end * p].copy_from_slice(&res);
            }
        }
        Ok(())
    }

    /// One-step generation with eps drawn from `seed`.
    pub fn generate(&self, seed: u64, batch: usize, out: &mut [f32]) -> Result<()> {
        let eps = self.noise(seed, batch)?;
        self.generate_from(&eps, batch, out, None)
    }

    /// The PDE residual map of `fields` into `residual` ([batch][residual_channels][ny][nx], zero
    /// where no equation holds); returns the mean over the batch of each sample's mean squared
    /// residual over the points where one holds.
    pub fn residual(&self, fields: &[f32], batch: usize, residual: &mut [f32]) -> Result<f64> {
        self.check_batch(batch)?;
        let c = self.shape[0];
        self.check_len("fields", fields.len(), batch, c)?;
        let rc = self.residual_channels();
        self.check_len("residual buffer", residual.len(), batch, rc)?;
        finite("fields", fields)?;
        let (f, p) = (self.field_len(), rc * self.plane());
        // Format 4 graphs score each sample where their PDE holds; older (Darcy) ones leave it to
        // the reader, whose PDE held on the interior.
        let graph_mse = self.card.format >= 4;
        let mut mse = vec![0f32; if graph_mse { batch } else { 0 }];
        self.residual.used();
        let done = self.over_batch(&self.residual, batch, |s, r| {
            let input = TensorRef::from_array_view((
                self.dims(r.len(), c),
                &fields[r.start * f..r.end * f],
            ))?;
            let outs = s.run(ort::inputs![io::X => input])?;
            let mut res = vec![0f32; r.len() * p];
            copy_out(&outs[io::RESIDUAL], &mut res)?;
            let mut ms = vec![0f32; if graph_mse { r.len() } else { 0 }];
            if graph_mse {
                copy_out(&outs[io::RESIDUAL_MSE], &mut ms)?;
            }
            Ok((res, ms))
        })?;
        for (r, (res, ms)) in done {
            residual[r.start * p..r.end * p].copy_from_slice(&res);
            if graph_mse {
                mse[r].copy_from_slice(&ms);
            }
        }
        if graph_mse {
            return Ok(mse.iter().map(|&v| v as f64).sum::<f64>() / batch as f64);
        }
        let (_, ny, nx) = self.shape();
        let interior = ((ny - 2) * (nx - 2)) as f64;
        Ok(residual
            .iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>()
            / interior
            / batch as f64)
    }

    pub fn default_solve_params(&self) -> SolveParams {
        let d = &self.card.defaults;
        SolveParams {
            steps: d.steps,
            learning_rate: d.learning_rate,
            lambda_infer: d.lambda_infer,
            seed: 0,
            start: d.start,
            optimizer: d.optimizer,
            noise_scale: d.noise_scale,
        }
    }

    /// The start `params` asks for, `Auto` resolved; the amortised start on an artifact without
    /// the amortised part is refused.
    fn start(&self, params: &SolveParams) -> Result<Start> {
        match (params.start, self.has_amortised()) {
            (Start::Auto, true) | (Start::Amortised, true) => Ok(Start::Amortised),
            (Start::Auto, false) | (Start::Random, _) => Ok(Start::Random),
            (Start::Amortised, false) => Err(err!(
                PIDDM_ERR_INVALID_ARGUMENT,
                "the amortised start was asked for, but {} has no amortised part (re-export it \
                 with an encoder, or use the random start)",
                self.path.display()
            )),
        }
    }

    /// The masked solve (forward, inverse, reconstruction): observations in physical units where
    /// `mask` is nonzero (other entries are ignored, NaN included); the answer x_mix goes to `out`.
    /// Starts where `params.start` says, then takes `params.steps` steps of `params.optimizer`.
    pub fn solve(
        &self,
        observed: &[f32],
        mask: &[u8],
        batch: usize,
        params: &SolveParams,
        out: &mut [f32],
    ) -> Result<SolveReport> {
        let noise = self.noise(params.seed, batch)?;
        let start = self.start(params)?;
        let o = self.observations(observed, mask, out.len(), batch, params)?;
        let eps = match start {
            Start::Amortised => {
                let z: Vec<f32> = noise
                    .iter()
                    .map(|&v| (f64::from(v) * params.noise_scale) as f32)
                    .collect();
                let eps = self.amortised_answer(&z, &o, batch, out)?;
                if params.steps == 0 {
                    self.determine(&o, out)?;
                    return self.report(start, Vec::new(), &o, batch, params, out);
                }
                eps
            }
            _ => noise,
        };
        let history = self.refine(eps, &o, batch, params, out)?;
        self.determine(&o, out)?;
        self.report(start, history, &o, batch, params, out)
    }

    /// K answers to each observation and what they say together: the pointwise mean into `mean`
    /// and the std (K - 1 in the denominator) times the card's spread scale into `std`. Answer k is
    /// [`Model::solve`]'s with seed `params.seed + k` and z drawn at the calibration's noise scale
    /// (the card's `spread`; 1 without one), whatever `params.noise_scale` says: the std scale was
    /// fitted at it. Each sample takes the scale of the calibrated task nearest to its mask (the
    /// share of each channel observed), 1 where the card has none; those scales are returned.
    #[allow(clippy::too_many_arguments)]
    pub fn solve_spread(
        &self,
        observed: &[f32],
        mask: &[u8],
        batch: usize,
        answers: usize,
        params: &SolveParams,
        mean: &mut [f32],
        std: &mut [f32],
    ) -> Result<Vec<f64>> {
        if !(2..=MAX_SPREAD_ANSWERS).contains(&answers) {
            return Err(err!(
                PIDDM_ERR_INVALID_ARGUMENT,
                "answers must be 2 to {MAX_SPREAD_ANSWERS}, got {answers}"
            ));
        }
        self.check_batch(batch)?;
        let c = self.shape[0];
        self.check_len("mean buffer", mean.len(), batch, c)?;
        self.check_len("std buffer", std.len(), batch, c)?;
        let spread = self.card.spread.as_ref();
        let p = SolveParams {
            noise_scale: spread.map_or(1.0, |s| s.noise_scale),
            ..*params
        };
        let field = self.field_len();
        let mut answer = zeros::<f32>(mean.len(), "an answer")?;
        // Welford's running mean and sum of squares, in f64
        let mut m = zeros::<f64>(mean.len(), "the running mean")?;
        let mut q = zeros::<f64>(mean.len(), "the running sum of squares")?;
        for k in 0..answers {
            let p = SolveParams {
                seed: p.seed.wrapping_add(k as u64),
                ..p
            };
            self.solve(observed, mask, batch, &p, &mut answer)?;
            let n = (k + 1) as f64;
            for ((mi, qi), &a) in m.iter_mut().zip(q.iter_mut()).zip(&answer) {
                let d = f64::from(a) - *mi;
                *mi += d / n;
                *qi += d * (f64::from(a) - *mi);
            }
        }
        let plane = self.plane();
        let scales: Vec<f64> = mask
            .chunks(field)
            .map(|sample| {
                let shares = card::observed_shares(sample, self.shape[0], plane);
                spread
                    .and_then(|s| s.task_for(&shares))
                    .map_or(1.0, |t| t.std_scale)
            })
            .collect();
        for (b, &scale) in scales.iter().enumerate() {
            let r = b * field..(b + 1) * field;
            for ((o, s), (mi, qi)) in mean[r.clone()]
                .iter_mut()
                .zip(&mut std[r.clone()])
                .zip(m[r.clone()].iter().zip(&q[r]))
            {
                *o = *mi as f32;
                *s = (scale * (qi / (answers - 1) as f64).sqrt()) as f32;
            }
        }
        Ok(scales)
    }

    /// As [`Model::solve`] with the random start, from a given initial eps.
    pub fn solve_from(
        &self,
        eps: Vec<f32>,
        observed: &[f32],
        mask: &[u8],
        batch: usize,
        params: &SolveParams,
        out: &mut [f32],
    ) -> Result<SolveReport> {
        let o = self.observations(observed, mask, out.len(), batch, params)?;
        self.check_len("eps", eps.len(), batch, self.shape[0])?;
        let history = self.refine(eps, &o, batch, params, out)?;
        self.determine(&o, out)?;
        self.report(Start::Random, history, &o, batch, params, out)
    }

    /// The answers in `out` with the scales the card's `determined` names fitted to the
    /// observations through the resolve graph ([`crate::determine`]), for each sample whose mask
    /// leaves them open; nothing where the card has none.
    fn determine(&self, o: &Observed, out: &mut [f32]) -> Result<()> {
        let (Some(d), Some(pool)) = (&self.card.determined, &self.resolve) else {
            return Ok(());
        };
        let (c, f) = (self.shape[0], self.field_len());
        crate::determine::fit(d, self.shape, out, &o.values, &o.mask, |x, n| {
            pool.used();
            let mut y = zeros::<f32>(x.len(), "the resolved fields")?;
            // a march is hundreds of small operators on a few fields: one single-threaded session
            // runs them faster than a batch split across the cores or a threaded session
            // (Burgers: 1.2 to 1.9 ms a call split, against 0.4 ms)
            pool.with(true, |s| {
                for r in self.chunks(0..n) {
                    let (dims, at) = (self.dims(r.len(), c), r.start * f..r.end * f);
                    let outs = s.run(ort::inputs![
                        io::X => TensorRef::from_array_view((dims, &x[at.clone()]))?,
                    ])?;
                    copy_out(&outs[io::X_RESOLVED], &mut y[at])?;
                }
                Ok(())
            })?;
            Ok(y)
        })?;
        Ok(())
    }

    /// Checks the solve's inputs, output length and parameters; the observations with unobserved
    /// entries zeroed and the mask as 0/1 floats.
    fn observations(
        &self,
        observed: &[f32],
        mask: &[u8],
        out_len: usize,
        batch: usize,
        params: &SolveParams,
    ) -> Result<Observed> {
        self.check_batch(batch)?;
        let c = self.shape[0];
        self.check_len("observations", observed.len(), batch, c)?;
        self.check_len("mask", mask.len(), batch, c)?;
        self.check_len("output buffer", out_len, batch, c)?;
        if params.steps as u64 > MAX_STEPS {
            return Err(err!(
                PIDDM_ERR_INVALID_ARGUMENT,
                "steps {} is more than the maximum {MAX_STEPS}",
                params.steps
            ));
        }
        if !(params.learning_rate.is_finite() && params.learning_rate > 0.0) {
            return Err(err!(
                PIDDM_ERR_INVALID_ARGUMENT,
                "learning rate must be finite and positive, got {}",
                params.learning_rate
            ));
        }
        if !(params.lambda_infer.is_finite() && params.lambda_infer >= 0.0) {
            return Err(err!(
                PIDDM_ERR_INVALID_ARGUMENT,
                "lambda_infer must be finite and >= 0, got {}",
                params.lambda_infer
            ));
        }
        if !(params.noise_scale.is_finite() && params.noise_scale >= 0.0) {
            return Err(err!(
                PIDDM_ERR_INVALID_ARGUMENT,
                "noise_scale must be finite and >= 0, got {}",
                params.noise_scale
            ));
        }
        let mut maskf = zeros::<f32>(mask.len(), "the mask")?;
        for (f, &m) in maskf.iter_mut().zip(mask) {
            *f = if m != 0 { 1.0 } else { 0.0 };
        }
        let mut values = zeros::<f32>(observed.len(), "the observations")?;
        for i in 0..values.len() {
            if mask[i] != 0 {
                if !observed[i].is_finite() {
                    return Err(err!(
                        PIDDM_ERR_NONFINITE,
                        "observation {i} is {} where the mask marks it observed",
                        observed[i]
                    ));
                }
                values[i] = observed[i];
            }
        }
        Ok(Observed {
            values,
            mask: maskf,
        })
    }

    /// The amortised encoder's eps for each observation (z = `noise`), and its answer into `out`.
    fn amortised_answer(
        &self,
        noise: &[f32],
        o: &Observed,
        batch: usize,
        out: &mut [f32],
    ) -> Result<Vec<f32>> {
        let pool = self.amortised.as_ref().expect("start() checked the part");
        let (c, f) = (self.shape[0], self.field_len());
        let mut eps = zeros::<f32>(noise.len(), "eps")?;
        pool.used();
        let done = self.over_batch(pool, batch, |s, r| {
            let (dims, at) = (self.dims(r.len(), c), r.start * f..r.end * f);
            let outs = s.run(ort::inputs![
                io::OBSERVED => TensorRef::from_array_view((dims, &o.values[at.clone()]))?,
                io::MASK => TensorRef::from_array_view((dims, &o.mask[at.clone()]))?,
                io::Z => TensorRef::from_array_view((dims, &noise[at.clone()]))?,
            ])?;
            let (mut e, mut x) = (vec![0f32; at.len()], vec![0f32; at.len()]);
            copy_out(&outs[io::EPS], &mut e)?;
            copy_out(&outs[io::X_MIX], &mut x)?;
            Ok((e, x))
        })?;
        for (r, (e, x)) in done {
            eps[r.start * f..r.end * f].copy_from_slice(&e);
            out[r.start * f..r.end * f].copy_from_slice(&x);
        }
        finite("the amortised encoder's eps", &eps)?;
        Ok(eps)
    }

    /// `params.steps` steps of `params.optimizer` on the refine graph's loss from `eps`; the
    /// answer at the points kept goes to `out`. Returns the loss history.
    fn refine(
        &self,
        eps: Vec<f32>,
        o: &Observed,
        batch: usize,
        params: &SolveParams,
        out: &mut [f32],
    ) -> Result<Vec<f64>> {
        let c = self.shape[0];
        let lambda = [params.lambda_infer as f32];
        let f = self.field_len();
        self.refine.used();
        let done = optim::minimise(
            params.optimizer,
            eps,
            f,
            params.steps,
            params.learning_rate,
            |x: &[f32]| -> Result<optim::Eval> {
                let mut e = optim::Eval {
                    loss: Vec::with_capacity(batch),
                    grad: zeros::<f32>(x.len(), "the gradient")?,
                    extra: zeros::<f32>(x.len(), "the answer")?,
                };
                let parts = self.over_batch(&self.refine, batch, |s, r| {
                    let (dims, at) = (self.dims(r.len(), c), r.start * f..r.end * f);
                    let outs = s.run(ort::inputs![
                        io::EPS => TensorRef::from_array_view((dims, &x[at.clone()]))?,
                        io::OBSERVED => TensorRef::from_array_view((dims, &o.values[at.clone()]))?,
                        io::MASK => TensorRef::from_array_view((dims, &o.mask[at.clone()]))?,
                        io::LAMBDA => TensorRef::from_array_view(([1usize], &lambda[..]))?,
                    ])?;
                    let (_, loss) = outs[io::LOSS].try_extract_tensor::<f32>()?;
                    let loss: Vec<f64> = loss.iter().map(|&l| l as f64).collect();
                    let (mut g, mut a) = (vec![0f32; at.len()], vec![0f32; at.len()]);
                    copy_out(&outs[io::GRAD], &mut g)?;
                    copy_out(&outs[io::X_MIX], &mut a)?;
                    Ok((loss, g, a))
                })?;
                for (r, (loss, g, a)) in parts {
                    e.loss.extend(loss);
                    e.grad[r.start * f..r.end * f].copy_from_slice(&g);
                    e.extra[r.start * f..r.end * f].copy_from_slice(&a);
                }
                Ok(e)
            },
        )?;
        if let Some(t) = done.history.iter().position(|l| !l.is_finite()) {
            return Err(err!(
                PIDDM_ERR_NONFINITE,
                "the solve diverged at step {t} (loss {}); lower the learning rate",
                done.history[t]
            ));
        }
        out.copy_from_slice(&done.extra);
        Ok(done.history)
    }

    /// The report of a solve whose answer is in `out`: misfit to the observations and residual.
    fn report(
        &self,
        start: Start,
        loss_history: Vec<f64>,
        o: &Observed,
        batch: usize,
        params: &SolveParams,
        out: &[f32],
    ) -> Result<SolveReport> {
        let mut r = zeros::<f32>(
            batch * self.residual_channels() * self.plane(),
            "the residual",
        )?;
        let residual = self.residual(out, batch, &mut r)?;
        let (mut se, mut cnt) = (0.0f64, 0usize);
        for ((&x, &v), &m) in out.iter().zip(&o.values).zip(&o.mask) {
            if m != 0.0 {
                se += ((x - v) as f64).powi(2);
                cnt += 1;
            }
        }
        let misfit = if cnt > 0 {
            (se / cnt as f64).sqrt()
        } else {
            0.0
        };
        Ok(SolveReport {
            steps: params.steps,
            start,
            loss_history,
            misfit,
            residual,
        })
    }
}

fn finite(what: &str, v: &[f32]) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(err!(PIDDM_ERR_NONFINITE, "{what}[{i}] is {}", v[i])),
        None => Ok(()),
    }
}

fn copy_out(v: &ort::value::DynValue, out: &mut [f32]) -> Result<()> {
    let (_, data) = v.try_extract_tensor::<f32>()?;
    if data.len() != out.len() {
        return Err(err!(
            PIDDM_ERR_FORMAT,
            "model returned {} values, expected {}",
            data.len(),
            out.len()
        ));
    }
    out.copy_from_slice(data);
    Ok(())
}
