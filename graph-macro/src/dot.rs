//! The checked graph as text: in Graphviz's DOT language (op names and shapes, for the `DOT`
//! constant and the edges that `dot_with_values` labels with what flows along them), and as the
//! canonical one-line `TOPOLOGY` that checkpoints record.

use std::fmt::Write;

use crate::check::Checked;
use crate::ops::ArgValue;

/// The whole graph, each edge labelled with its shape (`n × 784`, `n × 1×28×28`).
pub fn render(net: &Checked) -> String {
    let (mut dot, edges) = parts(net);
    for (from, to) in edges {
        let _ = writeln!(
            dot,
            "  v{from} -> {} [label=\"n × {}\"];",
            node_id(to),
            net.values[from].shape
        );
    }
    dot.push_str("}\n");
    dot
}

/// The sink that a network without a loss sends its output to, as an edge's target.
pub const OUTPUT: usize = usize::MAX;

/// The DOT name of the node standing for value `value` (or of the output sink).
pub fn node_id(value: usize) -> String {
    if value == OUTPUT {
        "output".to_owned()
    } else {
        format!("v{value}")
    }
}

/// The header and node lines, and the edges as (value, consuming node's value) pairs; node `vK`
/// stands for value `K`, and [`OUTPUT`] for the network's output when no loss consumes it.
pub fn parts(net: &Checked) -> (String, Vec<(usize, usize)>) {
    let mut dot = String::new();
    let _ = writeln!(dot, "digraph \"{}\" {{", escape(&net.name));
    dot.push_str("  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n");
    dot.push_str("  edge [fontname=\"Helvetica\", fontsize=10];\n");
    for input in &net.inputs {
        let shape = &net.values[input.value].shape;
        let name = input.name.as_deref().unwrap_or("input");
        let _ = writeln!(
            dot,
            "  v{} [label=\"{}\\n{}\", shape=ellipse];",
            input.value,
            escape(name),
            shape.describe()
        );
    }
    let mut edges = Vec::new();
    for node in &net.nodes {
        let name = match &net.values[node.output].name {
            Some(name) => format!("{name} = {}", node.ident),
            None => node.ident.clone(),
        };
        let _ = writeln!(
            dot,
            "  v{} [label=\"{}\\n{}\"];",
            node.output,
            escape(&name),
            escape(&node.layer.describe())
        );
        for &input in &node.inputs {
            edges.push((input, node.output));
        }
    }
    if !net.nodes.last().is_some_and(|node| node.op.is_loss()) {
        dot.push_str("  output [shape=plaintext];\n");
        edges.push((net.output, OUTPUT));
    }
    (dot, edges)
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The network's structure in one line, the same for every way of writing the same network:
/// every value in order, named by its node, with its op's arguments in full (defaults too) and
/// its inputs: `v0 = input(784); v1 = affine(in = 784, out = 50)(v0); v2 = relu(v1); ...`.
pub fn topology(net: &Checked) -> String {
    let mut parts = Vec::with_capacity(net.inputs.len() + net.nodes.len());
    for input in &net.inputs {
        let dims: Vec<String> = net.values[input.value]
            .shape
            .dims()
            .iter()
            .map(usize::to_string)
            .collect();
        parts.push(format!("v{} = input({})", input.value, dims.join(", ")));
    }
    for node in &net.nodes {
        let args: Vec<String> = node
            .op
            .args
            .iter()
            .zip(&node.args.0)
            .map(|(spec, value)| match value {
                ArgValue::Whole(value) => format!("{} = {value}", spec.name),
                ArgValue::Real(value) => format!("{} = {value:?}", spec.name),
                ArgValue::Dims(dims) => format!("{} = {dims:?}", spec.name),
                ArgValue::Flag(value) => format!("{} = {value}", spec.name),
                ArgValue::SameAs(index) => format!("{} = {}", spec.name, node.op.args[*index].name),
            })
            .collect();
        let args = if args.is_empty() {
            String::new()
        } else {
            format!("({})", args.join(", "))
        };
        let inputs: Vec<String> = node.inputs.iter().map(|v| format!("v{v}")).collect();
        parts.push(format!(
            "v{} = {}{args}({})",
            node.output,
            node.op.name,
            inputs.join(", ")
        ));
    }
    parts.join("; ")
}
