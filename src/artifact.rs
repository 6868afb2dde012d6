//! Reading a model file before ONNX Runtime sees it: the file itself (a regular file, size-capped),
//! the top level of its ONNX `ModelProto` (the graph's bytes and the metadata entries), and the
//! digest of the graph that the model card records. Everything here treats the bytes as hostile:
//! every length is checked against what remains, and nothing is allocated from a declared size.

use crate::error::{err, Result};
use crate::limits::MAX_FILE_BYTES;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Reads a model file: regular files only (a FIFO, a device or a directory is refused without
/// blocking on it), at most [`MAX_FILE_BYTES`].
pub fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    let io_err =
        |e: std::io::Error| err!(PIDDM_ERR_IO, "cannot read {what} {}: {e}", path.display());
    let kind_err = |m: &std::fs::Metadata| {
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "a directory"
        } else if is_fifo(&ft) {
            "a FIFO"
        } else if is_device(&ft) {
            "a device"
        } else {
            "not a regular file"
        };
        err!(
            PIDDM_ERR_IO,
            "cannot read {what} {}: it is {kind}; a model is a regular file",
            path.display()
        )
    };
    // stat first, so that opening never blocks on a FIFO; the opened file is checked again below.
    let m = std::fs::metadata(path).map_err(io_err)?;
    if !m.is_file() {
        return Err(kind_err(&m));
    }
    let f = open_nonblocking(path).map_err(io_err)?;
    let m = f.metadata().map_err(io_err)?;
    if !m.is_file() {
        return Err(kind_err(&m));
    }
    if m.len() > MAX_FILE_BYTES {
        return Err(err!(
            PIDDM_ERR_SIZE,
            "{what} {} is {} bytes, more than the {MAX_FILE_BYTES} a model file may have",
            path.display(),
            m.len()
        ));
    }
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(m.len() as usize).map_err(|_| {
        err!(
            PIDDM_ERR_SIZE,
            "cannot allocate {} bytes for {what} {}",
            m.len(),
            path.display()
        )
    })?;
    // The cap holds even if the file grows while it is read.
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(err!(
            PIDDM_ERR_SIZE,
            "{what} {} grew past {MAX_FILE_BYTES} bytes while it was read",
            path.display()
        ));
    }
    Ok(bytes)
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}
#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}

#[cfg(unix)]
fn is_fifo(ft: &std::fs::FileType) -> bool {
    use std::os::unix::fs::FileTypeExt;
    ft.is_fifo()
}
#[cfg(unix)]
fn is_device(ft: &std::fs::FileType) -> bool {
    use std::os::unix::fs::FileTypeExt;
    ft.is_char_device() || ft.is_block_device()
}
#[cfg(not(unix))]
fn is_fifo(_: &std::fs::FileType) -> bool {
    false
}
#[cfg(not(unix))]
fn is_device(_: &std::fs::FileType) -> bool {
    false
}

/// Field numbers of ONNX's `ModelProto` and `StringStringEntryProto` (onnx.proto3).
const MODEL_GRAPH: u64 = 7;
const MODEL_METADATA_PROPS: u64 = 14;
const ENTRY_KEY: u64 = 1;
const ENTRY_VALUE: u64 = 2;

/// The top level of an ONNX model file.
#[derive(Debug, Default)]
pub struct Scanned<'a> {
    /// The serialised `GraphProto`, exactly as stored.
    pub graph: Option<&'a [u8]>,
    /// `metadata_props` entries in file order.
    pub metadata: Vec<(&'a str, &'a str)>,
}

impl<'a> Scanned<'a> {
    /// The value of metadata `key`; a key given twice is an error (readers would disagree on it).
    pub fn metadata(&self, key: &str) -> std::result::Result<Option<&'a str>, String> {
        let mut it = self.metadata.iter().filter(|(k, _)| *k == key);
        let first = it.next().map(|(_, v)| *v);
        if it.next().is_some() {
            return Err(format!("metadata key '{key}' appears more than once"));
        }
        Ok(first)
    }
}

