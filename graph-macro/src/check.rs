//! Stage 3: resolve every layer against the op table, read its arguments, and infer and check
//! every shape along the topological order. The only stage that knows shape rules.
//!
//! All mistakes are collected and reported together; a layer whose own mistake hides its output
//! width does not cause follow-on errors downstream.

use std::collections::HashMap;

use petgraph::graph::NodeIndex;
use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, UnOp};

use crate::graph::{Errors, Graph, Node};
use crate::ops::{self, Gives, InitSpec, OpSpec, Takes};
use crate::parse::{Form, Layer, NetworkDef};

/// A network whose every op, argument and shape is known and consistent.
pub struct Checked<'a> {
    /// The network's name in messages: the struct's name, or `network` for the expression form.
    pub name: String,
    /// The element type: `f32` or `f64`.
    pub elem: Ident,
    /// Every value: the network's inputs and the outputs of `nodes`.
    pub values: Vec<Value>,
    /// The network's inputs, in the order their columns come in a batch.
    pub inputs: Vec<CheckedInput>,
    /// The layers in topological order (the loss, if any, last).
    pub nodes: Vec<CheckedNode<'a>>,
    /// The value the network returns from `forward` (what flows into the loss, if any).
    pub output: usize,
    /// The number of trainable scalars.
    pub param_count: usize,
}

/// A tensor flowing along an edge: `batch × width`.
pub struct Value {
    /// Features per sample.
    pub width: usize,
    /// Whether backward must compute the loss's gradient with respect to it: only if a parameter
    /// lies upstream of it.
    pub needs_grad: bool,
    /// The node producing it, `None` for an input of the network.
    pub producer: Option<usize>,
    /// The name it is bound to, if any.
    pub name: Option<String>,
}

/// One of the network's inputs.
pub struct CheckedInput {
    /// Its value.
    pub value: usize,
    /// Its name (`None` for the implicit input of a chain).
    pub name: Option<String>,
    /// Whether backward computes its gradient (`#[grad]`).
    pub grad: bool,
}

/// A layer resolved against the op table.
pub struct CheckedNode<'a> {
    /// The layer as written.
    pub layer: &'a Layer,
    /// Its row in the op table.
    pub op: &'static OpSpec,
    /// Its name in generated code and parameter names: op name and a counter, e.g. `affine0`.
    pub ident: String,
    /// The values it consumes.
    pub inputs: Vec<usize>,
    /// The value it produces (for a loss: none is stored; the index is still reserved).
    pub output: usize,
    /// Its parameters.
    pub params: Vec<CheckedParam>,
}

/// A parameter with its shape resolved.
pub struct CheckedParam {
    /// `weight`, `bias`.
    pub name: &'static str,
    /// Its shape.
    pub shape: Vec<usize>,
    /// How it starts.
    pub init: ResolvedInit,
}

/// [`InitSpec`] with the fan-in resolved to a number.
#[derive(Clone, Copy)]
pub enum ResolvedInit {
    Weight { fan_in: usize },
    Zero,
}

/// Width of a value while checking: known, or unknown because of an earlier error.
#[derive(Clone, Copy)]
enum Width {
    Known(usize),
    /// The network's input before a layer has fixed it.
    Free,
    /// Hidden by an error already reported.
    Unknown,
}

