use chainrule::network;

network! {
    struct Net {
        affine("a", 3) -> mse
    }
}

fn main() {}