/// One protobuf field's payload.
pub(crate) enum Field<'a> {
    Varint(u64),
    /// 4 or 8 bytes.
    Fixed(&'a [u8]),
    Bytes(&'a [u8]),
}

/// Reads protobuf fields one by one, checking every length against what remains.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| format!("truncated varint at byte {}", self.pos))?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(format!("varint overflows 64 bits at byte {}", self.pos));
            }
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    fn take(&mut self, n: u64) -> std::result::Result<&'a [u8], String> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(format!(
                "truncated: a field at byte {} declares {n} bytes, {left} remain",
                self.pos
            ));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// The next (field number, payload), or None at the end.
    pub(crate) fn field(&mut self) -> std::result::Result<Option<(u64, Field<'a>)>, String> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let at = self.pos;
        let tag = self.varint()?;
        let (number, wire) = (tag >> 3, tag & 7);
        if number == 0 {
            return Err(format!("field number 0 at byte {at}"));
        }
        let f = match wire {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed(self.take(8)?),
            2 => {
                let n = self.varint()?;
                Field::Bytes(self.take(n)?)
            }
            5 => Field::Fixed(self.take(4)?),
            w => return Err(format!("unsupported protobuf wire type {w} at byte {at}")),
        };
        Ok(Some((number, f)))
    }
}

fn utf8<'a>(b: &'a [u8], what: &str) -> std::result::Result<&'a str, String> {
    std::str::from_utf8(b).map_err(|_| format!("{what} is not UTF-8"))
}

/// Reads the top level of a serialised `ModelProto`. Fields other than the graph and the metadata
/// are skipped (ONNX Runtime parses them); a second graph field is refused, since protobuf would
/// merge it into the first and the digest would no longer cover what runs.
pub fn scan(bytes: &[u8]) -> std::result::Result<Scanned<'_>, String> {
    let mut r = Reader::new(bytes);
    let mut out = Scanned::default();
    while let Some((number, field)) = r.field()? {
        match (number, field) {
            (MODEL_GRAPH, Field::Bytes(_)) if out.graph.is_some() => {
                return Err("the model holds more than one graph field".into());
            }
            (MODEL_GRAPH, Field::Bytes(g)) => out.graph = Some(g),
            (MODEL_METADATA_PROPS, Field::Bytes(e)) => {
                let mut er = Reader::new(e);
                let (mut key, mut value) = ("", "");
                while let Some((n, f)) = er.field()? {
                    match (n, f) {
                        (ENTRY_KEY, Field::Bytes(k)) => key = utf8(k, "a metadata key")?,
                        (ENTRY_VALUE, Field::Bytes(v)) => value = utf8(v, "a metadata value")?,
                        (ENTRY_KEY | ENTRY_VALUE, _) => {
                            return Err("a metadata entry has a field of the wrong type".into())
                        }
                        _ => {}
                    }
                }
                out.metadata.push((key, value));
            }
            (MODEL_GRAPH | MODEL_METADATA_PROPS, _) => {
                return Err(format!(
                    "field {number} of the model has the wrong wire type"
                ))
            }
            _ => {}
        }
    }
    Ok(out)
}

/// ONNX's element type number of float32 (`TensorProto.DataType.FLOAT`).
pub(crate) const ELEM_FLOAT: u64 = 1;

/// An input or output a graph declares: its name, element type (None: not a tensor) and
/// dimensions (None where not a fixed number, such as a named batch dimension).
#[derive(Debug, PartialEq)]
pub struct Port {
    pub name: String,
    pub elem_type: Option<u64>,
    pub dims: Vec<Option<i64>>,
}

/// Fields `number` (length-delimited) of the message `bytes`, in order.
fn messages(bytes: &[u8], number: u64) -> std::result::Result<Vec<&[u8]>, String> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while let Some((n, f)) = r.field()? {
        if n == number {
            match f {
                Field::Bytes(b) => out.push(b),
                _ => return Err(format!("field {number} has the wrong wire type")),
            }
        }
    }
    Ok(out)
}

