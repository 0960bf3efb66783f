use chainrule::network;

network! {
    struct Net {
        input(1, 28, 28) -> Conv2d(1, 8, 3) -> flatten -> mse
    }
}

fn main() {}
