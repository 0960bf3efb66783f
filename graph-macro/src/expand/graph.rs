//! The `GRAPH` constant: the checked graph as data (the runtime's `chainrule::graph`), for
//! exporters such as ONNX.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::lit;
use crate::check::Checked;
use crate::ops::ArgValue;

/// The expression of `Network::GRAPH`.
pub fn graph_const(net: &Checked) -> TokenStream {
    let name = &net.name;
    let values = net.values.iter().map(|value| {
        let dims = value.shape.dims().iter().map(|&d| lit(d));
        quote!(&[#(#dims),*])
    });
    let inputs = net.inputs.iter().map(|input| {
        let name = input.name.as_deref().unwrap_or("input");
        let value = lit(input.value);
        quote!(G::GraphInput { name: #name, value: #value })
    });
    let nodes = net.nodes.iter().map(|node| {
        let op = node.op.name;
        let ident = &node.ident;
        let args = node.op.args.iter().zip(&node.args.0).map(|(spec, value)| {
            let arg_name = spec.name;
            let value = match value {
                ArgValue::Whole(v) => {
                    let v = lit(*v);
                    quote!(G::ArgValue::Whole(#v))
                }
                ArgValue::Real(v) => {
                    let v = Literal::f64_suffixed(*v);
                    quote!(G::ArgValue::Real(#v))
                }
                ArgValue::Dims(dims) => {
                    let dims = dims.iter().map(|&d| lit(d));
                    quote!(G::ArgValue::Dims(&[#(#dims),*]))
                }
                ArgValue::Flag(v) => quote!(G::ArgValue::Flag(#v)),
                // `check` resolves these to the argument they copy.
                ArgValue::SameAs(_) => unreachable!("an argument left as a default's reference"),
            };
            quote!(G::GraphArg { name: #arg_name, value: #value })
        });
        let inputs = node.inputs.iter().map(|&v| lit(v));
        let output = lit(node.output);
        let loss = node.op.is_loss();
        quote! {
            G::GraphNode {
                op: #op,
                name: #ident,
                args: &[#(#args),*],
                inputs: &[#(#inputs),*],
                output: #output,
                loss: #loss,
            }
        }
    });
    let output = lit(net.output);
    quote! {
        {
            use ::chainrule::graph as G;
            G::Graph {
                name: #name,
                values: &[#(#values),*],
                inputs: &[#(#inputs),*],
                nodes: &[#(#nodes),*],
                output: #output,
            }
        }
    }
}
