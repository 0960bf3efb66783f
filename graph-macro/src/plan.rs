//! Stage 4: the plan. Decides, as data that `expand` only prints: which nodes fuse (from the
//! properties the op table declares, never by op name here), which gradients are needed and how
//! each backward kernel stores them (set or add), which methods read the batch, where every
//! gradient is stored, and what the network costs per sample in bytes and floating-point
//! operations.
//!
//! Gradient storage: the gradient of an unnamed intermediate value lives from the first step of
//! the backward pass that writes it to the step of its producer, which reads it; gradients whose
//! lifetimes do not overlap share one buffer. The gradients of the output, of the inputs and of
//! every value the description names are kept to the end, for people to read.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use crate::check::Checked;
use crate::errors::Errors;
use crate::ops::{AffineKernels, Cost, CostIn, Epilogue, Kernels};

/// Everything `expand` needs to know beyond the checked network.
pub struct Plan {
    /// Per node of [`Checked::nodes`].
    pub nodes: Vec<NodePlan>,
    /// The nodes whose forward methods `run_forward` calls, in order.
    pub forward: Vec<usize>,
    /// The nodes whose backward methods `run_backward` calls, in order (reverse topological).
    pub backward: Vec<usize>,
    /// Storage for gradients, shared by gradients whose lifetimes do not overlap.
    pub grad_slots: Vec<GradSlot>,
    /// Per value: the slot holding its gradient, if it has one.
    pub grad_slot: Vec<Option<usize>>,
    /// Per value: whether its gradient is still in its slot when the backward pass ends (it is its
    /// slot's last gradient), so that people can read it.
    pub grad_kept: Vec<bool>,
    /// What a sample costs.
    pub cost: NetworkCost,
}

/// What the plan decided for one node.
#[derive(Default)]
pub struct NodePlan {
    /// The activation its forward pass applies as its sums are stored.
    pub epilogue: Option<Fused>,
    /// The node whose forward pass computes this one's (it has no forward method of its own).
    pub fused_into: Option<usize>,
    /// Per input: how its backward method stores that input's gradient; `None`: not computed.
    pub modes: Vec<Option<GradMode>>,
    /// Whether it has a backward method.
    pub backward: bool,
    /// The activation whose backward pass this node's input-gradient product does as well in
    /// `sgd_step`.
    pub gate: Option<Fused>,
    /// The node whose input-gradient product does this one's backward pass in `sgd_step`.
    pub gated_into: Option<usize>,
    /// Whether its forward method reads the batch (one of its inputs is the network's input).
    pub forward_reads_batch: bool,
    /// Whether its backward method (or, for a loss, its loss method) reads the batch.
    pub backward_reads_batch: bool,
}

/// A fusion: the other node, and the op table's kernels for the pair.
#[derive(Clone, Copy)]
pub struct Fused {
    pub node: usize,
    pub epilogue: &'static Epilogue,
}

/// How a backward kernel stores an input's gradient: the first path to reach a value sets its
/// gradient, later ones add to it (the chain rule sums over paths).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradMode {
    Set,
    Add,
}

/// Storage for gradients: `batch × width` elements, holding each of `values` in turn.
pub struct GradSlot {
    /// The widest gradient it holds.
    pub width: usize,
    /// The values whose gradients it holds, in the order the backward pass writes them.
    pub values: Vec<usize>,
}

/// What one sample costs the network.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NetworkCost {
    /// Bytes of the parameters (values only; gradients and optimiser state come on top).
    pub param_bytes: usize,
    /// Bytes of buffers per sample that a forward pass fills: every value, and the copy of the
    /// batch kept for a later backward pass.
    pub inference_bytes: usize,
    /// Bytes of buffers per sample that a training step fills: every value and the gradient slots.
    pub training_bytes: usize,
    /// Floating-point operations per sample of a forward pass (without the loss).
    pub forward_flops: u64,
    /// Floating-point operations per sample of a training step: the forward pass, the loss, and
    /// the backward pass (the gradients that are needed); not the parameter update.
    pub training_flops: u64,
}

