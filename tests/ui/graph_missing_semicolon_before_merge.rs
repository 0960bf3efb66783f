use chainrule::network;

network! {
    struct Net {
        x = input(3);
        h = x -> relu
        add(h, h) -> mse
    }
}

fn main() {}
