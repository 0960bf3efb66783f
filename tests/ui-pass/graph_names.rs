//! Input names that could collide with generated field names, raw identifiers, doc comments on
//! statements.
use chainrule::prelude::*;

network! {
    struct Clash: f64 {
        #[grad] x = input(2);
        x_grad = input(2);
        x_in_grad = input(2);
        /// The sum of the first two.
        s = add(x, x_grad);
        add(s, x_in_grad) -> affine(2, 1)
    }
}

network! {
    struct Raw {
        #[grad] r#type = input(2);
        r#type -> affine(2, 1)
    }
}

fn main() {
    assert_eq!(Clash::INPUT, 6);
    assert_eq!(Raw::INPUT, 2);
    let mut raw = Raw::default();
    raw.forward(chainrule::ndarray::Array2::ones((1, 2)).view()).unwrap();
    raw.backward_from(chainrule::ndarray::Array2::ones((1, 1)).view()).unwrap();
    assert!(raw.input_grad("type").is_ok());
}
