use chainrule::network;

network! {
    struct Net {
        affine(784, 50) -> max_pool(2) -> mse
    }
}

fn main() {}
