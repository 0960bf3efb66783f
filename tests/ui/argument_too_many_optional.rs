use chainrule::network;

network! {
    struct Net {
        affine(784, 10) -> leaky_relu(0.1, 0.2) -> mse
    }
}

fn main() {}
