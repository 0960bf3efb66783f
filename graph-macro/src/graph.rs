//! Stage 2: the network as a petgraph DAG, sorted topologically.
//!
//! Nodes are the network's inputs and its operations; an edge `a → b` says that `b` consumes the
//! value `a` produces, and carries the argument position it fills. Names are resolved here: a
//! chain may start from a named value (`h -> relu`), merges name their inputs (`add(h, r)`), and a
//! name may be used before the statement that defines it, so a cycle is possible and is an error.
//! Shapes are not known yet: `check` infers them along the topological order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use petgraph::Direction;
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use syn::{Expr, Ident};

use crate::errors::Errors;
use crate::ops;
use crate::parse::{Argument, Layer, Statement};

/// A node of the graph before checking.
pub enum Node<'a> {
    /// The network's one input when none is declared: what a chain starting with a layer reads.
    ImplicitInput,
    /// An input declared as `name = input(shape)`, or written at the start of a chain
    /// (`input(1, 28, 28) -> ...`, unnamed).
    Input {
        name: Option<&'a Ident>,
        layer: &'a Layer,
        /// Whether backward computes the gradient with respect to it (`#[grad]`).
        grad: bool,
    },
    /// A layer as written.
    Layer(&'a Layer),
}

/// An edge: the consumer's argument position, and the name through which it was referred to.
pub struct Edge<'a> {
    pub position: usize,
    pub via: Option<&'a Ident>,
}

/// The graph and an order in which every node comes after its inputs.
pub struct Graph<'a> {
    pub dag: DiGraph<Node<'a>, Edge<'a>>,
    /// Every node, inputs before consumers.
    pub order: Vec<NodeIndex>,
    /// The network's inputs, in declaration order (the implicit one, if none is declared).
    pub inputs: Vec<NodeIndex>,
    /// The node whose value the network returns: the last statement's (`None` when a mistake
    /// hides it).
    pub output: Option<NodeIndex>,
    /// Values bound to names.
    pub names: HashMap<NodeIndex, &'a Ident>,
    /// Nodes missing an input because of a mistake already reported: their shapes are unknown.
    pub broken: HashSet<NodeIndex>,
}

/// Where a statement's value comes from before names are resolved.
#[derive(Clone, Copy)]
enum Value<'a> {
    Node(NodeIndex),
    /// The value of another name: `y = h`, or a chain that is only a name.
    Name(&'a Ident),
}

/// An edge whose source is a name, to connect once every statement has a node.
struct Pending<'a> {
    name: &'a Ident,
    consumer: NodeIndex,
    position: usize,
}

