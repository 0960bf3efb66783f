//! ONNX export for chainrule networks: [`save`] writes a generated network to an `.onnx` file that
//! onnxruntime (and any runtime of ONNX opset [`OPSET`]) runs with the network's parameters.
//!
//! ```no_run
//! use chainrule::prelude::*;
//!
//! network! {
//!     pub struct Net { affine(784, 50) -> relu -> affine(50, 10) -> softmax_cross_entropy }
//! }
//!
//! let net = Net::new(Init::He, 42);
//! chainrule_onnx::save(&net, "net.onnx", &chainrule_onnx::Options::default())?;
//! # Ok::<(), chainrule_onnx::Error>(())
//! ```
//!
//! What is written is the inference graph, read from [`Network::GRAPH`]:
//!
//! - the network's inputs, each `batch × its shape` with a named batch dimension (`batch`),
//!   images as `batch × channels × height × width`; the output `output`, the value the loss
//!   would read (the scores); with [`Options::probabilities`] also a softmax of them,
//!   `probabilities`, for a network that ends in `softmax_cross_entropy`;
//! - the parameters as initializers named as in checkpoints (`affine0.weight`), and batch
//!   normalisation's running statistics (`batchnorm0.running_mean`), all in `float` (an `f64`
//!   network's are rounded);
//! - each layer as standard ONNX ops (the table below), named after the layer; the loss is left
//!   out, and so is dropout (nothing is dropped at inference).
//!
//! | chainrule | ONNX |
//! | --- | --- |
//! | `affine(in, out)` | `Gemm` (weight `in × out`; a `Flatten` in front of it on an image) |
//! | `relu`, `sigmoid`, `tanh`, `softmax` | `Relu`, `Sigmoid`, `Tanh`, `Softmax` (last axis) |
//! | `leaky_relu(alpha)`, `elu(alpha)` | `LeakyRelu`, `Elu` with `alpha` |
//! | `add`, `sub`, `mul`, `div` | `Add`, `Sub`, `Mul`, `Div` |
//! | `concat` | `Concat` along axis 1 (the features, or the channels of images) |
//! | `conv2d(in, out, kernel, stride, pad)` | `Conv` (weight `out × in × kernel × kernel`) |
//! | `max_pool`, `avg_pool` | `MaxPool`, `AveragePool` with `count_include_pad = 1` |
//! | `flatten` | `Flatten` (axis 1) |
//! | `batchnorm(momentum, eps)` | `BatchNormalization` with the running statistics, `epsilon` |
//! | `dropout(p)` | nothing |
//! | `softmax_cross_entropy`, `mse` | nothing (the graph ends at their input) |
//!
//! An op with no entry is an [`Error::Unsupported`] naming the layer, never a model that computes
//! something else. Parameters that hold a NaN or an infinity are refused, as in checkpoints.
//!
//! The model's format: ONNX IR version [`IR_VERSION`], the default domain at opset [`OPSET`].
//! The protobuf messages are written with prost from [`proto`] (no `protoc`).

pub mod proto;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chainrule_runtime::graph::{Graph, GraphNode};
use chainrule_runtime::{Element, Network};
use prost::Message;

use proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TensorTypeProto, TypeProto,
    ValueInfoProto, attribute_type, data_type, dimension,
};

/// The ONNX opset the models use (standard domain).
pub const OPSET: i64 = 17;
/// The ONNX IR version of the files (the one that goes with opset 17).
pub const IR_VERSION: i64 = 8;
/// The name of the batch dimension of every input and output.
pub const BATCH: &str = "batch";

/// Every op of the language that has an ONNX form (the table above); the losses and dropout
/// have an empty one. `input` is not a layer.
pub const OPS: &[&str] = &[
    "affine",
    "relu",
    "sigmoid",
    "tanh",
    "softmax",
    "leaky_relu",
    "elu",
    "add",
    "sub",
    "mul",
    "div",
    "concat",
    "conv2d",
    "max_pool",
    "avg_pool",
    "flatten",
    "batchnorm",
    "dropout",
    "softmax_cross_entropy",
    "mse",
];

/// How a network is exported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Also output `probabilities`, a softmax of the scores (only for a network that ends in
    /// `softmax_cross_entropy`).
    pub probabilities: bool,
}

impl Options {
    /// The scores and the probabilities.
    pub fn with_probabilities() -> Self {
        Options {
            probabilities: true,
        }
    }
}

