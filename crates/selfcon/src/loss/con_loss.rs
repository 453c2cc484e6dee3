//! `ConLoss` (SPEC §4.1): the supervised contrastive loss of SupCon, generalised by SelfCon to
//! sub-network anchors. Input `[R, V, D]` (rows × views × dim), already L2-normalised.

use serde::{Deserialize, Serialize};
use strum::{Display, EnumIter, EnumMessage, IntoStaticStr};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// Which rows are anchors (`contrast_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Display, IntoStaticStr, EnumIter, EnumMessage)]
#[strum(serialize_all = "lowercase")]
pub enum ContrastMode {
    /// Every row of every view.
    #[default]
    All,
    /// Only view 0.
    One,
}

crate::named_enum!(ContrastMode, "contrast_mode", "contrast mode");

/// Who is a positive of whom, over the base images.
#[derive(Debug, Clone, Copy)]
pub enum Positives<'a> {
    /// Same label ⇒ positive. Int64 `[B_m]`.
    Labels(&'a Tensor),
    /// Explicit `[B_m, B_m]` 0/1 mask.
    Mask(&'a Tensor),
    /// Only the same image (SimCLR / unsupervised).
    SameImage,
}

/// The official call flags besides labels/mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConLossFlags {
    /// Drop anchors that have no positive before averaging (SupCon-S).
    pub supcon_s: bool,
    /// Only the sub-network views (all but the last) are anchors (SelfCon-S*).
    pub selfcon_s_fg: bool,
    /// As `selfcon_s_fg`, with rows `[view1; view2]` of `R/2` base images (SelfCon-M*).
    pub selfcon_m_fg: bool,
}

/// The loss value with the number of anchors it averages over (a scalar on the loss's device:
/// with `supcon_s` it is counted there).
#[derive(Debug)]
pub struct ConLossOutput {
    pub loss: Tensor,
    pub anchors: Tensor,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConLoss {
    pub temperature: f64,
    /// Fixed at 0.07 by the official training code, even when `temperature` differs: the loss is
    /// then scaled by `temperature / base_temperature`.
    pub base_temperature: f64,
    pub contrast_mode: ContrastMode,
}

impl Default for ConLoss {
    fn default() -> Self {
        ConLoss { temperature: 0.07, base_temperature: 0.07, contrast_mode: ContrastMode::All }
    }
}

impl ConLoss {
    pub fn new(temperature: f64) -> Self {
        ConLoss { temperature, ..ConLoss::default() }
    }

    pub fn forward(&self, features: &Tensor, positives: Positives<'_>, flags: ConLossFlags) -> Result<Tensor> {
        Ok(self.forward_with_stats(features, positives, flags)?.loss)
    }

