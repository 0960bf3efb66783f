use chainrule::network;

network! {
    struct Net {
        affine(784, 0) -> rleu -> affine(50, 10) -> affine(20, 2) -> softmax_cross_entropy
    }
}

fn main() {}
