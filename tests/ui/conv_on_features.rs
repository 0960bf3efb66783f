use chainrule::network;

network! {
    struct Net {
        input(784) -> conv2d(1, 8, 3) -> flatten -> affine(5408, 10) -> mse
    }
}

fn main() {}
