use chainrule::network;

network! {
    struct Net {
        input(1, 3, 3) -> conv2d(1, 1, 5) -> flatten -> mse
    }
}

fn main() {}