pub fn check<'a>(def: &'a NetworkDef, graph: &Graph<'a>) -> syn::Result<Checked<'a>> {
    let mut errors = Errors::default();

    let name = match &def.form {
        Form::Item { ident, .. } => ident.to_string(),
        Form::Expr => "network".to_owned(),
    };
    let elem = match &def.elem {
        None => Ident::new("f32", Span::call_site()),
        Some(elem) if elem == "f32" || elem == "f64" => elem.clone(),
        Some(elem) => {
            errors.push(syn::Error::new_spanned(
                elem,
                format!("the element type must be `f32` or `f64`, not `{elem}`"),
            ));
            Ident::new("f32", Span::call_site())
        }
    };

    let mut widths: HashMap<NodeIndex, Width> = HashMap::new();
    // For each value of known width, the layer that chose that width (`relu` passes on the width
    // its input has), so that a mismatch can say where the number comes from.
    let mut width_set_by: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut value_of: HashMap<NodeIndex, usize> = HashMap::new();
    let mut values: Vec<Value> = Vec::new();
    let mut inputs_checked = Vec::new();
    let mut nodes: Vec<CheckedNode> = Vec::new();
    let mut counters: HashMap<&str, usize> = HashMap::new();
    let mut loss: Option<&Layer> = None;

    for &index in &graph.order {
        let layer = match graph.dag[index] {
            Node::ImplicitInput => {
                widths.insert(index, Width::Free);
                value_of.insert(index, values.len());
                inputs_checked.push((
                    index,
                    CheckedInput {
                        value: values.len(),
                        name: None,
                        grad: false,
                    },
                ));
                values.push(Value {
                    width: 0,
                    needs_grad: false,
                    producer: None,
                    name: None,
                });
                continue;
            }
            Node::Input { name, layer, grad } => {
                let op = ops::lookup("input").expect("the op table has `input`");
                let Some(args) = arguments(layer, op, &mut errors) else {
                    widths.insert(index, Width::Unknown);
                    continue;
                };
                widths.insert(index, Width::Known(args[0]));
                width_set_by.insert(index, index);
                value_of.insert(index, values.len());
                inputs_checked.push((
                    index,
                    CheckedInput {
                        value: values.len(),
                        name: Some(name.unraw().to_string()),
                        grad,
                    },
                ));
                values.push(Value {
                    width: args[0],
                    needs_grad: grad,
                    producer: None,
                    name: Some(name.unraw().to_string()),
                });
                continue;
            }
            Node::Layer(layer) => layer,
        };
        widths.insert(index, Width::Unknown);
        let inputs = graph.inputs(index);

        // Nothing may follow a loss.
        let mut after_loss = false;
        for &input in &inputs {
            if let Node::Layer(producer) = graph.dag[input]
                && ops::lookup(&producer.name.to_string()).is_some_and(OpSpec::is_loss)
            {
                let this = layer.name.to_string();
                let message = if ops::lookup(&this).is_some_and(OpSpec::is_loss) {
                    format!(
                        "a network has at most one loss, but `{this}` comes after the loss `{}`",
                        producer.name
                    )
                } else {
                    format!(
                        "`{this}` comes after the loss `{}`; a loss must end the network",
                        producer.name
                    )
                };
                errors.push(syn::Error::new_spanned(layer, message));
                after_loss = true;
            }
        }

        let Some(op) = resolve(layer, &mut errors) else {
            continue;
        };
        if op.is_loss() {
            // A loss right after a loss has its message already.
            if let Some(first) = loss
                && !after_loss
            {
                errors.push(syn::Error::new_spanned(
                    layer,
                    format!(
                        "a network has at most one loss, but `{}` is a second one, after `{}`",
                        layer.name, first.name
                    ),
                ));
            }
            loss.get_or_insert(layer);
        }
        let args = if op.takes_values() {
            value_count(layer, op, &mut errors).then(Vec::new)
        } else {
            arguments(layer, op, &mut errors)
        };
        let Some(args) = args else {
            continue;
        };
        let Some(params) = parameters(layer, op, &args, &mut errors) else {
            continue;
        };
        if inputs.is_empty() {
            // A merge whose arguments did not resolve; the graph stage said why.
            continue;
        }

        // The shape rule: what the op takes, against what flows in.
        let input = inputs[0];
        let in_width = match (widths[&input], op.takes) {
            (Width::Free, Takes::Arg(i)) => {
                values[value_of[&input]].width = args[i];
                widths.insert(input, Width::Known(args[i]));
                Some(args[i])
            }
            (Width::Free, takes) => {
                let any = match takes {
                    Takes::AtLeast(min) => format!("any width of at least {min}"),
                    _ => "any width".to_owned(),
                };
                errors.push(syn::Error::new_spanned(
                    layer,
                    format!(
                        "the network's input width is unknown: `{}` takes {any}, so the network must \
                         begin with a layer that fixes it, such as `affine(784, 50)`",
                        layer.describe()
                    ),
                ));
                None
            }
            (Width::Unknown, _) => None,
            (Width::Known(width), Takes::Arg(i)) if width != args[i] => {
                errors.push(syn::Error::new_spanned(
                    layer,
                    format!(
                        "{} takes {} features, but {} produces {width}{}",
                        layer.describe(),
                        args[i],
                        describe(graph, input),
                        set_by(graph, input, &width_set_by)
                    ),
                ));
                None
            }
            (Width::Known(width), Takes::AtLeast(min)) if width < min => {
                errors.push(syn::Error::new_spanned(
                    layer,
                    format!(
                        "{} needs at least {min} features, but {} produces {width}{}",
                        layer.describe(),
                        describe(graph, input),
                        set_by(graph, input, &width_set_by)
                    ),
                ));
                None
            }
            (Width::Known(width), Takes::Equal) => {
                let mismatch = inputs
                    .iter()
                    .skip(1)
                    .find_map(|&other| match widths[&other] {
                        Width::Known(w) if w != width => Some((other, w)),
                        _ => None,
                    });
                if let Some((other, other_width)) = mismatch {
                    errors.push(syn::Error::new_spanned(
                        layer,
                        format!(
                            "{} needs inputs of one width, but {} has {width} features and {} has {other_width}",
                            layer.describe(),
                            describe(graph, input),
                            describe(graph, other)
                        ),
                    ));
                    None
                } else {
                    Some(width)
                }
            }
            (Width::Known(width), _) => Some(width),
        };
        let (out_width, setter) = match op.gives {
            Gives::Arg(i) => (Some(args[i]), Some(index)),
            Gives::Same => (in_width, width_set_by.get(&input).copied()),
            Gives::Sum => {
                let widths: Option<Vec<usize>> = inputs
                    .iter()
                    .map(|i| match widths[i] {
                        Width::Known(w) => Some(w),
                        _ => None,
                    })
                    .collect();
                let sum = widths.and_then(|w| w.into_iter().try_fold(0usize, usize::checked_add));
                (sum, Some(index))
            }
        };
        let Some(out_width) = out_width else {
            continue;
        };
        widths.insert(index, Width::Known(out_width));
        if let Some(setter) = setter {
            width_set_by.insert(index, setter);
        }
        // A node is built only if it and everything upstream of it is sound. Otherwise an error
        // has been reported already; its output width (when known) still lets consumers check
        // their own shapes against it.
        let built_inputs: Option<Vec<usize>> =
            inputs.iter().map(|i| value_of.get(i).copied()).collect();
        let (Some(_), Some(inputs)) = (in_width, built_inputs) else {
            continue;
        };

        let counter = counters.entry(op.name).or_default();
        let ident = format!("{}{}", op.name, counter);
        *counter += 1;
        let needs_grad = !params.is_empty() || inputs.iter().any(|&v| values[v].needs_grad);
        let output = values.len();
        values.push(Value {
            width: out_width,
            needs_grad,
            producer: Some(nodes.len()),
            name: graph.names.get(&index).map(|name| name.unraw().to_string()),
        });
        value_of.insert(index, output);
        nodes.push(CheckedNode {
            layer,
            op,
            ident,
            inputs,
            output,
            params,
        });
    }

    errors.finish()?;

    // Without errors every node was built. The network returns the graph's output, or what flows
    // into it when it is the loss.
    let Some(&output_node) = value_of.get(&graph.output) else {
        return Err(syn::Error::new(
            Span::call_site(),
            "internal error in `network!`: the output was not built, yet no error was found",
        ));
    };
    let output = match values[output_node].producer {
        Some(node) if nodes[node].op.is_loss() => nodes[node].inputs[0],
        _ => output_node,
    };
    // The inputs in declaration order: the order of their columns in a batch.
    inputs_checked.sort_by_key(|(node, _)| graph.inputs.iter().position(|input| input == node));
    let inputs_checked: Vec<CheckedInput> =
        inputs_checked.into_iter().map(|(_, input)| input).collect();
    let mut param_count = 0usize;
    for node in &nodes {
        for param in &node.params {
            // Each parameter's count fits (`parameters` checked it); their sum may not.
            let count = param.shape.iter().product();
            param_count = param_count.checked_add(count).ok_or_else(|| {
                syn::Error::new_spanned(
                    node.layer,
                    format!(
                        "the network's parameters would be more elements than this machine can \
                         address; the count overflows at {}'s {}",
                        node.layer.describe(),
                        param.name
                    ),
                )
            })?;
        }
    }

    Ok(Checked {
        name,
        elem,
        values,
        inputs: inputs_checked,
        nodes,
        output,
        param_count,
    })
}

