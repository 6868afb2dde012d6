//! The canonical encoding of an ONNX model, and the digests the model card records over it.
//!
//! Protobuf lets one message be written many ways: fields in any order, repeated numbers packed or
//! one by one. The reference serialisers, and so the `onnx` package's `onnx.save`, write every
//! message's fields in field-number order and pack repeated numbers only where `onnx.proto`
//! declares `[packed = true]`. [`canonical_model`] rewrites a serialised model that way (the
//! exporter writes its files through it, so `onnx.save(onnx.load(f))` gives back the same bytes),
//! and [`graph_digests`] hashes the canonical form of a graph, so that an encoding-only change
//! cannot alter the digest while any change to a weight, an operator, an attribute or the wiring
//! does. For a file written canonically the graph digest is the sha256 of its graph bytes.
//!
//! The rewriting works on the wire format with the schema below (which fields of which message
//! are messages, which are repeated numbers and how they are packed); every other field is kept as
//! it is, after its tag is written minimally.

use crate::artifact::{Field, Reader};
use sha2::{Digest, Sha256};

/// The ONNX messages with fields that need more than copying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Msg {
    Model,
    Graph,
    Node,
    Attribute,
    ValueInfo,
    Type,
    TypeTensor,
    TypeSequence,
    TypeMap,
    TypeOptional,
    TypeSparse,
    TensorShape,
    Tensor,
    SparseTensor,
    TrainingInfo,
    Function,
    TensorAnnotation,
    /// A message with no such fields (StringStringEntryProto, OperatorSetIdProto, Dimension, ...).
    Plain,
}

/// How a repeated number is encoded on the wire, element by element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Num {
    Varint,
    Fixed32,
    Fixed64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Message(Msg),
    /// Repeated numbers, packed when `onnx.proto` declares it.
    Numbers {
        element: Num,
        packed: bool,
    },
    Copy,
}

/// The schema of `onnx.proto` (the fields that are messages or repeated numbers).
fn kind(msg: Msg, number: u64) -> Kind {
    use Kind::Message as M;
    use Msg::*;
    let numbers = |element, packed| Kind::Numbers { element, packed };
    match (msg, number) {
        (Model, 7) => M(Graph),
        (Model, 8) => M(Plain),
        (Model, 14) => M(Plain),
        (Model, 20) => M(TrainingInfo),
        (Model, 25) => M(Function),
        (Graph, 1) => M(Node),
        (Graph, 5) => M(Tensor),
        (Graph, 15) => M(SparseTensor),
        (Graph, 11..=13) => M(ValueInfo),
        (Graph, 14) => M(TensorAnnotation),
        (Graph, 16) => M(Plain),
        (Node, 5) => M(Attribute),
        (Node, 9) => M(Plain),
        (Attribute, 5 | 10) => M(Tensor),
        (Attribute, 6 | 11) => M(Graph),
        (Attribute, 22 | 23) => M(SparseTensor),
        (Attribute, 14 | 15) => M(Type),
        (Attribute, 7) => numbers(Num::Fixed32, false),
        (Attribute, 8) => numbers(Num::Varint, false),
        (ValueInfo, 2) => M(Type),
        (ValueInfo, 4) => M(Plain),
        (Type, 1) => M(TypeTensor),
        (Type, 4) => M(TypeSequence),
        (Type, 5) => M(TypeMap),
        (Type, 9) => M(TypeOptional),
        (Type, 8) => M(TypeSparse),
        (TypeTensor | TypeSparse, 2) => M(TensorShape),
        (TypeSequence | TypeOptional, 1) => M(Type),
        (TypeMap, 2) => M(Type),
        (TensorShape, 1) => M(Plain),
        (Tensor, 1) => numbers(Num::Varint, false),
        (Tensor, 3) => M(Plain),
        (Tensor, 4) => numbers(Num::Fixed32, true),
        (Tensor, 5 | 7 | 11) => numbers(Num::Varint, true),
        (Tensor, 10) => numbers(Num::Fixed64, true),
        (Tensor, 13 | 16) => M(Plain),
        (SparseTensor, 1 | 2) => M(Tensor),
        (SparseTensor, 3) => numbers(Num::Varint, false),
        (TrainingInfo, 1 | 2) => M(Graph),
        (TrainingInfo, 3 | 4) => M(Plain),
        (Function, 7) => M(Node),
        (Function, 9 | 14) => M(Plain),
        (Function, 11) => M(Attribute),
        (Function, 12) => M(ValueInfo),
        (TensorAnnotation, 2) => M(Plain),
        _ => Kind::Copy,
    }
}

/// TensorProto fields holding values (float, int32, string, int64, raw, double, uint64 data):
/// what the structure digest leaves out of initializers.
const TENSOR_VALUES: [u64; 7] = [4, 5, 6, 7, 9, 10, 11];

