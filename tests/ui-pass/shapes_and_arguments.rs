//! Inputs with shapes, an input written at a chain's start, and arguments of every kind.

use chainrule::prelude::*;

network! {
    /// A one-chain network on images: no statements needed.
    struct Images {
        input(1, 28, 28) -> leaky_relu(0.2) -> elu -> mse
    }
}

network! {
    /// Named arguments, in any order; defaults left out.
    struct Named {
        affine(out = 10, in = 4) -> leaky_relu -> affine(10, 3) -> elu(alpha = 0.5) -> softmax -> mse
    }
}

network! {
    /// Values of rank 3 merge, and concatenate along their channels.
    struct Channels: f64 {
        a = input(2, 4, 4);
        b = input(3, 4, 4);
        c = a -> tanh;
        d = add(a, c);
        concat(d, b) -> sigmoid -> mse
    }
}

network! {
    /// A named chain may start from an input written in it.
    struct Inline: f64 {
        x = input(4) -> relu;
        x -> affine(4, 2) -> mse
    }
}

fn main() {
    assert_eq!(<Images as Network>::INPUT, 784);
    assert_eq!(<Images as Network>::OUTPUT, 784);
    assert_eq!(<Channels as Network>::INPUT, 32 + 48);
    assert_eq!(<Channels as Network>::OUTPUT, 80);
    let _ = (Named::default(), Inline::default());
}
