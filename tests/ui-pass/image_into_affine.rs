use chainrule::network;

network! {
    struct Net {
        input(1, 28, 28) -> relu -> affine(784, 10) -> softmax_cross_entropy
    }
}

fn main() {}
