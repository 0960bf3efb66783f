use chainrule::network;

network! {
    struct Net {
        affine(784, 10) -> leaky_relu(0.1f32) -> elu(ALPHA) -> leaky_relu("a") -> elu(1e999) -> mse
    }
}

fn main() {}