fn port(value_info: &[u8]) -> std::result::Result<Port, String> {
    let name = messages(value_info, 1)?
        .last()
        .map(|b| utf8(b, "a value's name").map(str::to_string))
        .transpose()?
        .unwrap_or_default();
    let mut p = Port {
        name,
        elem_type: None,
        dims: Vec::new(),
    };
    // ValueInfoProto.type (2) -> TypeProto.tensor_type (1) -> elem_type (1), shape (2) -> dim (1)
    let Some(tensor) = messages(value_info, 2)?
        .last()
        .map(|t| messages(t, 1))
        .transpose()?
        .and_then(|v| v.last().copied())
    else {
        return Ok(p);
    };
    let mut r = Reader::new(tensor);
    p.elem_type = Some(0);
    while let Some((n, f)) = r.field()? {
        match (n, f) {
            (1, Field::Varint(t)) => p.elem_type = Some(t),
            (2, Field::Bytes(shape)) => {
                p.dims.clear();
                for dim in messages(shape, 1)? {
                    let mut d = Reader::new(dim);
                    let mut value = None;
                    while let Some((k, f)) = d.field()? {
                        if let (1, Field::Varint(v)) = (k, f) {
                            value = Some(v as i64);
                        } else if k == 2 {
                            value = None;
                        }
                    }
                    p.dims.push(value);
                }
            }
            _ => {}
        }
    }
    Ok(p)
}

/// The inputs and outputs a serialised `GraphProto` declares (fields 11 and 12).
pub fn graph_ports(graph: &[u8]) -> std::result::Result<(Vec<Port>, Vec<Port>), String> {
    let read = |n| -> std::result::Result<Vec<Port>, String> {
        messages(graph, n)?.into_iter().map(port).collect()
    };
    Ok((read(11)?, read(12)?))
}

/// sha256 (lower-case hex) of a serialised graph: what the model card's `graph_sha256` records.
pub fn graph_sha256(graph: &[u8]) -> String {
    Sha256::digest(graph)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The digest of the graph inside a serialised model (for writers, which hash what they wrote).
pub fn model_graph_sha256(model: &[u8]) -> std::result::Result<String, String> {
    let s = scan(model)?;
    let g = s.graph.ok_or("the model has no graph")?;
    Ok(graph_sha256(g))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn bytes_field(n: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(n << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    #[test]
    fn scans_graph_and_metadata_and_skips_the_rest() {
        let mut entry = Vec::new();
        bytes_field(1, b"k", &mut entry);
        bytes_field(2, b"v", &mut entry);
        let mut m = Vec::new();
        varint(1 << 3, &mut m); // ir_version
        varint(8, &mut m);
        bytes_field(2, b"producer", &mut m);
        bytes_field(7, b"GRAPH", &mut m);
        varint(9 << 3 | 5, &mut m); // a fixed32 field
        m.extend_from_slice(&[1, 2, 3, 4]);
        bytes_field(14, &entry, &mut m);
        let s = scan(&m).unwrap();
        assert_eq!(s.graph, Some(&b"GRAPH"[..]));
        assert_eq!(s.metadata("k").unwrap(), Some("v"));
        assert_eq!(
            graph_sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // every strict prefix that cuts a field is refused, never read past the end
        for cut in 1..m.len() {
            let r = scan(&m[..cut]);
            if let Ok(s) = r {
                assert!(s.graph.is_none() || s.metadata.is_empty(), "cut {cut}");
            }
        }
        // a second graph, a group wire type, an overlong varint
        let mut two = m.clone();
        bytes_field(7, b"OTHER", &mut two);
        assert!(scan(&two).unwrap_err().contains("more than one graph"));
        assert!(scan(&[7 << 3 | 3]).unwrap_err().contains("wire type 3"));
        assert!(scan(&[0x80; 11]).is_err());
        let mut dup = m.clone();
        bytes_field(14, &entry, &mut dup);
        assert!(scan(&dup).unwrap().metadata("k").is_err());
    }
}