/// The graph of `body`, every mistake found pushed to `errors`. `skipped` is what the statements
/// that did not parse defined and mentioned: uses of their names are neither resolved nor
/// reported, and values they mention count as used. `None` only when the graph has a cycle, so
/// that nothing can be checked in order.
pub fn build<'a>(
    body: &'a [Statement],
    skipped: &Skipped,
    errors: &mut Errors,
) -> Option<Graph<'a>> {
    let mut dag: DiGraph<Node<'a>, Edge<'a>> = DiGraph::new();

    // Pass 1: every statement's name, checked for doubles and for clashes with op names.
    let mut defined: HashMap<String, (usize, &Ident)> = HashMap::new();
    // Names rejected for being op names: their uses are not reported again.
    let mut rejected: Vec<String> = Vec::new();
    // Names some error has mentioned already (rejected, defined twice, suggested for a misspelt
    // name, used as a layer): that one of them is unused would be a follow-on error.
    let mut mentioned: HashSet<String> = HashSet::new();
    for (index, statement) in body.iter().enumerate() {
        let Some(name) = &statement.name else {
            continue;
        };
        if ops::lookup(&name.to_string()).is_some() {
            rejected.push(name.to_string());
            mentioned.insert(name.to_string());
            errors.push(syn::Error::new_spanned(
                name,
                format!("`{name}` is the name of a layer; call this value something else"),
            ));
        } else if let Some((_, first)) = defined.get(&name.to_string()) {
            mentioned.insert(name.to_string());
            let mut error = syn::Error::new_spanned(
                name,
                format!("`{name}` is defined twice; give each value its own name"),
            );
            error.combine(syn::Error::new_spanned(
                first,
                format!("`{name}` is first defined here"),
            ));
            errors.push(error);
        } else {
            defined.insert(name.to_string(), (index, name));
        }
    }

    // Inputs: declared ones (named, or unnamed at the start of a chain), or one implicit input.
    let mut inputs = Vec::new();
    let mut statement_values: Vec<Option<Value<'a>>> = vec![None; body.len()];
    // The chains that start from an input written in them: the input's node.
    let mut inline_inputs: HashMap<usize, NodeIndex> = HashMap::new();
    let mut unnamed: Vec<&Layer> = Vec::new();
    // Statements whose mistake is reported already and that make no nodes.
    let mut handled: Vec<usize> = Vec::new();
    for (index, statement) in body.iter().enumerate() {
        let first = &statement.chain.layers[0];
        let grad = grad_attribute(statement, errors);
        let alone = statement.chain.layers.len() == 1;
        let declares = is_input(first);
        if !(declares && alone && statement.name.is_some())
            && let Some(attr) = grad
        {
            errors.push(syn::Error::new_spanned(
                attr,
                "`#[grad]` asks for an input's gradient; it goes on a statement `name = input(shape)` that declares the input alone",
            ));
        }
        if !declares {
            continue;
        }
        match &statement.name {
            Some(name) if alone => {
                let node = dag.add_node(Node::Input {
                    name: Some(name),
                    layer: first,
                    grad: grad.is_some(),
                });
                inputs.push(node);
                statement_values[index] = Some(Value::Node(node));
            }
            _ if alone => {
                errors.push(syn::Error::new_spanned(
                    first,
                    format!(
                        "this input has no name: name it (`x = {};`) or start a chain with it (`{} -> ...`)",
                        first.describe(),
                        first.describe()
                    ),
                ));
                handled.push(index);
            }
            _ => {
                let node = dag.add_node(Node::Input {
                    name: None,
                    layer: first,
                    grad: false,
                });
                unnamed.push(first);
                inputs.push(node);
                inline_inputs.insert(index, node);
            }
        }
    }
    if inputs.len() > 1 {
        for layer in unnamed {
            errors.push(syn::Error::new_spanned(
                layer,
                "a network with several inputs names each of them: declare this one as `x = input(...);` and start the chain from `x`",
            ));
        }
    }
    let implicit = inputs.is_empty().then(|| {
        let node = dag.add_node(Node::ImplicitInput);
        inputs.push(node);
        node
    });

    // Pass 2: the layers of every chain.
    let mut pending = Vec::new();
    for (index, statement) in body.iter().enumerate() {
        if statement_values[index].is_some() || handled.contains(&index) {
            continue;
        }
        let mut value: Option<Value<'a>> = inline_inputs.get(&index).copied().map(Value::Node);
        for (position, layer) in statement.chain.layers.iter().enumerate() {
            let op = ops::lookup(&layer.name.to_string());
            let is_name = op.is_none() && layer.args.is_none();
            if position == 0 && value.is_some() {
                // The input written at the start of this chain.
                continue;
            }
            if position == 0 {
                // A name that no statement defines is a value only where names are in use;
                // in a plain chain it is an unknown layer, for `check` to report.
                if is_name && (defined.contains_key(&layer.name.to_string()) || !defined.is_empty())
                {
                    value = Some(Value::Name(&layer.name));
                    continue;
                }
                let node = dag.add_node(Node::Layer(layer));
                // An unknown op whose arguments are all values is probably a misspelt merge:
                // connect them, so that `check` reports the op and not the values as unused.
                let misspelt_merge = op.is_none()
                    && layer.args.is_some()
                    && layer.arguments().all(|arg| {
                        value_name(arg).is_some_and(|name| defined.contains_key(&name.to_string()))
                    });
                if op.is_some_and(|op| op.takes_values()) || misspelt_merge {
                    for (argument, expr) in layer.arguments().enumerate() {
                        match value_name(expr) {
                            Some(name) => pending.push(Pending {
                                name,
                                consumer: node,
                                position: argument,
                            }),
                            None => errors.push(syn::Error::new_spanned(
                                expr,
                                format!(
                                    "`{}` combines values named in its arguments, as in `{}(h, r)`",
                                    layer.name, layer.name
                                ),
                            )),
                        }
                    }
                } else if op.is_none() || rejected.contains(&layer.name.to_string()) {
                    // An unknown layer (`check` reports it), or a name already rejected.
                } else if let Some(input) = implicit {
                    dag.add_edge(
                        input,
                        node,
                        Edge {
                            position: 0,
                            via: None,
                        },
                    );
                } else {
                    errors.push(syn::Error::new_spanned(
                        layer,
                        format!(
                            "`{}` has no input: this network declares its inputs, so start the chain from a value, as in `x -> {}`",
                            layer.describe(),
                            layer.describe()
                        ),
                    ));
                }
                value = Some(Value::Node(node));
                continue;
            }
            // An unknown name that is not a value is an unknown layer, for `check` to report.
            if is_name && defined.contains_key(&layer.name.to_string()) {
                mentioned.insert(layer.name.to_string());
                errors.push(syn::Error::new_spanned(
                    layer,
                    format!(
                        "`{}` is not a layer; to use a value, start a chain from it (`{} -> ...`) or combine it with `add`, `concat`, ...",
                        layer.name, layer.name
                    ),
                ));
                continue;
            }
            if let Some(op) = op.filter(|op| op.takes_values() || op.is_source()) {
                errors.push(syn::Error::new_spanned(
                    layer,
                    format!(
                        "`{}` cannot follow `->`: {}",
                        layer.describe(),
                        if op.is_source() {
                            "an input starts a chain (`input(784) -> ...`) or is declared alone, as in `x = input(784);`, and a chain starts from its name: `x -> ...`".to_owned()
                        } else {
                            format!("it combines named values and starts a chain, as in `{}(a, b) -> ...`", op.name)
                        }
                    ),
                ));
                continue;
            }
            let node = dag.add_node(Node::Layer(layer));
            match value {
                Some(Value::Node(previous)) => {
                    dag.add_edge(
                        previous,
                        node,
                        Edge {
                            position: 0,
                            via: None,
                        },
                    );
                }
                Some(Value::Name(name)) => pending.push(Pending {
                    name,
                    consumer: node,
                    position: 0,
                }),
                None => {}
            }
            value = Some(Value::Node(node));
        }
        statement_values[index] = value;
    }

    // Names to nodes, following aliases (`y = h`).
    // Each statement's resolution is kept, so that a long chain of aliases is walked once.
    let skipped_names: HashSet<String> = skipped.defined.iter().map(Ident::to_string).collect();
    let mut resolved: HashMap<usize, Option<NodeIndex>> = HashMap::new();
    // Suggesting a near name compares with every defined one: only for the first few misses.
    let mut suggestions_left = 16usize;
    let mut resolve = |name: &Ident, errors: &mut Errors| -> Option<NodeIndex> {
        let mut current = name;
        let mut path: Vec<usize> = Vec::new();
        let mut on_path: HashSet<usize> = HashSet::new();
        let result = loop {
            if skipped_names.contains(&current.to_string()) {
                break None;
            }
            if current == "input" && !defined.contains_key("input") {
                errors.push(syn::Error::new_spanned(
                    current,
                    "the network's input has no name here: declare it, as in `x = input(784);`, to use it by name",
                ));
                break None;
            }
            let Some(&(index, _)) = defined.get(&current.to_string()) else {
                let suggest = suggestions_left > 0;
                let near = if suggest {
                    suggestions_left -= 1;
                    defined
                        .keys()
                        .map(|known| {
                            // Edits and swaps of neighbours, as the op names' suggestions count
                            // them, without the hash map of the unrestricted distance.
                            (strsim::osa_distance(&current.to_string(), known), known)
                        })
                        .filter(|&(distance, known)| distance <= 2.max(known.len() / 3))
                        .min_by_key(|&(distance, known)| (distance, known.clone()))
                } else {
                    None
                };
                let layer = if suggest && near.is_none() {
                    ops::suggest(&current.to_string())
                } else {
                    None
                };
                let message = match (near, layer) {
                    (Some((_, near)), _) => {
                        mentioned.insert(near.clone());
                        format!(
                            "cannot find a value or layer named `{current}`; did you mean `{near}`?"
                        )
                    }
                    (None, Some(layer)) => format!(
                        "cannot find a value or layer named `{current}`; did you mean the layer `{layer}`?"
                    ),
                    (None, None) => format!("cannot find a value or layer named `{current}`"),
                };
                errors.push(syn::Error::new_spanned(current, message));
                break None;
            };
            if let Some(&known) = resolved.get(&index) {
                break known;
            }
            if !on_path.insert(index) {
                let definition = defined
                    .get(&name.to_string())
                    .map_or(name, |&(_, ident)| ident);
                errors.push(syn::Error::new_spanned(
                    definition,
                    format!(
                        "`{name}` is only ever another name (`{name} = ...` with a name on the right): \
                         one of the names in the loop must be computed by a layer"
                    ),
                ));
                break None;
            }
            path.push(index);
            match statement_values[index] {
                None => break None,
                Some(Value::Node(node)) => break Some(node),
                Some(Value::Name(next)) => current = next,
            }
        };
        for index in path {
            resolved.insert(index, result);
        }
        result
    };
    let mut broken = HashSet::new();
    for edge in pending {
        match resolve(edge.name, errors) {
            Some(source) => {
                dag.add_edge(
                    source,
                    edge.consumer,
                    Edge {
                        position: edge.position,
                        via: Some(edge.name),
                    },
                );
            }
            None => {
                broken.insert(edge.consumer);
            }
        }
    }
    // Statements that only name another value: the alias must be used, and a bare name may only
    // be the last statement (the output).
    let referenced: HashSet<String> = body
        .iter()
        .flat_map(|statement| statement.chain.layers.iter())
        .flat_map(|layer| {
            std::iter::once(layer.name.to_string()).chain(
                layer
                    .arguments()
                    .filter_map(value_name)
                    .map(Ident::to_string),
            )
        })
        .collect();
    for (index, (statement, value)) in body.iter().zip(&statement_values).enumerate() {
        if index + 1 == body.len() {
            continue;
        }
        if let Some(Value::Name(target)) = value {
            match &statement.name {
                Some(name) if !referenced.contains(&name.to_string()) => {
                    errors.push(syn::Error::new_spanned(
                        name,
                        format!("`{name}` is never used; use it, or remove it"),
                    ));
                }
                Some(_) => {}
                None => errors.push(syn::Error::new_spanned(
                    target,
                    "this statement does nothing: only the last statement's value leaves the network",
                )),
            }
        }
    }
    let mut names = HashMap::new();
    for (statement, value) in body.iter().zip(&statement_values) {
        if let (Some(name), Some(value)) = (&statement.name, value) {
            let node = match *value {
                Value::Node(node) => Some(node),
                Value::Name(other) => resolve(other, &mut Errors::default()),
            };
            if let Some(node) = node {
                names.entry(node).or_insert(name);
            }
        }
    }
    let output = match statement_values.last().copied().flatten() {
        Some(Value::Node(node)) => Some(node),
        Some(Value::Name(name)) => resolve(name, errors),
        None => None,
    };
    let used = |name: &Ident| {
        let name = name.to_string();
        mentioned.contains(&name) || skipped.mentioned.contains(&name)
    };

    // Every value must be used: by a layer, or as the network's output.
    for node in dag.node_indices() {
        if Some(node) == output
            || names.get(&node).is_some_and(|name| used(name))
            || dag
                .neighbors_directed(node, Direction::Outgoing)
                .next()
                .is_some()
        {
            continue;
        }
        let message = match (&dag[node], names.get(&node)) {
            (Node::ImplicitInput, _) => continue,
            (
                Node::Input {
                    name: Some(name), ..
                },
                _,
            ) => {
                format!("the input `{name}` is never used")
            }
            (Node::Input { name: None, .. }, _) => continue,
            (Node::Layer(_), Some(name)) => {
                format!("`{name}` is computed but never used; use it, or remove it")
            }
            (Node::Layer(layer), None) => format!(
                "the result of `{}` is never used: only the last statement's value leaves the network",
                layer.describe()
            ),
        };
        let error = match (&dag[node], names.get(&node)) {
            (
                Node::Input {
                    name: Some(name), ..
                },
                _,
            )
            | (_, Some(name)) => syn::Error::new_spanned(name, message),
            (Node::Layer(layer), None) => syn::Error::new_spanned(layer, message),
            (Node::ImplicitInput | Node::Input { name: None, .. }, None) => continue,
        };
        errors.push(error);
    }

    let Some(order) = source_order(&dag) else {
        errors.push(cycle_error(&dag, &names));
        return None;
    };
    Some(Graph {
        dag,
        order,
        inputs,
        output,
        names,
        broken,
    })
}

