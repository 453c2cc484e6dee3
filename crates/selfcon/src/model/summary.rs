//! Parameter and buffer counts per part of a model, read off its var store by the official
//! state-dict names (`encoder.*` minus `encoder.selfcon_layer.*` = backbone, ...).

use std::collections::BTreeMap;

use serde::Serialize;
use tch::nn::VarStore;

use super::config::ModelConfig;

const SUBNET_PREFIX: &str = "encoder.selfcon_layer.";
const BN_BUFFERS: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelSummary {
    pub backbone_params: i64,
    pub subnetwork_params: i64,
    pub head_params: i64,
    pub sub_heads_params: i64,
    pub total_params: i64,
    pub bn_buffers_total: i64,
    /// `Linear(d, n_cls)` trained by linear evaluation on the pooled backbone features.
    pub linear_classifier_params: i64,
    /// Parameters of each enabled exit's sub-network, keyed by exit candidate index.
    pub exit_params: BTreeMap<usize, i64>,
}

impl ModelSummary {
    pub fn of(vs: &VarStore, config: &ModelConfig) -> Self {
        let mut s = ModelSummary {
            backbone_params: 0,
            subnetwork_params: 0,
            head_params: 0,
            sub_heads_params: 0,
            total_params: 0,
            bn_buffers_total: 0,
            linear_classifier_params: super::head::LinearClassifier::param_count(
                config.architecture,
                config.feature_dim(),
                config.num_classes(),
            ),
            exit_params: config.exits.enabled().into_iter().map(|k| (k, 0)).collect(),
        };
        for (name, tensor) in vs.variables() {
            let n = tensor.numel() as i64;
            let leaf = name.rsplit('.').next().unwrap_or("");
            if BN_BUFFERS.contains(&leaf) {
                s.bn_buffers_total += n;
                continue;
            }
            s.total_params += n;
            if let Some(rest) = name.strip_prefix(SUBNET_PREFIX) {
                s.subnetwork_params += n;
                if let Some(k) = rest.split('.').next().and_then(|k| k.parse().ok()) {
                    *s.exit_params.entry(k).or_default() += n;
                }
            } else if name.starts_with("encoder.") {
                s.backbone_params += n;
            } else if name.starts_with("head.") {
                s.head_params += n;
            } else if name.starts_with("sub_heads.") {
                s.sub_heads_params += n;
            }
        }
        s
    }
}

/// Every variable's name and shape, as the keys of the official checkpoint's `model` entry.
pub fn state_dict_shapes(vs: &VarStore) -> BTreeMap<String, Vec<i64>> {
    vs.variables().into_iter().map(|(name, t)| (name, t.size())).collect()
}
