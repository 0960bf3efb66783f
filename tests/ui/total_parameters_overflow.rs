use chainrule::network;

network! {
    struct Net {
        affine(4294967296, 4294967295) -> affine(4294967295, 1) -> mse
    }
}

fn main() {}
