use chainrule::network;

fn main() {
    let net = network!();
}
