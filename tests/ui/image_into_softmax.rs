use chainrule::network;

network! {
    struct Net {
        input(3, 8, 8) -> softmax
    }
}

fn main() {}
