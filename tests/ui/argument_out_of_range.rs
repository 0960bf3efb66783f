use chainrule::network;

network! {
    struct Net {
        affine(784, 10) -> leaky_relu(-0.1) -> elu(0) -> mse
    }
}

fn main() {}
