use chainrule::network;

network! {
    struct Net {
        input(1, 8, 8) -> avg_pool(2, pad = 2) -> flatten -> mse
    }
}

fn main() {}
