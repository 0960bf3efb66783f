use chainrule::network;

network! {
    struct Net {}
}

fn main() {}
