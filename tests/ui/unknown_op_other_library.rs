use chainrule::network;

network! {
    struct Net {
        linear(784, 10) -> softmax_cross_entropy
    }
}

fn main() {}