/// The op a layer names.
fn resolve(layer: &Layer, errors: &mut Errors) -> Option<&'static OpSpec> {
    let name = layer.name.to_string();
    let op = ops::lookup(&name);
    if op.is_none() {
        let message = match ops::suggest(&name).or_else(|| elsewhere_called(&name)) {
            Some(near) => format!("unknown layer `{name}`; did you mean `{near}`?"),
            None => format!(
                "unknown layer `{name}`; the known layers are: {}",
                ops::known_names()
            ),
        };
        errors.push(syn::Error::new_spanned(&layer.name, message));
    }
    op
}

/// The known op an unknown name most likely means when it is not a typo: a name other libraries
/// use for it (`linear`, `softmax`), its name in other letter case (`ReLU`), or a part of its name
/// (`cross_entropy`).
fn elsewhere_called(name: &str) -> Option<&'static str> {
    let lower = name.to_lowercase();
    if let Some(op) = ops::lookup(&lower) {
        return Some(op.name);
    }
    if let Some(op) = ops::OPS
        .iter()
        .find(|op| op.elsewhere.contains(&lower.as_str()))
    {
        return Some(op.name);
    }
    // A whole `_`-separated part of a known name, at least as long as `tanh`.
    if lower.len() >= 4 {
        return ops::OPS
            .iter()
            .find(|op| {
                op.name.contains(&lower) && op.name.split('_').any(|part| lower.contains(part))
            })
            .map(|op| op.name);
    }
    None
}

