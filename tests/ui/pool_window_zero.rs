use chainrule::network;

network! {
    struct Net {
        input(1, 28, 28) -> max_pool(0) -> flatten -> mse
    }
}

fn main() {}
