//! Stage 3: resolve every layer against the op table, read its arguments by their kinds, and infer
//! and check every shape along the topological order. The only stage that knows shape rules.
//!
//! All mistakes are collected and reported together, with those of the stages before: a value
//! whose definition is broken is unknown, and shapes are checked everywhere else, so one mistake
//! causes no follow-on errors downstream.

use std::collections::HashMap;

use petgraph::graph::NodeIndex;
use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, UnOp};

use crate::errors::Errors;
use crate::graph::{Graph, Node};
use crate::ops::{
    self, ArgKind, ArgSpec, ArgValue, Args, Bound, Incoming, InitSpec, Kernels, OpSpec, ParamDims,
    ShapeIn,
};
use crate::parse::{Argument, Form, Layer, NetworkDef};
use crate::shape::{MAX_RANK, Shape};

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

/// A tensor flowing along an edge: `batch ×` its shape.
pub struct Value {
    /// Its shape per sample.
    pub shape: Shape,
    /// The node producing it, `None` for an input of the network.
    pub producer: Option<usize>,
    /// The name it is bound to, if any.
    pub name: Option<String>,
}

/// One of the network's inputs.
pub struct CheckedInput {
    /// Its value.
    pub value: usize,
    /// Its name (`None` for the implicit input of a chain, or one written at a chain's start).
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
    /// Its arguments, defaults filled in.
    pub args: Args,
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
    One,
}

/// A value's shape while checking: known, or unknown because of an earlier error.
#[derive(Clone)]
enum Known {
    Shape(Shape),
    /// The network's implicit input before a layer has fixed it.
    Free,
    /// Hidden by an error already reported.
    Unknown,
}

