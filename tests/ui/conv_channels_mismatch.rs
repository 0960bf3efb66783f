use chainrule::network;

network! {
    struct Net {
        input(1, 28, 28) -> conv2d(3, 16, 3) -> relu -> flatten -> affine(10816, 10) -> mse
    }
}

fn main() {}
