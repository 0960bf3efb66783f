use chainrule::network;

network! {
    struct Net {
        affine(100000000000000000000000, 3) -> mse
    }
}

fn main() {}