/// Whether a merge names as many values as it takes.
fn value_count(layer: &Layer, op: &OpSpec, errors: &mut Errors) -> bool {
    let given = layer.arguments().len();
    let (ok, wants) = match op.inputs {
        ops::Inputs::Values(names) => (
            given == names.len(),
            format!("{} values ({})", names.len(), names.join(", ")),
        ),
        ops::Inputs::AtLeast(min) => (given >= min, format!("at least {min} values")),
        ops::Inputs::Chain | ops::Inputs::Source => (true, String::new()),
    };
    if !ok {
        errors.push(syn::Error::new_spanned(
            layer,
            format!(
                "`{}` takes {wants}, but {given} {} given",
                layer.name,
                if given == 1 { "was" } else { "were" }
            ),
        ));
    }
    ok
}

/// The layer's arguments as dimensions, checked against the op's argument list.
fn arguments(layer: &Layer, op: &OpSpec, errors: &mut Errors) -> Option<Vec<usize>> {
    let given = layer.arguments();
    if given.len() != op.args.len() {
        let wants = match op.args {
            [] => "no arguments".to_owned(),
            [one] => format!("1 argument ({one})"),
            names => format!("{} arguments ({})", names.len(), names.join(", ")),
        };
        // Named as written: an alias is what the user sees.
        let name = &layer.name;
        match &layer.args {
            Some((paren, _)) => errors.push(syn::Error::new(
                paren.span.join(),
                format!(
                    "`{name}` takes {wants}, but {} {} given",
                    given.len(),
                    if given.len() == 1 { "was" } else { "were" }
                ),
            )),
            None => errors.push(syn::Error::new_spanned(
                name,
                format!(
                    "`{name}` takes {wants}: write `{name}({})`",
                    op.args.join(", ")
                ),
            )),
        }
        return None;
    }
    let mut values = Vec::with_capacity(given.len());
    let mut ok = true;
    for (expr, &arg) in given.into_iter().zip(op.args) {
        match dimension(expr) {
            Ok(value) => values.push(value),
            Err(problem) => {
                errors.push(syn::Error::new_spanned(
                    expr,
                    format!("`{}`'s `{arg}` {problem}", layer.name),
                ));
                ok = false;
            }
        }
    }
    ok.then_some(values)
}

