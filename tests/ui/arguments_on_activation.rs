use chainrule::network;

network! {
    struct Net {
        affine(784, 10) -> relu(3) -> softmax_cross_entropy
    }
}

fn main() {}