/// Checks the graph, pushing every mistake to `errors`; the checked network when there are none
/// (here or before).
pub fn check<'a>(
    def: &'a NetworkDef,
    graph: &Graph<'a>,
    errors: &mut Errors,
) -> Option<Checked<'a>> {
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

    let mut shapes: HashMap<NodeIndex, Known> = HashMap::new();
    // For each value of known shape, the layer that chose it (`relu` passes on the shape its input
    // has), so that a mismatch can say where the number comes from.
    let mut shape_set_by: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut value_of: HashMap<NodeIndex, usize> = HashMap::new();
    let mut values: Vec<Value> = Vec::new();
    let mut inputs_checked = Vec::new();
    let mut nodes: Vec<CheckedNode> = Vec::new();
    let mut counters: HashMap<&str, usize> = HashMap::new();
    let mut loss: Option<&Layer> = None;

    for &index in &graph.order {
        let layer = match graph.dag[index] {
            Node::ImplicitInput => {
                shapes.insert(index, Known::Free);
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
                    // Fixed by the first layer.
                    shape: Shape::features(0),
                    producer: None,
                    name: None,
                });
                continue;
            }
            Node::Input { name, layer, grad } => {
                shapes.insert(index, Known::Unknown);
                let op = ops::lookup(&layer.name.to_string()).expect("an input names the input op");
                let Some(args) = arguments(layer, op, errors) else {
                    continue;
                };
                let shape = match (op.shape)(&ShapeIn {
                    layer: &layer.describe(),
                    args: &args,
                    inputs: &[],
                }) {
                    Ok(shape) => shape,
                    Err(problem) => {
                        errors.push(syn::Error::new_spanned(
                            layer,
                            format!("{}: {problem}", layer.describe()),
                        ));
                        continue;
                    }
                };
                shapes.insert(index, Known::Shape(shape.clone()));
                shape_set_by.insert(index, index);
                value_of.insert(index, values.len());
                let name = name.map(|name| name.unraw().to_string());
                inputs_checked.push((
                    index,
                    CheckedInput {
                        value: values.len(),
                        name: name.clone(),
                        grad,
                    },
                ));
                values.push(Value {
                    shape,
                    producer: None,
                    name,
                });
                continue;
            }
            Node::Layer(layer) => layer,
        };
        shapes.insert(index, Known::Unknown);
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

        let Some(op) = resolve(layer, errors) else {
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
            value_count(layer, op, errors).then(|| Args(Vec::new()))
        } else {
            arguments(layer, op, errors)
        };
        let Some(args) = args else {
            continue;
        };
        let Some(params) = parameters(layer, op, &args, errors) else {
            continue;
        };
        if inputs.is_empty() || graph.broken.contains(&index) {
            // An input that did not resolve; the graph stage said why.
            continue;
        }

        // The shape rule: what the op takes, against what flows in.
        let mut incoming = Vec::with_capacity(inputs.len());
        for &input in &inputs {
            let shape = match &shapes[&input] {
                Known::Shape(shape) => shape.clone(),
                Known::Unknown => break,
                Known::Free => match op.fixes_input {
                    Some(fixes) => {
                        let shape = fixes(&args);
                        values[value_of[&input]].shape = shape.clone();
                        shapes.insert(input, Known::Shape(shape.clone()));
                        shape
                    }
                    None => {
                        let images = matches!(op.kernels, Kernels::Conv(_) | Kernels::Pool(_));
                        let message = if images {
                            format!(
                                "the network's input shape is unknown: `{}` works on images of \
                                 any size, so the network must begin with its input, such as \
                                 `input(1, 28, 28) -> {}` (channels, height, width)",
                                layer.describe(),
                                layer.describe()
                            )
                        } else {
                            format!(
                                "the network's input width is unknown: `{}` takes any width, so \
                                 the network must begin with a layer that fixes it, such as \
                                 `affine(784, 50)`, or with its input: `input(784) -> {}`",
                                layer.describe(),
                                layer.describe()
                            )
                        };
                        errors.push(syn::Error::new_spanned(layer, message));
                        break;
                    }
                },
            };
            incoming.push(Incoming {
                shape,
                from: describe(graph, input),
                set_by: set_by(graph, input, &shape_set_by),
            });
        }
        // Where the inputs are unknown or do not fit, an output its arguments alone fix (an
        // affine's `out` features) still lets the consumers check their shapes against it.
        let fixed_output =
            |shapes: &mut HashMap<NodeIndex, Known>,
             shape_set_by: &mut HashMap<NodeIndex, NodeIndex>| {
                if let Some(fixes) = op.fixes_output {
                    shapes.insert(index, Known::Shape(fixes(&args)));
                    shape_set_by.insert(index, index);
                }
            };
        if incoming.len() < inputs.len() {
            fixed_output(&mut shapes, &mut shape_set_by);
            continue;
        }
        let described = layer.describe();
        let shape = match (op.shape)(&ShapeIn {
            layer: &described,
            args: &args,
            inputs: &incoming,
        }) {
            Ok(shape) => shape,
            Err(message) => {
                errors.push(syn::Error::new_spanned(layer, message));
                fixed_output(&mut shapes, &mut shape_set_by);
                continue;
            }
        };
        let params = with_channels(params, op, &incoming[0].shape);
        // An op without parameters that gives what it takes passes on where the shape was chosen.
        let setter = if params.is_empty() && shape == incoming[0].shape {
            shape_set_by.get(&inputs[0]).copied()
        } else {
            Some(index)
        };
        shapes.insert(index, Known::Shape(shape.clone()));
        if let Some(setter) = setter {
            shape_set_by.insert(index, setter);
        }
        // A node is built only if it and everything upstream of it is sound. Otherwise an error
        // has been reported already; its shape (when known) still lets consumers check theirs.
        let built_inputs: Option<Vec<usize>> =
            inputs.iter().map(|i| value_of.get(i).copied()).collect();
        let Some(inputs) = built_inputs else {
            continue;
        };

        let counter = counters.entry(op.name).or_default();
        let ident = format!("{}{}", op.name, counter);
        *counter += 1;
        let output = values.len();
        values.push(Value {
            shape,
            producer: Some(nodes.len()),
            name: graph.names.get(&index).map(|name| name.unraw().to_string()),
        });
        value_of.insert(index, output);
        nodes.push(CheckedNode {
            layer,
            op,
            ident,
            args,
            inputs,
            output,
            params,
        });
    }

    if let Form::Item {
        gradcheck: Some(attr),
        ..
    } = &def.form
        && loss.is_none()
        && graph.output.is_some()
    {
        errors.push(syn::Error::new_spanned(
            attr,
            "`#[gradcheck]` checks the gradients of a loss: end the network in \
             `softmax_cross_entropy` or `mse`",
        ));
    }
    if !errors.is_empty() {
        return None;
    }

    // Without errors every node was built. The network returns the graph's output, or what flows
    // into it when it is the loss.
    let Some(&output_node) = graph.output.and_then(|output| value_of.get(&output)) else {
        errors.push(syn::Error::new(
            Span::call_site(),
            "internal error in `network!`: the output was not built, yet no error was found",
        ));
        return None;
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
            let Some(sum) = param_count.checked_add(count) else {
                errors.push(syn::Error::new_spanned(
                    node.layer,
                    format!(
                        "the network's parameters would be more elements than this machine can \
                         address; the count overflows at {}'s {}",
                        node.layer.describe(),
                        param.name
                    ),
                ));
                return None;
            };
            param_count = sum;
        }
    }

    Some(Checked {
        name,
        elem,
        values,
        inputs: inputs_checked,
        nodes,
        output,
        param_count,
    })
}

