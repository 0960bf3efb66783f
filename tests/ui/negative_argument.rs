use chainrule::network;

network! {
    struct Net {
        affine(-1, 3) -> mse
    }
}

fn main() {}
