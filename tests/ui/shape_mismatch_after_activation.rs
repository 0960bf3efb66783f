use chainrule::network;

network! {
    struct Net {
        affine(784, 50) -> relu -> affine(40, 10) -> softmax_cross_entropy
    }
}

fn main() {}
