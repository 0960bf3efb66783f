//! Stage 2: the network as a petgraph DAG, sorted topologically.
//!
//! Nodes are operations (plus the network's input); an edge `a → b` says that `b` consumes the
//! value `a` produces. Shapes are not known yet: `check` infers them along the topological order.

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::parse::{Chain, Layer};

/// A node of the graph before checking.
pub enum Node<'a> {
    /// The value fed to the network.
    Input,
    /// A layer as written.
    Layer(&'a Layer),
}

/// The graph and an order in which every node comes after its inputs.
pub struct Graph<'a> {
    pub dag: DiGraph<Node<'a>, ()>,
    /// Every node, inputs before consumers.
    pub order: Vec<NodeIndex>,
}

/// Builds the graph of a chain: input → first layer → … → last layer.
pub fn build(chain: &Chain) -> syn::Result<Graph<'_>> {
    let mut dag = DiGraph::new();
    let mut previous = dag.add_node(Node::Input);
    for layer in &chain.layers {
        let node = dag.add_node(Node::Layer(layer));
        dag.add_edge(previous, node, ());
        previous = node;
    }
    let order = toposort(&dag, None).map_err(|cycle| {
        let message = "the layers form a cycle; a network must be a directed acyclic graph";
        match &dag[cycle.node_id()] {
            Node::Layer(layer) => syn::Error::new_spanned(layer, message),
            Node::Input => syn::Error::new(proc_macro2::Span::call_site(), message),
        }
    })?;
    Ok(Graph { dag, order })
}

impl Graph<'_> {
    /// The nodes whose outputs flow into `node`, in edge-insertion order.
    pub fn inputs(&self, node: NodeIndex) -> Vec<NodeIndex> {
        let mut inputs: Vec<_> = self
            .dag
            .neighbors_directed(node, petgraph::Direction::Incoming)
            .collect();
        // petgraph lists neighbours newest first; argument order is insertion order.
        inputs.reverse();
        inputs
    }
}
