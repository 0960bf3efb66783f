use chainrule::network;

network! {
    struct Net {
        affine(784 50) -> softmax_cross_entropy
    }
}

fn main() {}
