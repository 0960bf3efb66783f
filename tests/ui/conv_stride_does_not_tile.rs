use chainrule::network;

network! {
    struct Net {
        input(1, 28, 28) -> conv2d(1, 4, 5, stride = 2) -> flatten -> mse
    }
}

fn main() {}
