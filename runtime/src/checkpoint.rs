//! Checkpoints: a network's parameters in the safetensors format, named after the layers
//! (`affine0.weight`, ...), so that Python's `safetensors` and numpy can read them, and the state
//! it keeps without training it ([`Network::for_each_buffer`]: `batchnorm0.running_mean`, ...).
//!
//! Saving is atomic: the file is written beside its destination under a temporary name
//! (`NAME.partial`, which the next save overwrites if a killed one left it), flushed, then renamed
//! over it, so a crash never leaves half a checkpoint. The same parameters give the same bytes.
//! The header's metadata records the format, the network's name and its structure
//! ([`Network::TOPOLOGY`]). Loading checks the structure and every name, shape and dtype before
//! it changes anything: a mismatch is an `Err` and the network keeps its parameters.

use std::fs;
use std::io::Write;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::element::Element;
use crate::error::{Error, Result};
use crate::network::Network;

fn dtype<T: Element>() -> Dtype {
    match T::NAME {
        "f32" => Dtype::F32,
        "f64" => Dtype::F64,
        other => unreachable!("Element is implemented for f32 and f64 only, not {other}"),
    }
}

fn io_error(path: &Path, action: &'static str, error: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        action,
        message: error.to_string(),
    }
}

fn bad(path: &Path, problem: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Writes `net`'s parameters to `path` as safetensors, atomically.
pub fn save<N: Network + ?Sized>(net: &N, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, shape: &[usize], values: &[N::Elem]| {
        let mut bytes = Vec::with_capacity(values.len() * N::Elem::BYTES);
        for &v in values {
            v.extend_le_bytes(&mut bytes);
        }
        tensors.push((name.to_owned(), shape.to_vec(), bytes));
    };
    net.for_each_param(&mut |p| add(p.name, p.shape, p.value));
    net.for_each_buffer(&mut |b| add(b.name, &[b.value.len()], b.value));
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(dtype::<N::Elem>(), shape.clone(), bytes)
                .map(|view| (name.as_str(), view))
                .map_err(|e| bad(path, format!("cannot describe {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, None)
        .map_err(|e| bad(path, format!("cannot encode: {e}")))?;
    let bytes = with_metadata(
        &bytes,
        &[
            ("format", "chainrule"),
            ("network", N::NAME),
            ("topology", N::TOPOLOGY),
        ],
    )
    .ok_or_else(|| bad(path, "cannot encode the header"))?;

    let file_name = path
        .file_name()
        .ok_or_else(|| bad(path, "the path names no file"))?;
    let mut temporary_name = file_name.to_owned();
    temporary_name.push(".partial");
    let temporary = path.with_file_name(temporary_name);
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&temporary);
        return Err(io_error(&temporary, "write", e));
    }
    fs::rename(&temporary, path).map_err(|e| {
        let _ = fs::remove_file(&temporary);
        io_error(path, "rename the finished checkpoint to", e)
    })
}

/// A safetensors file's bytes with `metadata` written into its header, in the order given.
/// (`safetensors::serialize` takes the metadata as a `HashMap`, whose order, and so the file's
/// bytes, would change from run to run.) `None` if `file` has no well-formed header.
fn with_metadata(file: &[u8], metadata: &[(&str, &str)]) -> Option<Vec<u8>> {
    let length = usize::try_from(u64::from_le_bytes(file.get(..8)?.try_into().ok()?)).ok()?;
    let header = std::str::from_utf8(file.get(8..8 + length)?)
        .ok()?
        .trim_end();
    let rest = header.strip_prefix('{')?;
    let entries: Vec<String> = metadata
        .iter()
        .map(|(key, value)| format!("{}:{}", json_string(key), json_string(value)))
        .collect();
    let separator = if rest.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    let mut header = format!(
        "{{\"__metadata__\":{{{}}}{separator}{rest}",
        entries.join(",")
    );
    // The data starts at a multiple of 8 bytes, as safetensors pads it.
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + file.len() - 8 - length);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&file[8 + length..]);
    Some(out)
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Reads parameters saved by [`save`] from `path` into `net`. Every parameter of `net` must be in
/// the file with the same shape and dtype, and the file must hold nothing else; otherwise `net` is
/// left unchanged and the error lists what differs.
pub fn load<N: Network + ?Sized>(net: &mut N, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|e| io_error(path, "read", e))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(path, format!("not a readable safetensors file: {e}")))?;

    let mut problems = Vec::new();
    let mut expected = Vec::new();
    net.for_each_param(&mut |p| expected.push((p.name, p.shape.to_vec())));
    net.for_each_buffer(&mut |b| expected.push((b.name, vec![b.value.len()])));
    for (name, shape) in &expected {
        match file.tensor(name) {
            Err(_) => problems.push(format!("{name} is missing")),
            Ok(tensor) => {
                if tensor.dtype() != dtype::<N::Elem>() {
                    problems.push(format!(
                        "{name} is {:?}, but {} computes in {}",
                        tensor.dtype(),
                        N::NAME,
                        N::Elem::NAME
                    ));
                } else if tensor.shape() != shape.as_slice() {
                    problems.push(format!(
                        "{name} has shape {:?}, but {} needs {shape:?}",
                        tensor.shape(),
                        N::NAME
                    ));
                }
            }
        }
    }
    let mut unexpected: Vec<&str> = file
        .names()
        .into_iter()
        .filter(|name| !expected.iter().any(|(known, _)| known == name))
        .collect();
    unexpected.sort_unstable();
    for name in unexpected {
        problems.push(format!("{name} is not a parameter of {}", N::NAME));
    }
    if !problems.is_empty() {
        return Err(bad(
            path,
            format!("it does not fit {}: {}", N::NAME, problems.join("; ")),
        ));
    }
    // Every parameter fits; the structure around them must be the same too.
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(path, format!("not a readable safetensors file: {e}")))?;
    let metadata = header.metadata();
    let recorded = |key: &str| {
        metadata
            .as_ref()
            .and_then(|m| m.get(key))
            .map(String::as_str)
    };
    if let Some(topology) = recorded("topology")
        && topology != N::TOPOLOGY
    {
        let saved_by = recorded("network").unwrap_or("a network");
        return Err(bad(
            path,
            format!(
                "it was saved by {saved_by}, whose structure is not {}'s: the file has \
                 `{topology}`, {} is `{}`",
                N::NAME,
                N::NAME,
                N::TOPOLOGY
            ),
        ));
    }

    let read = |name: &str, values: &mut [N::Elem]| {
        let data = file
            .tensor(name)
            .expect("checked above: every tensor is in the file")
            .data();
        for (v, chunk) in values.iter_mut().zip(data.chunks_exact(N::Elem::BYTES)) {
            *v = N::Elem::from_le_slice(chunk);
        }
    };
    net.for_each_param_mut(&mut |p| {
        read(p.name, p.value);
        p.grad.fill(<N::Elem as num_traits::Zero>::zero());
    });
    net.for_each_buffer_mut(&mut |b| read(b.name, b.value));
    Ok(())
}
