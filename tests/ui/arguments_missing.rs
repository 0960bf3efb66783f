use chainrule::network;

network! {
    struct Net {
        affine -> relu -> mse
    }
}

fn main() {}
