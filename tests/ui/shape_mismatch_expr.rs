use chainrule::network;

fn main() {
    let net = network!(affine(2, 3) -> sigmoid -> affine(4, 1) -> mse);
}
