use chainrule::network;

network! {
    struct Net {
        affine(784, 10) -> leaky_relu(alpha = 0.1, alpha = 0.2) -> mse
    }
}

fn main() {}
