use chainrule::network;

network! {
    struct Net {
        affine(784, 10) -> softmax_cross_entropy -> mse
    }
}

fn main() {}
