use chainrule::network;

network! {
    struct Net: f64 {
        x = input(4);
        h = x -> affine(4, 4) -> relu;
        r = x -> affine(4, 4) -> tanh;
        s = mul(h, r, x);
        t = concat(s);
        sub(t) -> affine(4, 2) -> mse
    }
}

fn main() {}
