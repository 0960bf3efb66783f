use chainrule::network;

network! {
    struct Net {
        affine(784, 10) -> convolution -> mse
    }
}

fn main() {}
