use chainrule::network;

network! {
    struct Net {
        affine(4294967296, 4294967296) -> mse
    }
}

fn main() {}
