use chainrule::network;

network! {
    struct Net {
        affine(784, 10) -> softmax_cross_entropy -> relu
    }
}

fn main() {}
