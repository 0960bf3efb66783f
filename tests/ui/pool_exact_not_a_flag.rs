use chainrule::network;

network! {
    struct Net {
        input(1, 4, 4) -> max_pool(2, exact = 1) -> flatten -> mse
    }
}

fn main() {}
