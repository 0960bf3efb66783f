use chainrule::network;

network! {
    struct Net {
        input(1, 5, 5) -> max_pool(2) -> flatten -> mse
    }
}

fn main() {}
