use chainrule::network;

network! {
    struct Net {
        input(channels = 1, 28, 28) -> relu -> mse
    }
}

fn main() {}
