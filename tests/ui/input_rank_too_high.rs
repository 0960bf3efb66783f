use chainrule::network;

network! {
    struct Net {
        input(1, 2, 28, 28) -> relu -> mse
    }
}

fn main() {}