/// What the statements that did not parse leave behind for the later stages.
#[derive(Default)]
pub struct Skipped {
    /// The names they define.
    pub defined: Vec<Ident>,
    /// Every identifier written in them.
    pub mentioned: HashSet<String>,
}

/// Whether a layer declares an input of the network: `input(...)`.
pub fn is_input(layer: &Layer) -> bool {
    ops::lookup(&layer.name.to_string()).is_some_and(|op| op.is_source())
}

/// A topological order that, among the nodes ready at each step, takes the one written first, so
/// layers are numbered (`affine0`, `affine1`, ...) in the order they appear. `None` for a cycle.
fn source_order(dag: &DiGraph<Node, Edge>) -> Option<Vec<NodeIndex>> {
    let mut waiting: Vec<usize> = dag
        .node_indices()
        .map(|node| dag.neighbors_directed(node, Direction::Incoming).count())
        .collect();
    let mut ready: BinaryHeap<Reverse<NodeIndex>> = dag
        .node_indices()
        .filter(|node| waiting[node.index()] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(dag.node_count());
    while let Some(Reverse(node)) = ready.pop() {
        order.push(node);
        for consumer in dag.neighbors_directed(node, Direction::Outgoing) {
            waiting[consumer.index()] -= 1;
            if waiting[consumer.index()] == 0 {
                ready.push(Reverse(consumer));
            }
        }
    }
    (order.len() == dag.node_count()).then_some(order)
}

/// The `#[grad]` attribute of a statement, if any; other attributes are errors.
fn grad_attribute<'a>(statement: &'a Statement, errors: &mut Errors) -> Option<&'a syn::Attribute> {
    let mut grad = None;
    for attr in &statement.attrs {
        if attr.path().is_ident("grad") && matches!(attr.meta, syn::Meta::Path(_)) {
            grad = Some(attr);
        } else if attr.path().is_ident("doc") {
            // A comment on a statement, for the reader.
        } else {
            errors.push(syn::Error::new_spanned(
                attr,
                "unknown attribute: a statement takes only `#[grad]` (on an input) and doc comments",
            ));
        }
    }
    grad
}

