use chainrule::network;

network! {
    struct Net {
        max_pool(2) -> affine(4, 2) -> mse
    }
}

fn main() {}
