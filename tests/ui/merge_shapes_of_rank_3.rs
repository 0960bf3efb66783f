use chainrule::network;

network! {
    struct Net {
        a = input(2, 4, 4);
        b = input(2, 4, 3);
        c = input(32);
        s = add(a, b);
        t = add(a, c);
        u = concat(a, b);
        concat(s, t, u) -> mse
    }
}

fn main() {}
