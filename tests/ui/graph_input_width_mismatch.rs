use chainrule::network;

network! {
    struct Net: f64 {
        x = input(2);
        y = input(3);
        h = y -> affine(2, 4);
        s = add(x, y);
        concat(h, s) -> mse
    }
}

fn main() {}