pub(crate) fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(number: u64, wire: u64, out: &mut Vec<u8>) {
    varint((number << 3) | wire, out);
}

fn delimited(number: u64, body: &[u8], out: &mut Vec<u8>) {
    tag(number, 2, out);
    varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// Elements of one repeated number, each as its encoded bytes (a varint, or 4 or 8 bytes).
fn elements<'a>(field: &Field<'a>, element: Num, out: &mut Vec<Vec<u8>>) -> Result<(), String> {
    let width = |n: Num| match n {
        Num::Fixed32 => 4,
        Num::Fixed64 => 8,
        Num::Varint => 0,
    };
    match (field, element) {
        (Field::Varint(v), Num::Varint) => {
            let mut b = Vec::new();
            varint(*v, &mut b);
            out.push(b);
        }
        (Field::Fixed(b), n) if b.len() == width(n) => out.push(b.to_vec()),
        (Field::Bytes(packed), Num::Varint) => {
            let mut r = Reader::new(packed);
            while !r.at_end() {
                let mut b = Vec::new();
                varint(r.varint()?, &mut b);
                out.push(b);
            }
        }
        (Field::Bytes(packed), n) => {
            let w = width(n);
            if packed.len() % w != 0 {
                return Err(format!("packed {w}-byte numbers in {} bytes", packed.len()));
            }
            out.extend(packed.chunks(w).map(<[u8]>::to_vec));
        }
        _ => return Err("a repeated number has the wrong wire type".into()),
    }
    Ok(())
}

/// The canonical bytes of a message of type `msg`. With `strip`, initializers (TensorProto fields
/// of a graph's field 5) lose their values.
fn canonical(msg: Msg, bytes: &[u8], strip: bool, depth: usize) -> Result<Vec<u8>, String> {
    if depth > 64 {
        return Err("messages nested more than 64 deep".into());
    }
    // (field number, its canonical bytes), in file order; repeated numbers gathered per field
    let mut parts: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut numbers: Vec<(u64, Num, bool, Vec<Vec<u8>>)> = Vec::new();
    let mut r = Reader::new(bytes);
    while let Some((number, field)) = r.field()? {
        match (kind(msg, number), &field) {
            (Kind::Message(sub), Field::Bytes(b)) => {
                let body = if strip && msg == Msg::Graph && number == 5 {
                    canonical(Msg::Tensor, &drop_values(b)?, strip, depth + 1)?
                } else {
                    canonical(sub, b, strip, depth + 1)?
                };
                let mut out = Vec::new();
                delimited(number, &body, &mut out);
                parts.push((number, out));
            }
            (Kind::Message(_), _) => {
                return Err(format!("field {number} should hold a message"));
            }
            (Kind::Numbers { element, packed }, f) => {
                let slot = match numbers.iter().position(|n| n.0 == number) {
                    Some(i) => i,
                    None => {
                        numbers.push((number, element, packed, Vec::new()));
                        parts.push((number, Vec::new())); // placeholder, filled below
                        numbers.len() - 1
                    }
                };
                elements(f, element, &mut numbers[slot].3)?;
            }
            (Kind::Copy, f) => {
                let mut out = Vec::new();
                match f {
                    Field::Varint(v) => {
                        tag(number, 0, &mut out);
                        varint(*v, &mut out);
                    }
                    Field::Fixed(b) => {
                        tag(number, if b.len() == 8 { 1 } else { 5 }, &mut out);
                        out.extend_from_slice(b);
                    }
                    Field::Bytes(b) => delimited(number, b, &mut out),
                }
                parts.push((number, out));
            }
        }
    }
    for (number, element, packed, elems) in numbers {
        let mut out = Vec::new();
        if packed {
            if !elems.is_empty() {
                delimited(number, &elems.concat(), &mut out);
            }
        } else {
            let wire = match element {
                Num::Varint => 0,
                Num::Fixed64 => 1,
                Num::Fixed32 => 5,
            };
            for e in &elems {
                tag(number, wire, &mut out);
                out.extend_from_slice(e);
            }
        }
        let slot = parts
            .iter_mut()
            .find(|p| p.0 == number && p.1.is_empty())
            .expect("a placeholder per repeated number");
        slot.1 = out;
    }
    // stable: repeated fields keep their order
    parts.sort_by_key(|p| p.0);
    Ok(parts.into_iter().flat_map(|p| p.1).collect())
}

/// A TensorProto without its values.
fn drop_values(tensor: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut r = Reader::new(tensor);
    let start = |r: &Reader| r.position();
    loop {
        let at = start(&r);
        let Some((number, _)) = r.field()? else {
            break;
        };
        if !TENSOR_VALUES.contains(&number) {
            out.extend_from_slice(&tensor[at..r.position()]);
        }
    }
    Ok(out)
}

