//! The graph forms of `network!`: declared inputs, named values, merges, names used before their
//! definition, aliases, a graph on the implicit input, and graphs in the expression form.
use chainrule::{Network, Trainable, network};

network! {
    /// The residual network of the documentation.
    pub struct Residual: f64 {
        x = input(4);
        h = x -> affine(4, 6) -> relu;
        r = h -> affine(6, 6) -> relu -> affine(6, 6);
        add(h, r) -> affine(6, 2) -> softmax_cross_entropy
    }
}

network! {
    /// Names used before the statements that define them, an alias, and every merge.
    struct Backwards {
        out = concat(s, d, q, p) -> affine(8, 1);
        p = mul(a, b);
        q = div(a, b);
        d = sub(a, b);
        s = add(a, b);
        a = x -> affine(3, 2);
        b = y -> sigmoid;
        #[grad] x = input(3);
        y = input(2);
        result = out;
        result
    }
}

network! {
    /// A graph on the implicit input: chains that start with a layer read it.
    struct Implicit {
        h = affine(4, 6) -> relu;
        r = affine(4, 6) -> tanh;
        concat(h, r) -> affine(12, 3)
    }
}

network! {
    /// The network's output may be an input itself.
    struct Identity: f64 {
        #[grad] x = input(3);
        x
    }
}

macro_rules! gated {
    ($name:ident, $a:ident, $b:ident, $width:expr) => {
        network! {
            struct $name: f64 {
                $a = input($width);
                $b = input($width);
                mul($a, $b) -> mse
            }
        }
    };
}

gated!(Gated, left, right, 5);

fn main() {
    assert_eq!(Residual::INPUT, 4);
    assert_eq!(Residual::OUTPUT, 2);
    assert_eq!(Backwards::INPUT, 5);
    assert_eq!(Backwards::OUTPUT, 1);
    assert_eq!(Implicit::INPUT, 4);
    assert_eq!(Implicit::OUTPUT, 3);
    assert_eq!(Identity::PARAMS, 0);
    assert_eq!(Gated::INPUT, 10);
    let _ = Residual::default();
    let _ = Backwards::default();
    let _ = Implicit::default();
    let _ = Identity::default();
    let _ = Gated::default();
    fn trainable<N: Trainable>(_: &N) {}
    trainable(&Gated::default());
    let _expr = network!(f64: x = input(2); y = input(2); add(x, y) -> affine(2, 1) -> mse);
    let _plain = network!(a = input(3); a -> relu);
}