/// What can go wrong in an export.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A layer ONNX cannot express as chainrule computes it.
    #[error("{network}: layer {layer} ({op}) has no ONNX form: {reason}")]
    Unsupported {
        network: &'static str,
        layer: &'static str,
        op: &'static str,
        reason: String,
    },
    /// Options that do not fit the network.
    #[error("{network}: {reason}")]
    Options {
        network: &'static str,
        reason: String,
    },
    /// A parameter or buffer that the graph names and the network does not visit (a hand-written
    /// [`Network`] whose `GRAPH` does not fit it).
    #[error("{network}: its graph names {name}, which is not among its parameters and buffers")]
    Missing { network: &'static str, name: String },
    /// The network's parameters hold a NaN or an infinity (see [`Network::check_finite`]).
    #[error(transparent)]
    Network(#[from] chainrule_runtime::Error),
    /// Writing the file.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The ONNX model of `net`, as messages.
pub fn to_model<N: Network>(net: &N, options: &Options) -> Result<ModelProto, Error> {
    net.check_finite()?;
    let graph = N::GRAPH;
    let mut tensors = HashMap::new();
    net.for_each_param(&mut |p| {
        tensors.insert(p.name, tensor(p.name, p.shape, p.value));
    });
    net.for_each_buffer(&mut |b| {
        tensors.insert(b.name, tensor(b.name, &[b.value.len()], b.value));
    });
    let mut builder = Builder {
        graph: &graph,
        names: HashMap::new(),
        nodes: Vec::new(),
        initializers: Vec::new(),
        tensors,
    };
    let onnx_graph = builder.build(options)?;
    Ok(ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "chainrule".to_owned(),
        producer_version: env!("CARGO_PKG_VERSION").to_owned(),
        doc_string: format!("{} exported by chainrule", graph.name),
        graph: Some(onnx_graph),
        metadata_props: vec![StringStringEntryProto {
            key: "chainrule.topology".to_owned(),
            value: N::TOPOLOGY.to_owned(),
        }],
    })
}

/// The ONNX file of `net`, as bytes.
pub fn to_bytes<N: Network>(net: &N, options: &Options) -> Result<Vec<u8>, Error> {
    Ok(to_model(net, options)?.encode_to_vec())
}

/// Writes `net` to the ONNX file `path`, atomically: a temporary file beside it, then a rename,
/// so a file already at `path` stays as it was if anything goes wrong.
pub fn save<N: Network>(net: &N, path: impl AsRef<Path>, options: &Options) -> Result<(), Error> {
    let path = path.as_ref();
    let bytes = to_bytes(net, options)?;
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut file = fs::File::create(&partial).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::rename(&partial, path).map_err(io)
}

/// A float tensor named `name`.
fn tensor<T: Element>(name: &str, shape: &[usize], values: &[T]) -> TensorProto {
    let mut raw_data = Vec::with_capacity(values.len() * 4);
    for v in values {
        raw_data.extend_from_slice(&(Element::to_f64(*v) as f32).to_le_bytes());
    }
    TensorProto {
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: data_type::FLOAT,
        name: name.to_owned(),
        raw_data,
    }
}

/// A `float` tensor type of `batch ×` `shape`.
fn value_info(name: &str, shape: &[usize]) -> ValueInfoProto {
    let batch = Dimension {
        value: Some(dimension::Value::DimParam(BATCH.to_owned())),
    };
    let dims = shape.iter().map(|&d| Dimension {
        value: Some(dimension::Value::DimValue(d as i64)),
    });
    ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto {
                    dim: std::iter::once(batch).chain(dims).collect(),
                }),
            }),
        }),
        doc_string: String::new(),
    }
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: attribute_type::INT,
        i,
        ..Default::default()
    }
}

fn float(name: &str, f: f64) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: attribute_type::FLOAT,
        f: f as f32,
        ..Default::default()
    }
}

fn ints(name: &str, ints: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: attribute_type::INTS,
        ints: ints.iter().map(|&i| i as i64).collect(),
        ..Default::default()
    }
}

/// The ONNX graph under construction.
struct Builder<'g> {
    graph: &'g Graph,
    /// Each value's tensor name in the ONNX graph, once it has one.
    names: HashMap<usize, String>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// The network's parameters and buffers by name, until a node takes them.
    tensors: HashMap<&'static str, TensorProto>,
}