    /// Computes the loss. Without `supcon_s`, an anchor with no positive makes the loss NaN, as
    /// in the official code (the caller reports it).
    pub fn forward_with_stats(
        &self,
        features: &Tensor,
        positives: Positives<'_>,
        flags: ConLossFlags,
    ) -> Result<ConLossOutput> {
        let size = features.size();
        let [rows, views, dim] = size[..] else {
            return Err(Error::input(format!("ConLoss features must be [rows, views, dim], got {size:?}")));
        };
        if rows < 1 || views < 1 || dim < 1 {
            return Err(Error::input(format!("ConLoss features must be non-empty, got {size:?}")));
        }
        if !(self.temperature > 0.0) || !(self.base_temperature > 0.0) {
            return Err(Error::input(format!(
                "temperatures must be positive, got {} / {}",
                self.temperature, self.base_temperature
            )));
        }
        let kind = features.kind();
        let device = features.device();
        let sub_anchors = flags.selfcon_s_fg || flags.selfcon_m_fg;
        if sub_anchors && views < 2 {
            return Err(Error::input("selfcon_s_FG/selfcon_m_FG need at least 2 views (sub-networks + backbone)"));
        }
        // Size of the base relation: with selfcon_m_FG the rows are [view1; view2] of rows/2 images.
        let base = if flags.selfcon_m_fg {
            if rows % 2 != 0 {
                return Err(Error::input(format!("selfcon_m_FG needs an even number of rows, got {rows}")));
            }
            rows / 2
        } else {
            rows
        };
        let base_mask = match positives {
            Positives::Labels(labels) => {
                if labels.size() != [base] {
                    return Err(Error::input(format!("labels must have shape [{base}], got {:?}", labels.size())));
                }
                let l = labels.to_device(device).view([-1, 1]);
                l.eq_tensor(&l.transpose(0, 1)).to_kind(kind)
            }
            Positives::Mask(mask) => {
                if mask.size() != [base, base] {
                    return Err(Error::input(format!("mask must have shape [{base}, {base}], got {:?}", mask.size())));
                }
                mask.to_device(device).to_kind(kind)
            }
            Positives::SameImage => Tensor::eye(base, (kind, device)),
        };

        let n = views * rows;
        // View-major rows: row v·R + i holds features[i, v].
        let contrast = features.transpose(0, 1).reshape([n, dim]);
        let anchors = match (sub_anchors, self.contrast_mode) {
            (true, _) => (views - 1) * rows,
            (false, ContrastMode::All) => n,
            (false, ContrastMode::One) => rows,
        };
        let anchor = contrast.narrow(0, 0, anchors);

        let logits = anchor.matmul(&contrast.transpose(0, 1)) / self.temperature;
        // Subtracting the row max changes nothing but keeps exp() finite.
        let (row_max, _) = logits.max_dim(1, true);
        let logits = logits - row_max.detach();

        let tiles = n / base;
        let mask = base_mask.repeat([tiles, tiles]).narrow(0, 0, anchors);
        // Self-exclusion: anchor a is contrast row a.
        let not_self = Tensor::ones([anchors, n], (kind, device)) - Tensor::eye_m(anchors, n, (kind, device));
        let mask = mask * &not_self;

        let exp_logits = logits.exp() * &not_self;
        let log_prob = &logits - exp_logits.sum_dim_intlist(1, true, kind).log();
        let pos_count = mask.sum_dim_intlist(1, false, kind);
        let pos_log_prob = (&mask * log_prob).sum_dim_intlist(1, false, kind);
        let scale = -(self.temperature / self.base_temperature);
        if flags.supcon_s {
            // Anchors without positives are dropped before averaging, by masking on the device
            // (selecting them would read their number on the host, a wait in every step). With no
            // anchor left the mean is 0/0: NaN, which the training loop reports with its step.
            // (Dropped rows divide by 1, not 0, so no 0/0 reaches the gradient; a soft mask keeps
            // its own row sums. Counts and sums of half-precision features in fp32: exact counts.)
            let keep = pos_count.gt(0.0);
            let per_anchor =
                (pos_log_prob / pos_count.where_scalarother(&keep, 1.0)).where_scalarother(&keep, 0.0) * scale;
            let acc = if matches!(kind, Kind::Half | Kind::BFloat16) { Kind::Float } else { kind };
            let kept = keep.sum(acc);
            return Ok(ConLossOutput { loss: (per_anchor.sum(acc) / &kept).to_kind(kind), anchors: kept });
        }
        let per_anchor = pos_log_prob / pos_count * scale;
        Ok(ConLossOutput { loss: per_anchor.mean(kind), anchors: Tensor::full([], anchors, (kind, device)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn normalised(shape: &[i64]) -> Tensor {
        let x = Tensor::randn(shape, (Kind::Double, Device::Cpu));
        &x / x.norm_scalaropt_dim(2, [-1], true)
    }

    /// SPEC §4.6: ∂L/∂Z = (G·Z + Gᵀ·Z) / (τ_b · N) with G = softmax − positive weights, derived
    /// independently of the forward code.
    #[test]
    fn gradient_matches_the_closed_form() {
        tch::manual_seed(7);
        let (rows, views, dim) = (6, 2, 5);
        let x = normalised(&[rows, views, dim]).set_requires_grad(true);
        let labels = Tensor::from_slice(&[0i64, 1, 0, 2, 1, 0]);
        let loss = ConLoss::new(0.1);
        let out = loss.forward(&x, Positives::Labels(&labels), ConLossFlags::default()).unwrap();
        out.backward();
        let autograd = x.grad().transpose(0, 1).reshape([rows * views, dim]);

        let n = rows * views;
        let z = x.detach().transpose(0, 1).reshape([n, dim]);
        let eye = Tensor::eye(n, (Kind::Double, Device::Cpu));
        let s = z.matmul(&z.transpose(0, 1)) / 0.1 - &eye * 1e9;
        let q = s.softmax(1, Kind::Double);
        let l = labels.repeat([views]);
        let pos: Tensor = l.view([-1, 1]).eq_tensor(&l.view([1, -1])).to_kind(Kind::Double) * (1.0 - &eye);
        let w = &pos / pos.sum_dim_intlist(1, true, Kind::Double);
        let g = q - w;
        let closed = (g.matmul(&z) + g.transpose(0, 1).matmul(&z)) / (0.07 * n as f64);
        let diff = (autograd - closed).abs().max().double_value(&[]);
        assert!(diff < 1e-12, "max diff {diff}");
    }

    #[test]
    fn anchor_without_positive_is_nan_unless_dropped() {
        let x = normalised(&[4, 1, 3]);
        let labels = Tensor::from_slice(&[0i64, 0, 1, 2]);
        let loss = ConLoss::new(0.1);
        let plain = loss.forward(&x, Positives::Labels(&labels), ConLossFlags::default()).unwrap();
        assert!(plain.double_value(&[]).is_nan());
        let flags = ConLossFlags { supcon_s: true, ..Default::default() };
        let out = loss.forward_with_stats(&x.set_requires_grad(true), Positives::Labels(&labels), flags).unwrap();
        assert_eq!(out.anchors.double_value(&[]), 2.0);
        assert!(out.loss.double_value(&[]).is_finite());
    }

    #[test]
    fn explicit_mask_equals_labels() {
        let x = normalised(&[5, 2, 4]);
        let labels = Tensor::from_slice(&[0i64, 1, 0, 1, 2]);
        let mask = labels.view([-1, 1]).eq_tensor(&labels.view([1, -1])).to_kind(Kind::Double);
        let loss = ConLoss::new(0.2);
        let a = loss.forward(&x, Positives::Labels(&labels), ConLossFlags::default()).unwrap();
        let b = loss.forward(&x, Positives::Mask(&mask), ConLossFlags::default()).unwrap();
        assert!((a - b).abs().double_value(&[]) < 1e-14);
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        let loss = ConLoss::default();
        let x = normalised(&[4, 2, 3]);
        let e = |r: Result<Tensor>| r.unwrap_err().to_string();
        assert!(e(loss.forward(&normalised(&[4, 3]), Positives::SameImage, ConLossFlags::default()))
            .contains("[rows, views, dim]"));
        let short = Tensor::from_slice(&[0i64, 1]);
        assert!(e(loss.forward(&x, Positives::Labels(&short), ConLossFlags::default()))
            .contains("labels must have shape [4]"));
        let odd = normalised(&[3, 2, 3]);
        let flags = ConLossFlags { selfcon_m_fg: true, ..Default::default() };
        assert!(e(loss.forward(&odd, Positives::SameImage, flags)).contains("even number of rows"));
        let one_view = normalised(&[4, 1, 3]);
        let flags = ConLossFlags { selfcon_s_fg: true, ..Default::default() };
        assert!(e(loss.forward(&one_view, Positives::SameImage, flags)).contains("at least 2 views"));
        // Every label unique: no anchor is left to average over, a NaN loss (the training loop
        // stops on it naming the step), not an error read from the device inside the step.
        let unique = Tensor::from_slice(&[0i64, 1, 2, 3]);
        let flags = ConLossFlags { supcon_s: true, ..Default::default() };
        let out = loss.forward_with_stats(&one_view, Positives::Labels(&unique), flags).unwrap();
        assert!(out.loss.double_value(&[]).is_nan() && out.anchors.double_value(&[]) == 0.0);
    }
}
