use chainrule::network;

network! {
    struct Net {
        input(1, 4, 4) -> conv2d(1, 2, 4) -> max_pool(2) -> flatten -> mse
    }
}

fn main() {}