impl Builder<'_> {
    fn build(&mut self, options: &Options) -> Result<GraphProto, Error> {
        let graph = self.graph;
        let network = graph.name;
        if options.probabilities && graph.loss().is_none_or(|l| l.op != "softmax_cross_entropy") {
            return Err(Error::Options {
                network,
                reason: "probabilities are a softmax of class scores, and the network does not \
                         end in softmax_cross_entropy"
                    .to_owned(),
            });
        }
        let mut inputs = Vec::new();
        for input in graph.inputs {
            self.names.insert(input.value, input.name.to_owned());
            inputs.push(value_info(input.name, graph.shape(input.value)));
        }
        // The value `forward` returns is called `output`; a dropout passes its input's name on.
        let output = self.passed_through(graph.output);
        for node in graph.inference_nodes() {
            if node.op == "dropout" {
                let name = self.name(node.inputs[0]);
                self.names.insert(node.output, name);
                continue;
            }
            let name = if node.output == output {
                "output".to_owned()
            } else {
                node.name.to_owned()
            };
            self.layer(node, name.clone())?;
            self.names.insert(node.output, name);
        }
        if self.name(graph.output) != "output" {
            // The output is an input (`input(784) -> mse`) or is read through dropouts only.
            let from = self.name(graph.output);
            self.push(
                "Identity",
                "output",
                vec![from],
                "output".to_owned(),
                vec![],
            );
        }
        let shape = graph.shape(graph.output);
        let mut outputs = vec![value_info("output", shape)];
        if options.probabilities {
            self.push(
                "Softmax",
                "probabilities",
                vec!["output".to_owned()],
                "probabilities".to_owned(),
                vec![int("axis", -1)],
            );
            outputs.push(value_info("probabilities", shape));
        }
        Ok(GraphProto {
            node: std::mem::take(&mut self.nodes),
            name: network.to_owned(),
            initializer: std::mem::take(&mut self.initializers),
            doc_string: String::new(),
            input: inputs,
            output: outputs,
        })
    }

    /// The value whose tensor `value` is: itself, or what a chain of dropouts passes on.
    fn passed_through(&self, mut value: usize) -> usize {
        while let Some(node) = self.graph.nodes.iter().find(|n| n.output == value) {
            if node.op != "dropout" {
                break;
            }
            value = node.inputs[0];
        }
        value
    }

    fn name(&self, value: usize) -> String {
        self.names[&value].clone()
    }

    fn push(
        &mut self,
        op_type: &str,
        name: &str,
        input: Vec<String>,
        output: String,
        attribute: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            input,
            output: vec![output],
            name: name.to_owned(),
            op_type: op_type.to_owned(),
            attribute,
            doc_string: String::new(),
        });
    }

    /// The initializer `{layer}.{what}`, by name.
    fn initializer(&mut self, node: &GraphNode, what: &str) -> Result<String, Error> {
        let name = format!("{}.{what}", node.name);
        let tensor = self
            .tensors
            .remove(name.as_str())
            .ok_or_else(|| Error::Missing {
                network: self.graph.name,
                name: name.clone(),
            })?;
        self.initializers.push(tensor);
        Ok(name)
    }

    /// `node` as ONNX nodes, the last one writing `output`.
    fn layer(&mut self, node: &GraphNode, output: String) -> Result<(), Error> {
        let unsupported = |reason: &str| Error::Unsupported {
            network: self.graph.name,
            layer: node.name,
            op: node.op,
            reason: reason.to_owned(),
        };
        let mut input: Vec<String> = node.inputs.iter().map(|&v| self.name(v)).collect();
        let whole = |arg: &str| {
            node.whole(arg)
                .ok_or_else(|| unsupported(&format!("it has no whole-number argument `{arg}`")))
        };
        let mut attributes = Vec::new();
        let op_type = match node.op {
            "affine" => {
                if self.graph.shape(node.inputs[0]).len() > 1 {
                    let flat = format!("{}.flatten", node.name);
                    self.push("Flatten", &flat, input, flat.clone(), vec![int("axis", 1)]);
                    input = vec![flat];
                }
                input.push(self.initializer(node, "weight")?);
                input.push(self.initializer(node, "bias")?);
                "Gemm"
            }
            "relu" => "Relu",
            "sigmoid" => "Sigmoid",
            "tanh" => "Tanh",
            "softmax" => {
                attributes.push(int("axis", -1));
                "Softmax"
            }
            "leaky_relu" | "elu" => {
                let alpha = node
                    .real("alpha")
                    .ok_or_else(|| unsupported("it has no argument `alpha`"))?;
                attributes.push(float("alpha", alpha));
                if node.op == "elu" { "Elu" } else { "LeakyRelu" }
            }
            "add" => "Add",
            "sub" => "Sub",
            "mul" => "Mul",
            "div" => "Div",
            "concat" => {
                attributes.push(int("axis", 1));
                "Concat"
            }
            "flatten" => {
                attributes.push(int("axis", 1));
                "Flatten"
            }
            "conv2d" => {
                let (kernel, stride, pad) = (whole("kernel")?, whole("stride")?, whole("pad")?);
                input.push(self.initializer(node, "weight")?);
                input.push(self.initializer(node, "bias")?);
                attributes.extend([
                    ints("kernel_shape", &[kernel, kernel]),
                    ints("strides", &[stride, stride]),
                    ints("pads", &[pad; 4]),
                ]);
                "Conv"
            }
            "max_pool" | "avg_pool" => {
                let (window, stride, pad) = (whole("window")?, whole("stride")?, whole("pad")?);
                attributes.extend([
                    ints("kernel_shape", &[window, window]),
                    ints("strides", &[stride, stride]),
                    ints("pads", &[pad; 4]),
                ]);
                if node.op == "max_pool" {
                    "MaxPool"
                } else {
                    // chainrule's average counts the padding's zeros, as PyTorch's default does.
                    attributes.push(int("count_include_pad", 1));
                    "AveragePool"
                }
            }
            "batchnorm" => {
                let eps = node
                    .real("eps")
                    .ok_or_else(|| unsupported("it has no argument `eps`"))?;
                for what in ["gamma", "beta", "running_mean", "running_var"] {
                    input.push(self.initializer(node, what)?);
                }
                attributes.push(float("epsilon", eps));
                "BatchNormalization"
            }
            _ => return Err(unsupported("no ONNX op computes it")),
        };
        self.push(op_type, node.name, input, output, attributes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chainrule_runtime::graph::{ArgValue, GraphArg, GraphInput};

    /// A graph with one layer of `op` on an input of 4 features.
    fn one_layer(op: &'static str, args: &'static [GraphArg]) -> Graph {
        Graph {
            name: "Net",
            values: &[&[4], &[4]],
            inputs: &[GraphInput {
                name: "input",
                value: 0,
            }],
            nodes: Box::leak(Box::new([GraphNode {
                op,
                name: "layer0",
                args,
                inputs: &[0],
                output: 1,
                loss: false,
            }])),
            output: 1,
        }
    }

    fn build(graph: &Graph) -> Result<GraphProto, Error> {
        Builder {
            graph,
            names: HashMap::new(),
            nodes: Vec::new(),
            initializers: Vec::new(),
            tensors: HashMap::new(),
        }
        .build(&Options::default())
    }

    #[test]
    fn an_op_without_an_onnx_form_is_refused_by_name() {
        let err = build(&one_layer("swish", &[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Net: layer layer0 (swish) has no ONNX form: no ONNX op computes it"
        );
    }

    /// Each op of [`OPS`] that is a layer of the inference graph has an arm in `layer` (what
    /// it reports is another error: this graph gives it no arguments and no parameters).
    #[test]
    fn every_op_listed_has_an_onnx_form() {
        for &op in OPS {
            if ["dropout", "softmax_cross_entropy", "mse"].contains(&op) {
                continue;
            }
            if let Err(err) = build(&one_layer(op, &[])) {
                assert!(
                    !err.to_string().contains("no ONNX op computes it"),
                    "{op}: {err}"
                );
            }
        }
    }

    #[test]
    fn an_op_missing_an_argument_is_refused() {
        let err = build(&one_layer("elu", &[])).unwrap_err();
        assert!(err.to_string().contains("no argument `alpha`"), "{err}");
        let args = &[GraphArg {
            name: "alpha",
            value: ArgValue::Real(0.5),
        }];
        let graph = build(&one_layer("elu", args)).unwrap();
        assert_eq!(graph.node[0].op_type, "Elu");
        assert_eq!(graph.node[0].attribute[0].f, 0.5);
        assert_eq!(graph.output[0].name, "output");
    }

    #[test]
    fn a_parameter_the_network_lacks_is_named() {
        let args = &[
            GraphArg {
                name: "in",
                value: ArgValue::Whole(4),
            },
            GraphArg {
                name: "out",
                value: ArgValue::Whole(4),
            },
        ];
        let err = build(&one_layer("affine", args)).unwrap_err();
        assert!(err.to_string().contains("layer0.weight"), "{err}");
    }
}