/// A dimension: a positive whole-number literal that fits in `usize`.
fn dimension(expr: &Expr) -> Result<usize, String> {
    let written = || quote::ToTokens::to_token_stream(expr).to_string();
    match expr {
        // An invisible group: a `$n:expr` a `macro_rules!` macro passed on.
        Expr::Group(group) => dimension(&group.expr),
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => {
            if !matches!(int.suffix(), "" | "usize") {
                return Err(format!(
                    "is `{int}`: write dimensions without a type suffix (they are `usize`), e.g. `{}`",
                    int.base10_digits()
                ));
            }
            match int.base10_parse::<usize>() {
                Ok(0) => Err("is 0; a dimension must be at least 1".to_owned()),
                Ok(value) => Ok(value),
                Err(_) => Err(format!(
                    "is {}, too large for a `usize` (at most {})",
                    int.base10_digits(),
                    usize::MAX
                )),
            }
        }
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr: inner,
            ..
        }) if matches!(
            &**inner,
            Expr::Lit(ExprLit {
                lit: Lit::Int(_),
                ..
            })
        ) =>
        {
            Err(format!(
                "is negative (`{}`); a dimension must be at least 1",
                written().replace(' ', "")
            ))
        }
        Expr::Path(path) if path.qself.is_none() => Err(format!(
            "must be a number written out, such as 784, not `{}`: `network!` checks shapes before \
             constants have values",
            written().replace(' ', "")
        )),
        _ => Err(format!(
            "must be a whole number such as 784, not `{}`",
            written()
        )),
    }
}

/// The op's parameters with their shapes; every element count must fit in `usize`.
fn parameters(
    layer: &Layer,
    op: &OpSpec,
    args: &[usize],
    errors: &mut Errors,
) -> Option<Vec<CheckedParam>> {
    let mut params = Vec::with_capacity(op.params.len());
    for spec in op.params {
        let shape: Vec<usize> = spec.dims.iter().map(|&i| args[i]).collect();
        if shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .is_none()
        {
            let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
            errors.push(syn::Error::new_spanned(
                layer,
                format!(
                    "{}'s {} would have {} elements, more than this machine can address",
                    layer.describe(),
                    spec.name,
                    dims.join(" × ")
                ),
            ));
            return None;
        }
        let init = match spec.init {
            InitSpec::Weight { fan_in } => ResolvedInit::Weight {
                fan_in: args[fan_in],
            },
            InitSpec::Zero => ResolvedInit::Zero,
        };
        params.push(CheckedParam {
            name: spec.name,
            shape,
            init,
        });
    }
    Some(params)
}

/// Where the width of `node`'s output was chosen, when not by `node` itself: ` (set by
/// affine(784, 50))`, or nothing.
fn set_by(graph: &Graph, node: NodeIndex, width_set_by: &HashMap<NodeIndex, NodeIndex>) -> String {
    match width_set_by.get(&node) {
        Some(&setter) if setter != node => format!(" (set by {})", describe(graph, setter)),
        _ => String::new(),
    }
}

/// How a message names the producer of a value: the layer as written, or "the input".
fn describe(graph: &Graph, node: NodeIndex) -> String {
    match (&graph.dag[node], graph.names.get(&node)) {
        (Node::ImplicitInput, _) => "the network's input".to_owned(),
        (Node::Input { name, .. }, _) => format!("the input `{name}`"),
        (Node::Layer(_), Some(name)) => format!("`{name}`"),
        (Node::Layer(layer), None) => layer.describe(),
    }
}
