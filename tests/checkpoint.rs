//! Checkpoints: save, load, identical predictions; and every way a load can fail, leaving the
//! network as it was.

use chainrule::checkpoint;
use chainrule::ndarray::Array2;
use chainrule::prelude::*;

network! {
    struct Book { affine(6, 5) -> relu -> affine(5, 3) -> softmax_cross_entropy }
}
network! {
    struct Wider { affine(6, 7) -> relu -> affine(7, 3) -> softmax_cross_entropy }
}
network! {
    struct Deeper { affine(6, 5) -> relu -> affine(5, 5) -> relu -> affine(5, 3) -> softmax_cross_entropy }
}
network! {
    struct Book64: f64 { affine(6, 5) -> relu -> affine(5, 3) -> softmax_cross_entropy }
}

fn batch() -> Array2<f32> {
    Array2::from_shape_fn((8, 6), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 5.0 - 1.0)
}

fn outputs<N: Network<Elem = f32>>(net: &mut N) -> Array2<f32> {
    net.forward(batch().view()).unwrap().to_owned()
}

#[test]
fn round_trip_gives_identical_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("book.safetensors");
    let mut saved = Book::new(Init::He, 1);
    checkpoint::save(&saved, &path).unwrap();
    assert!(
        !dir.path().join("book.safetensors.partial").exists(),
        "the temporary file is renamed away"
    );

    let mut loaded = Book::new(Init::He, 2);
    assert_ne!(outputs(&mut saved), outputs(&mut loaded));
    checkpoint::load(&mut loaded, &path).unwrap();
    assert_eq!(outputs(&mut saved), outputs(&mut loaded));
    for name in Book::PARAM_NAMES {
        assert_eq!(
            saved.param(name).unwrap().value,
            loaded.param(name).unwrap().value
        );
    }
}

#[test]
fn the_file_is_plain_safetensors_named_after_the_layers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("book.safetensors");
    let net = Book::new(Init::He, 1);
    checkpoint::save(&net, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    // 8 bytes of header length, then a JSON header naming each tensor with its dtype and shape.
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    assert!(
        header.contains(r#""affine0.weight":{"dtype":"F32","shape":[6,5]"#),
        "{header}"
    );
    assert!(
        header.contains(r#""affine1.bias":{"dtype":"F32","shape":[3]"#),
        "{header}"
    );
    assert!(header.contains(r#""network":"Book""#), "{header}");
    assert_eq!(bytes.len(), 8 + header_len + 4 * Book::PARAMS);
}

/// Loads `path` into a fresh `N`, expects an error containing each of `needles`, and checks the
/// network kept its parameters.
fn load_fails<N: Network<Elem = T> + Default, T: chainrule::Element>(
    path: &std::path::Path,
    needles: &[&str],
) {
    let mut net = N::default();
    let before: Vec<Vec<T>> = {
        let mut v = Vec::new();
        net.for_each_param(&mut |p| v.push(p.value.to_vec()));
        v
    };
    let message = checkpoint::load(&mut net, path).unwrap_err().to_string();
    for needle in needles {
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    let mut after = Vec::new();
    net.for_each_param(&mut |p| after.push(p.value.to_vec()));
    assert_eq!(before, after, "a failed load changed the network");
}

#[test]
fn load_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("book.safetensors");
    checkpoint::save(&Book::new(Init::He, 1), &book).unwrap();

    let missing = dir.path().join("nowhere.safetensors");
    load_fails::<Book, f32>(&missing, &["cannot read", "nowhere.safetensors"]);

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a checkpoint").unwrap();
    load_fails::<Book, f32>(
        &garbage,
        &["garbage.safetensors", "not a readable safetensors file"],
    );

    let truncated = dir.path().join("truncated.safetensors");
    let bytes = std::fs::read(&book).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    load_fails::<Book, f32>(&truncated, &["truncated.safetensors", "not a readable"]);

    load_fails::<Wider, f32>(
        &book,
        &[
            "affine0.weight has shape [6, 5], but Wider needs [6, 7]",
            "affine0.bias has shape [5], but Wider needs [7]",
        ],
    );
    load_fails::<Deeper, f32>(
        &book,
        &[
            "affine2.weight is missing",
            "affine1.weight has shape [5, 3], but Deeper needs [5, 5]",
        ],
    );
    load_fails::<Book64, f64>(
        &book,
        &["affine0.weight is F32, but Book64 computes in f64"],
    );

    let deeper = dir.path().join("deeper.safetensors");
    checkpoint::save(&Deeper::new(Init::He, 1), &deeper).unwrap();
    load_fails::<Book, f32>(
        &deeper,
        &[
            "affine2.bias is not a parameter of Book",
            "affine2.weight is not a parameter of Book",
        ],
    );
}

#[test]
fn save_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/book.safetensors");
    let message = checkpoint::save(&Book::default(), &path)
        .unwrap_err()
        .to_string();
    assert!(message.starts_with("cannot write"), "{message}");
    assert!(message.contains("no/such/dir"), "{message}");
}

network! {
    /// `Book`'s shapes, with another activation: a different network.
    struct BookSigmoid { affine(6, 5) -> sigmoid -> affine(5, 3) -> softmax_cross_entropy }
}

#[test]
fn a_file_from_a_network_of_other_structure_does_not_load_even_where_shapes_fit() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("book.safetensors");
    checkpoint::save(&Book::new(Init::He, 1), &book).unwrap();
    load_fails::<BookSigmoid, f32>(
        &book,
        &[
            "book.safetensors",
            "saved by Book",
            "not BookSigmoid's",
            "relu(v1)",
            "sigmoid(v1)",
        ],
    );
    // The same structure under another name loads.
    network! {
        struct Renamed { affine(in = 6, out = 5) -> relu -> affine(5, 3) -> softmax_cross_entropy }
    }
    assert_eq!(Renamed::TOPOLOGY, Book::TOPOLOGY);
    checkpoint::load(&mut Renamed::default(), &book).unwrap();
}

#[test]
fn the_same_parameters_give_the_same_bytes_and_a_stale_partial_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let net = Book::new(Init::He, 1);
    let (first, second) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    // A save killed before its rename left a partial file behind.
    let partial = dir.path().join("b.safetensors.partial");
    std::fs::write(&partial, b"half a checkpoint").unwrap();
    checkpoint::save(&net, &first).unwrap();
    checkpoint::save(&net, &second).unwrap();
    assert!(!partial.exists(), "the stale partial file is gone");
    let bytes = std::fs::read(&first).unwrap();
    assert_eq!(bytes, std::fs::read(&second).unwrap());
    // The metadata in a fixed order, first in the header.
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    let expected = format!(
        r#"{{"__metadata__":{{"format":"chainrule","network":"Book","topology":"{}"}},"#,
        Book::TOPOLOGY
    );
    assert!(header.starts_with(&expected), "{header}");
    assert_eq!(header_len % 8, 0, "the data starts 8-byte aligned");
}