pub fn plan(net: &Checked, errors: &mut Errors) -> Option<Plan> {
    let values = net.values.len();
    let loss = net.nodes.last().filter(|node| node.op.is_loss());
    let is_loss_output = |value: usize| loss.is_some_and(|loss| loss.output == value);

    // The gradients nobody needs are not computed.
    let mut needs_grad = vec![false; values];
    for input in &net.inputs {
        needs_grad[input.value] = input.grad;
    }
    for node in &net.nodes {
        needs_grad[node.output] =
            !node.params.is_empty() || node.inputs.iter().any(|&v| needs_grad[v]);
    }
    // A value has a gradient buffer if it needs a gradient, or it is the output (which the loss or
    // `backward_from` writes).
    let has_grad =
        |value: usize| (needs_grad[value] || value == net.output) && !is_loss_output(value);
    // The nodes reading each value, once per argument that reads it.
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); values];
    for (index, node) in net.nodes.iter().enumerate() {
        for &v in &node.inputs {
            readers[v].push(index);
        }
    }

    let mut nodes: Vec<NodePlan> = net.nodes.iter().map(|_| NodePlan::default()).collect();

    // Forward fusion: a product whose one reader is an activation it has an epilogue for.
    for (index, node) in net.nodes.iter().enumerate() {
        let epilogues = node.op.kernels.epilogues();
        let [reader] = readers[node.output][..] else {
            continue;
        };
        let activation = &net.nodes[reader];
        let found = epilogues
            .iter()
            .find(|epilogue| epilogue.activation == activation.op.name);
        if let Some(epilogue) = found
            && activation.inputs.len() == 1
        {
            nodes[index].epilogue = Some(Fused {
                node: reader,
                epilogue,
            });
            nodes[reader].fused_into = Some(index);
        }
    }

    // Backward fusion in `sgd_step`: a product whose input an activation it has an epilogue for
    // produces, when the activation's input and output each have one reader, so that the
    // activation's input gradient is set there and nowhere else.
    for (index, node) in net.nodes.iter().enumerate() {
        let Kernels::Affine(AffineKernels { epilogues, .. }) = node.op.kernels else {
            continue;
        };
        let Some(&output) = node.inputs.first() else {
            continue;
        };
        let Some(activation_index) = net.values[output].producer else {
            continue;
        };
        let activation = &net.nodes[activation_index];
        let Some(&input) = activation.inputs.first() else {
            continue;
        };
        let found = epilogues.iter().find(|epilogue| {
            epilogue.activation == activation.op.name && epilogue.gated_backward_input.is_some()
        });
        if let Some(epilogue) = found
            && activation.inputs.len() == 1
            && needs_grad[output]
            && needs_grad[input]
            && readers[output].len() == 1
            && readers[input].len() == 1
        {
            nodes[index].gate = Some(Fused {
                node: activation_index,
                epilogue,
            });
            nodes[activation_index].gated_into = Some(index);
        }
    }

    // Gradient modes, walking the backward pass: the loss (or `backward_from`) sets the output's
    // gradient first; then each node, in reverse order, sets the gradient of an input it reaches
    // first and adds to it otherwise.
    let mut written = vec![false; values];
    written[net.output] = true;
    let mut backward = Vec::new();
    for (index, node) in net.nodes.iter().enumerate().rev() {
        let plan = &mut nodes[index];
        plan.forward_reads_batch = node
            .inputs
            .iter()
            .any(|&v| net.values[v].producer.is_none());
        if node.op.is_loss() {
            // The loss method reads what flows into the loss.
            plan.backward_reads_batch = plan.forward_reads_batch;
        }
        if node.op.is_loss() || !has_grad(node.output) {
            plan.modes = vec![None; node.inputs.len()];
            continue;
        }
        plan.modes = node
            .inputs
            .iter()
            .map(|&v| {
                needs_grad[v].then(|| {
                    if std::mem::replace(&mut written[v], true) {
                        GradMode::Add
                    } else {
                        GradMode::Set
                    }
                })
            })
            .collect();
        plan.backward = !node.params.is_empty() || plan.modes.iter().any(Option::is_some);
        if plan.backward {
            plan.backward_reads_batch =
                node.op.kernels.backward_reads_inputs() && plan.forward_reads_batch;
            backward.push(index);
        }
    }
    let forward: Vec<usize> = (0..net.nodes.len())
        .filter(|&n| !net.nodes[n].op.is_loss() && nodes[n].fused_into.is_none())
        .collect();

    // Gradient storage. Step 0 of the backward pass writes the output's gradient; step `k` is the
    // `k`-th backward method. A gradient lives from the first step that writes it (in either
    // `gradient` or `sgd_step`) to the step of its producer, which reads it.
    let mut step_of = vec![usize::MAX; net.nodes.len()];
    for (step, &node) in backward.iter().enumerate() {
        step_of[node] = step + 1;
    }
    let mut born = vec![usize::MAX; values];
    born[net.output] = 0;
    for &index in &backward {
        let node = &net.nodes[index];
        for (&v, mode) in node.inputs.iter().zip(&nodes[index].modes) {
            if mode.is_some() {
                born[v] = born[v].min(step_of[index]);
            }
        }
        if let Some(gate) = nodes[index].gate {
            let input = net.nodes[gate.node].inputs[0];
            born[input] = born[input].min(step_of[index]);
        }
    }
    let dies = |value: usize| match net.values[value].producer {
        // The output's gradient stays for another `backward` from the same loss, the network's
        // inputs keep theirs for `input_grad`, and a value people named keeps its gradient for
        // them to read (`for_each_value`); the other gradients are used up within the pass.
        _ if value == net.output || net.values[value].name.is_some() => usize::MAX,
        None => usize::MAX,
        Some(node) if nodes[node].backward => step_of[node],
        // Nothing reads it (a value whose producer needs no backward pass).
        Some(_) => born[value],
    };
    let mut order: Vec<usize> = (0..values).filter(|&v| has_grad(v)).collect();
    order.sort_by_key(|&v| (born[v], v));
    let mut grad_slots: Vec<GradSlot> = Vec::new();
    let mut grad_slot = vec![None; values];
    // Slots in use, by the step after which they are free; free slots by width.
    let mut busy: BinaryHeap<Reverse<(usize, usize)>> = BinaryHeap::new();
    let mut free: BTreeSet<(usize, usize)> = BTreeSet::new();
    for v in order {
        while let Some(&Reverse((free_after, slot))) = busy.peek() {
            if free_after >= born[v] {
                break;
            }
            busy.pop();
            free.insert((grad_slots[slot].width, slot));
        }
        let width = net.values[v].shape.size();
        // The narrowest free slot that is wide enough, or else the widest one (which grows).
        let fits = free.range((width, 0)..).next().copied();
        let widest = free
            .last()
            .and_then(|&(widest, _)| free.range((widest, 0)..).next().copied());
        let slot = match fits.or(widest) {
            Some(key) => {
                free.remove(&key);
                key.1
            }
            None => {
                grad_slots.push(GradSlot {
                    width: 0,
                    values: Vec::new(),
                });
                grad_slots.len() - 1
            }
        };
        grad_slots[slot].width = grad_slots[slot].width.max(width);
        grad_slots[slot].values.push(v);
        busy.push(Reverse((dies(v), slot)));
        grad_slot[v] = Some(slot);
    }
    let mut grad_kept = vec![false; values];
    for slot in &grad_slots {
        if let Some(&last) = slot.values.last() {
            grad_kept[last] = true;
        }
    }

    let cost = match network_cost(net, &nodes, &needs_grad, &grad_slots, is_loss_output) {
        Some(cost) => cost,
        None => {
            errors.push(syn::Error::new(
                proc_macro2::Span::call_site(),
                format!(
                    "`{}` would need more bytes or floating-point operations per sample than a \
                     64-bit count holds",
                    net.name
                ),
            ));
            return None;
        }
    };

    Some(Plan {
        nodes,
        forward,
        backward,
        grad_slots,
        grad_slot,
        grad_kept,
        cost,
    })
}