/// A serialised ModelProto rewritten canonically.
pub fn canonical_model(model: &[u8]) -> Result<Vec<u8>, String> {
    canonical(Msg::Model, model, false, 0)
}

/// The digests of a graph the model card records: of the whole graph, and of its structure alone
/// (the initializers' values left out: names, shapes, operators, attributes, wiring).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    pub graph: String,
    pub structure: String,
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The digests of the serialised GraphProto `graph`, over its canonical encoding.
pub fn graph_digests(graph: &[u8]) -> Result<Digests, String> {
    Ok(Digests {
        graph: hex(Sha256::digest(canonical(Msg::Graph, graph, false, 0)?)),
        structure: hex(Sha256::digest(canonical(Msg::Graph, graph, true, 0)?)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        delimited(number, body, &mut out);
        out
    }

    fn int(number: u64, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        tag(number, 0, &mut out);
        varint(v, &mut out);
        out
    }

    /// A TensorProto: name (8), data_type (2), dims (1), raw_data (9); `packed_dims` as proto3
    /// writers put them.
    fn tensor(packed_dims: bool, raw: &[u8]) -> Vec<u8> {
        let mut t = field(8, b"w");
        t.extend(int(2, 1));
        if packed_dims {
            t.extend(field(1, &[1, 1, 3, 3]));
        } else {
            for d in [1, 1, 3, 3] {
                t.extend(int(1, d));
            }
        }
        t.extend(field(9, raw));
        t
    }

    /// A GraphProto with a node (1) carrying an int attribute (5: name 1, ints 8), an
    /// initializer (5) and a name (2), in the order a proto3 writer would use.
    fn graph(packed: bool, raw: &[u8], pad: u64) -> Vec<u8> {
        let mut attr = field(1, b"pads");
        if packed {
            attr.extend(field(8, &[pad as u8, 1]));
        } else {
            attr.extend(int(8, pad));
            attr.extend(int(8, 1));
        }
        let mut node = field(4, b"Conv");
        node.extend(field(5, &attr));
        let mut g = field(2, b"g");
        g.extend(field(5, &tensor(packed, raw)));
        g.extend(field(1, &node));
        g
    }

    #[test]
    fn canonical_order_and_packing() {
        let t = canonical(Msg::Tensor, &tensor(true, &[0; 4]), false, 0).unwrap();
        // dims = 1 one by one (not declared packed), then data_type = 2, raw_data = 9, name = 8
        let mut want: Vec<u8> = [1, 1, 3, 3].iter().flat_map(|&d| int(1, d)).collect();
        want.extend(int(2, 1));
        want.extend(field(8, b"w"));
        want.extend(field(9, &[0; 4]));
        assert_eq!(t, want);
        // float_data (4) is declared packed: one by one in, packed out
        let mut f = Vec::new();
        for x in [1.0f32, 2.0] {
            tag(4, 5, &mut f);
            f.extend(x.to_le_bytes());
        }
        let c = canonical(Msg::Tensor, &f, false, 0).unwrap();
        let mut want = Vec::new();
        delimited(
            4,
            &[1.0f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat(),
            &mut want,
        );
        assert_eq!(c, want);
        // canonical bytes are a fixed point
        assert_eq!(canonical(Msg::Tensor, &t, false, 0).unwrap(), t);
        // a negative int64 stays ten bytes
        let neg = int(8, -1i64 as u64);
        let c = canonical(Msg::Attribute, &neg, false, 0).unwrap();
        assert_eq!(c.len(), 11);
    }

    /// Two encodings of one graph have one digest; a changed weight changes the graph's digest
    /// only, a changed attribute both; garbage is an error.
    #[test]
    fn digests_ignore_encoding_and_tell_weights_from_structure() {
        let d = graph_digests(&graph(true, &[1, 2, 3, 4], 0)).unwrap();
        assert_eq!(graph_digests(&graph(false, &[1, 2, 3, 4], 0)).unwrap(), d);
        let w = graph_digests(&graph(true, &[1, 2, 3, 5], 0)).unwrap();
        assert!(w.graph != d.graph && w.structure == d.structure);
        let a = graph_digests(&graph(true, &[1, 2, 3, 4], 2)).unwrap();
        assert!(a.graph != d.graph && a.structure != d.structure);
        let canonical_graph =
            canonical(Msg::Graph, &graph(true, &[1, 2, 3, 4], 0), false, 0).unwrap();
        assert_eq!(d.graph, hex(Sha256::digest(&canonical_graph)));
        assert!(graph_digests(b"\xff\xff").is_err());
        // a node field (1) that is not a message
        assert!(graph_digests(&int(1, 3)).is_err());
    }
}
