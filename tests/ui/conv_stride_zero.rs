use chainrule::network;

network! {
    struct Net {
        input(1, 28, 28) -> conv2d(1, 4, 3, stride = 0) -> flatten -> mse
    }
}

fn main() {}
