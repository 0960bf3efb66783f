use chainrule::network;

network! {
    struct Net {
        affine(784, 1) -> relu -> softmax_cross_entropy
    }
}

fn main() {}
