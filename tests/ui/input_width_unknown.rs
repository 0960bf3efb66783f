use chainrule::network;

network! {
    struct Net {
        relu -> affine(2, 3) -> mse
    }
}

fn main() {}
