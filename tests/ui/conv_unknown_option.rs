use chainrule::network;

network! {
    struct Net {
        input(1, 28, 28) -> conv2d(1, 8, 3, padding = 1) -> flatten -> mse
    }
}

fn main() {}
