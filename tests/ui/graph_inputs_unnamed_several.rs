use chainrule::network;

network! {
    struct Net: f64 {
        a = input(4) -> relu;
        b = input(4) -> tanh;
        add(a, b) -> mse
    }
}

fn main() {}
