use chainrule::network;

network! {
    struct Net {
        x = input(1, 6, 6);
        a = x -> conv2d(1, 2, 3) -> flatten;
        b = x -> conv2d(1, 2, 3);
        add(a, b) -> flatten -> mse
    }
}

fn main() {}
