use chainrule::network;

network! {
    struct Net {
        affine(784, 50) -> rleu -> affine(50, 10) -> affine(20, 10) -> softmax_cross_entropy
    }
}

fn main() {}
