use chainrule::network;

network! {
    struct Net {
        affine(784, 10) -> leaky_relu(slope = 0.1) -> relu(alpha = 1) -> mse
    }
}

fn main() {}
