use chainrule::network;

network! {
    struct Net {
        input(1, 28, 28) -> conv2d(1, 30, 5) -> relu -> max_pool(2) -> affine(100, 10) -> mse
    }
}

fn main() {}