/// A merge argument that names a value: a lone identifier, not named itself.
fn value_name(argument: &Argument) -> Option<&Ident> {
    fn name(expr: &Expr) -> Option<&Ident> {
        match expr {
            Expr::Path(path) if path.qself.is_none() && path.attrs.is_empty() => {
                path.path.get_ident()
            }
            Expr::Group(group) => name(&group.expr),
            _ => None,
        }
    }
    match argument.name {
        None => name(&argument.value),
        Some(_) => None,
    }
}

/// The error for a cycle: at a name that closes it, listing the values on it.
fn cycle_error(dag: &DiGraph<Node, Edge>, names: &HashMap<NodeIndex, &Ident>) -> syn::Error {
    for component in tarjan_scc(dag) {
        let looped = component.len() > 1 || dag.contains_edge(component[0], component[0]);
        if !looped {
            continue;
        }
        let mut on_cycle: Vec<String> = component
            .iter()
            .filter_map(|node| names.get(node).map(|name| format!("`{name}`")))
            .collect();
        on_cycle.sort();
        let closing = dag
            .edge_indices()
            .filter(|&edge| {
                let (from, to) = dag.edge_endpoints(edge).expect("an edge has endpoints");
                component.contains(&from) && component.contains(&to)
            })
            .find_map(|edge| dag[edge].via);
        let message = format!(
            "these values depend on each other in a cycle: {}; a network must be a directed acyclic graph",
            on_cycle.join(", ")
        );
        return match closing {
            Some(name) => syn::Error::new_spanned(name, message),
            None => syn::Error::new(proc_macro2::Span::call_site(), message),
        };
    }
    syn::Error::new(proc_macro2::Span::call_site(), "the graph has a cycle")
}

impl Graph<'_> {
    /// The nodes whose outputs flow into `node`, in argument order.
    pub fn inputs(&self, node: NodeIndex) -> Vec<NodeIndex> {
        let mut inputs: Vec<(usize, NodeIndex)> = self
            .dag
            .edges_directed(node, Direction::Incoming)
            .map(|edge| {
                (
                    edge.weight().position,
                    petgraph::visit::EdgeRef::source(&edge),
                )
            })
            .collect();
        inputs.sort_by_key(|&(position, _)| position);
        inputs.into_iter().map(|(_, node)| node).collect()
    }
}
