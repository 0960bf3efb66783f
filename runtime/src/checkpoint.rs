//! Checkpoints: a network's parameters in the safetensors format, named after the layers
//! (`affine0.weight`, ...), so that Python's `safetensors` and numpy can read them.
//!
//! Saving is atomic: the file is written beside its destination under a temporary name, flushed,
//! then renamed over it, so a crash never leaves half a checkpoint. Loading checks every name,
//! shape and dtype before it changes anything: a mismatch is an `Err` and the network keeps its
//! parameters.

use std::collections::HashMap;
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
    net.for_each_param(&mut |p| {
        let mut bytes = Vec::with_capacity(p.value.len() * N::Elem::BYTES);
        for &v in p.value {
            v.extend_le_bytes(&mut bytes);
        }
        tensors.push((p.name.to_owned(), p.shape.to_vec(), bytes));
    });
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(dtype::<N::Elem>(), shape.clone(), bytes)
                .map(|view| (name.as_str(), view))
                .map_err(|e| bad(path, format!("cannot describe {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([
        ("format".to_owned(), "chainrule".to_owned()),
        ("network".to_owned(), N::NAME.to_owned()),
    ]);
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| bad(path, format!("cannot encode: {e}")))?;

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

    net.for_each_param_mut(&mut |p| {
        let data = file
            .tensor(p.name)
            .expect("checked above: every parameter is in the file")
            .data();
        for (v, chunk) in p.value.iter_mut().zip(data.chunks_exact(N::Elem::BYTES)) {
            *v = N::Elem::from_le_slice(chunk);
        }
        p.grad.fill(<N::Elem as num_traits::Zero>::zero());
    });
    Ok(())
}
