//! The checked graph in Graphviz's DOT language: op names and shapes, for the `DOT` constant.

use std::fmt::Write;

use crate::check::Checked;

pub fn render(net: &Checked) -> String {
    let mut dot = String::new();
    let _ = writeln!(dot, "digraph {} {{", quote_id(&net.name));
    dot.push_str("  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n");
    let _ = writeln!(
        dot,
        "  v0 [label=\"input\\n{} features\", shape=ellipse];",
        net.values[0].width
    );
    for node in &net.nodes {
        let _ = writeln!(
            dot,
            "  v{} [label=\"{}\\n{}\"];",
            node.output,
            node.ident,
            escape(&node.layer.describe())
        );
        for &input in &node.inputs {
            let _ = writeln!(
                dot,
                "  v{input} -> v{} [label=\"n × {}\"];",
                node.output, net.values[input].width
            );
        }
    }
    dot.push_str("}\n");
    dot
}

fn quote_id(name: &str) -> String {
    format!("\"{}\"", escape(name))
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}
