use chainrule::network;

network! {
    struct Net {
        affine(784, 10) -> Softmax
    }
}

fn main() {}