/// The layer's arguments, read by their kinds against the op's argument list: in order, or by
/// name (`alpha = 0.1`), defaults filled in for those left out.
fn arguments(layer: &Layer, op: &OpSpec, errors: &mut Errors) -> Option<Args> {
    let given: Vec<&Argument> = layer.arguments().collect();
    if let [
        spec @ ArgSpec {
            kind: ArgKind::Dims,
            ..
        },
    ] = op.args
    {
        return dims_argument(layer, spec, &given, errors);
    }
    let mut slots: Vec<Option<&Expr>> = vec![None; op.args.len()];
    let mut ok = true;
    let mut named = false;
    let mut positional = 0;
    let op_name = &layer.name;
    for &argument in &given {
        let expr = &argument.value;
        if let Some((name, _)) = &argument.name {
            let value = expr;
            named = true;
            match op.args.iter().position(|spec| name == spec.name) {
                Some(i) if slots[i].is_some() => {
                    errors.push(syn::Error::new_spanned(
                        name,
                        format!("`{op_name}`'s `{name}` is given twice"),
                    ));
                    ok = false;
                }
                Some(i) => slots[i] = Some(value),
                None => {
                    let known = if op.args.is_empty() {
                        format!("`{op_name}` takes no arguments")
                    } else {
                        format!("its arguments are: {}", signature(op))
                    };
                    errors.push(syn::Error::new_spanned(
                        name,
                        format!("`{op_name}` has no argument `{name}`; {known}"),
                    ));
                    ok = false;
                }
            }
        } else if named {
            errors.push(syn::Error::new_spanned(
                expr,
                "arguments in order come before named ones (`name = value`)",
            ));
            ok = false;
        } else {
            if let Some(slot) = slots.get_mut(positional) {
                *slot = Some(expr);
            }
            positional += 1;
        }
    }
    let required = op.args.iter().filter(|spec| spec.default.is_none()).count();
    let missing = op
        .args
        .iter()
        .zip(&slots)
        .any(|(spec, slot)| spec.default.is_none() && slot.is_none());
    if positional > op.args.len() || (missing && !named) {
        let wants = match (op.args.len(), required) {
            (0, _) => "no arguments".to_owned(),
            (1, 1) => format!("1 argument ({})", signature(op)),
            (n, r) if n == r => format!("{n} arguments ({})", signature(op)),
            (n, 0) => format!("at most {n} argument{} ({})", plural(n), signature(op)),
            (n, r) => format!("{r} to {n} arguments ({})", signature(op)),
        };
        match &layer.args {
            Some((paren, _)) => errors.push(syn::Error::new(
                paren.span.join(),
                format!(
                    "`{op_name}` takes {wants}, but {} {} given",
                    given.len(),
                    if given.len() == 1 { "was" } else { "were" }
                ),
            )),
            None => errors.push(syn::Error::new_spanned(
                op_name,
                format!(
                    "`{op_name}` takes {wants}: write `{op_name}({})`",
                    op.args
                        .iter()
                        .filter(|spec| spec.default.is_none())
                        .map(|spec| spec.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
        return None;
    }
    for (spec, slot) in op.args.iter().zip(&slots) {
        if spec.default.is_none() && slot.is_none() {
            errors.push(syn::Error::new_spanned(
                layer,
                format!(
                    "`{op_name}` needs its `{}`, as in `{op_name}({})`",
                    spec.name,
                    signature(op)
                ),
            ));
            ok = false;
        }
    }
    let mut values: Vec<ArgValue> = Vec::with_capacity(op.args.len());
    for (spec, slot) in op.args.iter().zip(slots) {
        let value = match slot {
            // A default that is another argument's value: that argument comes earlier.
            None => match &spec.default {
                Some(ArgValue::SameAs(index)) => values.get(*index).cloned(),
                default => default.clone(),
            },
            Some(expr) => match read_argument(expr, spec.kind) {
                Ok(value) => Some(value),
                Err(problem) => {
                    errors.push(syn::Error::new_spanned(
                        expr,
                        format!("`{op_name}`'s `{}` {problem}", spec.name),
                    ));
                    None
                }
            },
        };
        match value {
            Some(value) => values.push(value),
            None => ok = false,
        }
    }
    ok.then_some(Args(values))
}

/// An input's shape: one to three dimensions, written in order.
fn dims_argument(
    layer: &Layer,
    spec: &ArgSpec,
    given: &[&Argument],
    errors: &mut Errors,
) -> Option<Args> {
    let op_name = &layer.name;
    if given.is_empty() || given.len() > MAX_RANK {
        let problem = format!(
            "`{op_name}` takes its shape: 1 to {MAX_RANK} dimensions, as in `{op_name}(784)` or \
             `{op_name}(1, 28, 28)` (channels, height, width)"
        );
        match &layer.args {
            Some((paren, _)) => errors.push(syn::Error::new(
                paren.span.join(),
                format!(
                    "{problem}, but {} {} given",
                    given.len(),
                    if given.len() == 1 { "was" } else { "were" }
                ),
            )),
            None => errors.push(syn::Error::new_spanned(op_name, problem)),
        }
        return None;
    }
    let mut dims = Vec::with_capacity(given.len());
    let mut ok = true;
    for &argument in given {
        let expr = &argument.value;
        let read = match &argument.name {
            Some((name, _)) => Err(format!(
                "is written as dimensions in order, as in `{op_name}(1, 28, 28)`, not by name \
                 (`{name} = ...`)"
            )),
            None => whole(expr, 1),
        };
        match read {
            Ok(dim) => dims.push(dim),
            Err(problem) => {
                errors.push(syn::Error::new_spanned(
                    expr,
                    format!("`{op_name}`'s {} {problem}", spec.name),
                ));
                ok = false;
            }
        }
    }
    ok.then(|| Args(vec![ArgValue::Dims(dims)]))
}

/// The op's arguments for a message: `in, out`, `alpha = 0.01`.
fn signature(op: &OpSpec) -> String {
    op.args
        .iter()
        .map(|spec| match &spec.default {
            None => spec.name.to_owned(),
            Some(ArgValue::Whole(value)) => format!("{} = {value}", spec.name),
            Some(ArgValue::Real(value)) => format!("{} = {value}", spec.name),
            Some(ArgValue::Dims(_)) => spec.name.to_owned(),
            Some(ArgValue::Flag(value)) => format!("{} = {value}", spec.name),
            Some(ArgValue::SameAs(index)) => format!("{} = {}", spec.name, op.args[*index].name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// An argument of the given kind, or what is wrong with it (completing "`op`'s `arg` ...").
fn read_argument(expr: &Expr, kind: ArgKind) -> Result<ArgValue, String> {
    match kind {
        ArgKind::Whole { min } => whole(expr, min).map(ArgValue::Whole),
        ArgKind::Real { min, max } => real(expr, min, max).map(ArgValue::Real),
        ArgKind::Dims => whole(expr, 1).map(|dim| ArgValue::Dims(vec![dim])),
        ArgKind::Flag => flag(expr).map(ArgValue::Flag),
    }
}

/// `true` or `false`.
fn flag(expr: &Expr) -> Result<bool, String> {
    match expr {
        Expr::Group(group) => flag(&group.expr),
        Expr::Lit(ExprLit {
            lit: Lit::Bool(value),
            ..
        }) => Ok(value.value),
        _ => Err(format!(
            "must be `true` or `false`, not `{}`",
            quote::ToTokens::to_token_stream(expr)
                .to_string()
                .replace(' ', "")
        )),
    }
}

/// A whole-number literal of at least `min` that fits in `usize` (a dimension has `min = 1`).
fn whole(expr: &Expr, min: usize) -> Result<usize, String> {
    let written = || quote::ToTokens::to_token_stream(expr).to_string();
    let at_least = if min == 1 {
        "a dimension must be at least 1".to_owned()
    } else {
        format!("it must be at least {min}")
    };
    match expr {
        // An invisible group: a `$n:expr` a `macro_rules!` macro passed on.
        Expr::Group(group) => whole(&group.expr, min),
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
                Ok(value) if value < min => Err(format!("is {value}; {at_least}")),
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
                "is negative (`{}`); {at_least}",
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

/// A finite real literal (or a whole one), possibly negative, within the bounds.
fn real(expr: &Expr, min: Bound, max: Bound) -> Result<f64, String> {
    let written = || {
        quote::ToTokens::to_token_stream(expr)
            .to_string()
            .replace(' ', "")
    };
    let (negative, literal) = match expr {
        Expr::Group(group) => return real(&group.expr, min, max),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr: inner,
            ..
        }) => (true, &**inner),
        other => (false, other),
    };
    let literal = match literal {
        Expr::Group(group) => &*group.expr,
        other => other,
    };
    let (digits, suffix) = match literal {
        Expr::Lit(ExprLit {
            lit: Lit::Float(float),
            ..
        }) => (float.base10_digits().to_owned(), float.suffix().to_owned()),
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => (int.base10_digits().to_owned(), int.suffix().to_owned()),
        Expr::Path(path) if path.qself.is_none() => {
            return Err(format!(
                "must be a number written out, such as 0.5, not `{}`: `network!` checks its \
                 arguments before constants have values",
                written()
            ));
        }
        _ => return Err(format!("must be a number such as 0.5, not `{}`", written())),
    };
    if !suffix.is_empty() {
        return Err(format!(
            "is `{}`: write numbers without a type suffix, e.g. `{digits}`",
            written()
        ));
    }
    let magnitude: f64 = digits
        .parse()
        .map_err(|_| format!("must be a number such as 0.5, not `{}`", written()))?;
    if !magnitude.is_finite() {
        return Err(format!(
            "is `{}`, too large to be a finite number",
            written()
        ));
    }
    let value = if negative { -magnitude } else { magnitude };
    let outside = match min {
        Bound::Inclusive(min) if value < min => Some(format!("at least {min}")),
        Bound::Exclusive(min) if value <= min => Some(format!("greater than {min}")),
        _ => None,
    }
    .or(match max {
        Bound::Inclusive(max) if value > max => Some(format!("at most {max}")),
        Bound::Exclusive(max) if value >= max => Some(format!("less than {max}")),
        _ => None,
    });
    match outside {
        Some(range) => Err(format!("is {}; it must be {range}", written())),
        None => Ok(value),
    }
}

/// The op's parameters with their shapes; every element count must fit in `usize`.
fn parameters(
    layer: &Layer,
    op: &OpSpec,
    args: &Args,
    errors: &mut Errors,
) -> Option<Vec<CheckedParam>> {
    let mut params = Vec::with_capacity(op.params.len());
    for spec in op.params {
        let shape: Vec<usize> = match spec.dims {
            ParamDims::Args(dims) => dims.iter().map(|&i| args.whole(i)).collect(),
            // Known once the input's shape is: `with_channels` fills it in.
            ParamDims::Channels => Vec::new(),
        };
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
                // A factor of the weight's element count, which fits.
                fan_in: fan_in.iter().map(|&i| args.whole(i)).product(),
            },
            InitSpec::Zero => ResolvedInit::Zero,
            InitSpec::One => ResolvedInit::One,
        };
        params.push(CheckedParam {
            name: spec.name,
            shape,
            init,
        });
    }
    Some(params)
}

/// `params` with the shapes that follow from the op's input filled in: one per channel (per
/// feature, for a vector).
fn with_channels(mut params: Vec<CheckedParam>, op: &OpSpec, input: &Shape) -> Vec<CheckedParam> {
    for (param, spec) in params.iter_mut().zip(op.params) {
        if let ParamDims::Channels = spec.dims {
            param.shape = vec![input.dims()[0]];
        }
    }
    params
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

/// Where the shape of `node`'s output was chosen, when not by `node` itself: ` (set by
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
        (
            Node::Input {
                name: Some(name), ..
            },
            _,
        ) => format!("the input `{name}`"),
        (Node::Input { layer, .. }, _) => layer.describe(),
        (Node::Layer(_), Some(name)) => format!("`{name}`"),
        (Node::Layer(layer), None) => layer.describe(),
    }
}
