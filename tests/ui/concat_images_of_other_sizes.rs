use chainrule::network;

network! {
    struct Net {
        x = input(1, 6, 6);
        a = x -> conv2d(1, 2, 3);
        b = x -> conv2d(1, 2, 5);
        concat(a, b) -> flatten -> mse
    }
}

fn main() {}