/// What a sample costs, from the op table's cost rules and the buffers; `None` if a count
/// overflows.
fn network_cost(
    net: &Checked,
    nodes: &[NodePlan],
    needs_grad: &[bool],
    grad_slots: &[GradSlot],
    is_loss_output: impl Fn(usize) -> bool,
) -> Option<NetworkCost> {
    let elem: usize = if net.elem == "f64" { 8 } else { 4 };
    let bytes = |elements: usize| elements.checked_mul(elem);
    let param_bytes = bytes(net.param_count)?;
    let mut values = 0usize;
    for (v, value) in net.values.iter().enumerate() {
        if value.producer.is_some() && !is_loss_output(v) {
            values = values.checked_add(value.shape.size())?;
        }
    }
    let batch: usize = net.inputs.iter().try_fold(0usize, |sum, input| {
        sum.checked_add(net.values[input.value].shape.size())
    })?;
    let grads = grad_slots
        .iter()
        .try_fold(0usize, |sum, slot| sum.checked_add(slot.width))?;
    let mut forward_flops = 0u64;
    let mut training_flops = 0u64;
    for (node, plan) in net.nodes.iter().zip(nodes) {
        let Cost {
            forward,
            input_grad,
            param_grad,
        } = (node.op.cost)(&CostIn {
            args: &node.args,
            output: &net.values[node.output].shape,
        });
        if !node.op.is_loss() {
            forward_flops = forward_flops.checked_add(forward)?;
        }
        let grads_needed = if node.op.is_loss() {
            u64::from(needs_grad[node.inputs[0]])
        } else {
            plan.modes.iter().filter(|mode| mode.is_some()).count() as u64
        };
        training_flops = training_flops
            .checked_add(forward)?
            .checked_add(input_grad.checked_mul(grads_needed)?)?
            .checked_add(param_grad)?;
    }
    Some(NetworkCost {
        param_bytes,
        inference_bytes: bytes(values.checked_add(batch)?)?,
        training_bytes: bytes(values.checked_add(grads)?)?,
        forward_flops,
        training_flops,
    })
}
