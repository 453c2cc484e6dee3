//! ONNX export written from the model's own structure: each layer adds its nodes to an
//! [`OnnxGraph`] (see `onnx()` in `model/`), weights become initializers under their state-dict
//! names, and the graph is serialised with a small protobuf writer ([`proto`]) — libtorch has no
//! C++ ONNX exporter. Operators of opset 17: Conv, BatchNormalization (inference), Relu, Add,
//! MaxPool, GlobalAveragePool, Flatten, Gemm, Identity.

pub mod proto;

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use proto::Message;

pub const OPSET: i64 = 17;
const IR_VERSION: i64 = 8;
const FLOAT: i64 = 1;
const INT64: i64 = 7;

/// An attribute value.
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

/// A graph under construction.
pub struct OnnxGraph {
    nodes: Vec<Message>,
    initializers: Vec<Message>,
    /// State-dict names of the model's tensors, by storage address.
    names: HashMap<usize, String>,
    used: HashMap<String, usize>,
    counter: usize,
}

impl OnnxGraph {
    /// A graph whose initializers are named after `variables` (the model's state dict).
    pub fn new(variables: &HashMap<String, Tensor>) -> Self {
        let names = variables.iter().map(|(k, t)| (t.data_ptr() as usize, k.clone())).collect();
        OnnxGraph { nodes: Vec::new(), initializers: Vec::new(), names, used: HashMap::new(), counter: 0 }
    }

    /// A fresh name for an intermediate value.
    pub fn value(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Adds `t` as an initializer (once) and returns its name: its state-dict key when it has one.
    pub fn weight(&mut self, t: &Tensor) -> Result<String> {
        let key = t.data_ptr() as usize;
        let name = self.names.get(&key).cloned().unwrap_or_else(|| format!("const_{key:x}"));
        if self.used.contains_key(&name) {
            return Ok(name);
        }
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let (kind, data_type) = match t.kind() {
            Kind::Int64 => (Kind::Int64, INT64),
            _ => (Kind::Float, FLOAT),
        };
        let t = t.to_kind(kind);
        let numel = t.numel();
        let mut raw = vec![0u8; numel * kind.elt_size_in_bytes()];
        t.f_copy_data_u8(&mut raw, numel)?;
        let mut m = Message::default();
        m.packed_ints(1, &t.size()).int(2, data_type).str(8, &name).bytes(9, &raw);
        self.initializers.push(m);
        self.used.insert(name.clone(), self.initializers.len());
        Ok(name)
    }

    /// Adds one node; returns its output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let out = self.value(&op.to_lowercase());
        let mut m = Message::default();
        for i in inputs {
            m.str(1, i);
        }
        m.str(2, &out).str(3, &out).str(4, op);
        for (name, value) in attrs {
            let mut a = Message::default();
            a.str(1, name);
            match value {
                Attr::Int(v) => a.int(20, 2).int(3, *v),
                Attr::Float(v) => a.int(20, 1).float(2, *v),
                Attr::Ints(v) => a.int(20, 7).packed_ints(8, v),
            };
            m.message(5, &a);
        }
        self.nodes.push(m);
        out
    }

    /// The model file: input `images` [batch, 3, size, size] (float32, any batch), the given outputs
    /// renamed as asked, each [batch, width].
    pub fn finish(mut self, input: &str, size: i64, outputs: &[(String, String, i64)]) -> Vec<u8> {
        let value_info = |name: &str, dims: &[Result<i64, &str>]| {
            let mut shape = Message::default();
            for d in dims {
                let mut dim = Message::default();
                match d {
                    Ok(v) => dim.int(1, *v),
                    Err(param) => dim.str(2, param),
                };
                shape.message(1, &dim);
            }
            let mut tensor = Message::default();
            tensor.int(1, FLOAT).message(2, &shape);
            let mut ty = Message::default();
            ty.message(1, &tensor);
            let mut v = Message::default();
            v.str(1, name).message(2, &ty);
            v
        };
        // Identity nodes give the outputs their public names.
        for (value, public, _) in outputs {
            let mut m = Message::default();
            m.str(1, value).str(2, public).str(3, public).str(4, "Identity");
            self.nodes.push(m);
        }
        let mut graph = Message::default();
        for n in &self.nodes {
            graph.message(1, n);
        }
        graph.str(2, "selfcon_encoder");
        for i in &self.initializers {
            graph.message(5, i);
        }
        graph.message(11, &value_info(input, &[Err("batch"), Ok(3), Ok(size), Ok(size)]));
        for (_, public, width) in outputs {
            graph.message(12, &value_info(public, &[Err("batch"), Ok(*width)]));
        }
        let mut opset = Message::default();
        opset.str(1, "").int(2, OPSET);
        let mut model = Message::default();
        model
            .int(1, IR_VERSION)
            .str(2, "selfcon-rs")
            .str(3, env!("CARGO_PKG_VERSION"))
            .message(7, &graph)
            .message(8, &opset);
        model.0
    }
}

/// The error for a part of a model the ONNX writer does not cover yet.
pub fn unsupported(what: &str) -> Error {
    Error::NotImplemented(format!("ONNX export of {what} (ResNet encoders are supported; use --format torchscript)"))
}
