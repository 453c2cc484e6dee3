//! The training objective of each method (SPEC §4.2–4.4, §7): from the model's normalised
//! projections and the batch labels to one loss, with its named components.
//!
//! | name | method | multiview | labels | alpha |
//! |---|---|---|---|---|
//! | SupCon | SupCon | yes | on | – |
//! | SupCon-S | SupCon | no | on | – |
//! | SimCLR | Con | yes | – | – |
//! | SelfCon | SelfCon | no | on | 0 |
//! | SelfCon-SU | SelfCon | no | off | 0 |
//! | SelfCon-M | SelfCon | yes | on | 0 |
//! | SelfCon-MU | SelfCon | yes | off | 0 |
//! | SelfCon-S* / SelfCon-M* | SelfCon | no / yes | either | ≠ 0 |

use serde::{Deserialize, Serialize};
use strum::{Display, EnumIter, EnumMessage, IntoStaticStr};
use tch::Tensor;

use super::con_loss::{ConLoss, ConLossFlags, Positives};
use crate::error::{Error, Result};

/// `--method` of `main_represent.py`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Display, IntoStaticStr, EnumIter, EnumMessage)]
pub enum Method {
    /// SimCLR: contrast two views of the backbone output, no labels.
    Con,
    /// Supervised contrastive learning on the backbone output.
    SupCon,
    /// Self-contrastive learning: contrast the exits' projections with the backbone's.
    SelfCon,
}

crate::named_enum!(Method, "method", "method");

/// One named term of the objective, before its weight.
#[derive(Debug)]
pub struct LossComponent {
    pub name: &'static str,
    pub weight: f64,
    pub value: Tensor,
}

#[derive(Debug)]
pub struct LossTerms {
    /// Σ weight · value: what is back-propagated.
    pub total: Tensor,
    pub components: Vec<LossComponent>,
}

/// The method-level objective.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodLoss {
    pub method: Method,
    /// Rows are `[view 1 of every image; view 2 of every image]`.
    pub multiview: bool,
    /// Labels define positives (`--label` turns this off, as the official store_false flag).
    pub use_labels: bool,
    /// Non-zero selects the SelfCon-S*/M* split objective.
    pub alpha: f64,
    pub con_loss: ConLoss,
}

impl MethodLoss {
    /// Checks that the configuration has positives at all and fits the model's exits.
    pub fn validate(&self, n_exits: usize) -> Result<()> {
        match self.method {
            Method::Con | Method::SupCon if !self.multiview && !self.labels_on() => Err(Error::option(
                "multiview",
                format!("--method {} without labels needs --multiview: a single view has no positive", self.method),
            )),
            Method::SelfCon if n_exits == 0 => Err(Error::option(
                "selfcon_pos",
                "--method SelfCon needs at least one sub-network exit (e.g. \"[False,True,False]\")",
            )),
            Method::Con | Method::SupCon if self.alpha != 0.0 => Err(Error::option(
                "alpha",
                format!("only used by --method SelfCon, got {} with {}", self.alpha, self.method),
            )),
            _ => Ok(()),
        }
    }

    /// Whether labels define positives: never for Con.
    pub fn labels_on(&self) -> bool {
        self.use_labels && self.method != Method::Con
    }

    /// `exits`: the normalised exit projections, `backbone`: the normalised backbone projection,
    /// each `[rows, D]` with rows = B (or 2B with multiview); `labels`: the B image labels.
    pub fn compute(&self, exits: &[Tensor], backbone: &Tensor, labels: &Tensor) -> Result<LossTerms> {
        self.validate(exits.len())?;
        // Projections from an autocast forward pass arrive in fp16/bf16; the similarities, exp,
        // log and sums run in fp32 (f64 inputs stay f64).
        let exits: Vec<Tensor> = exits.iter().map(full_precision).collect();
        let (exits, backbone) = (&exits[..], &full_precision(backbone));
        let rows = backbone.size().first().copied().unwrap_or(0);
        let images = labels.size().first().copied().unwrap_or(-1);
        let expected_rows = if self.multiview { 2 * images } else { images };
        if labels.dim() != 1 || rows != expected_rows {
            return Err(Error::input(format!(
                "{} rows of projections do not fit {} labels{}",
                rows,
                images,
                if self.multiview { " (multiview needs 2 rows per image)" } else { "" }
            )));
        }
        if let Some(bad) = exits.iter().find(|e| e.size() != backbone.size()) {
            return Err(Error::input(format!(
                "exit projection {:?} differs from backbone {:?}",
                bad.size(),
                backbone.size()
            )));
        }
        let y = self.labels_on().then_some(labels);
        let con = &self.con_loss;
        let plain = ConLossFlags::default();
        let term = |name, weight, value| LossComponent { name, weight, value };
        let mut components = Vec::with_capacity(2);
        match (self.method, self.alpha != 0.0) {
            (Method::Con | Method::SupCon, _) => {
                if self.multiview {
                    let name = if y.is_some() { "supcon" } else { "con" };
                    components.push(term(name, 1.0, con.forward(&pair_views(backbone), positives(y), plain)?));
                } else {
                    let flags = ConLossFlags { supcon_s: true, ..plain };
                    components.push(term("supcon_s", 1.0, con.forward(&backbone.unsqueeze(1), positives(y), flags)?));
                }
            }
            (Method::SelfCon, false) => {
                let x = stack_views(exits, backbone);
                if self.multiview {
                    // Rows are [view 1; view 2], so the labels are repeated the same way.
                    let repeated = y.map(|l| Tensor::cat(&[l, l], 0));
                    components.push(term("selfcon_m", 1.0, con.forward(&x, positives(repeated.as_ref()), plain)?));
                } else {
                    components.push(term("selfcon", 1.0, con.forward(&x, positives(y), plain)?));
                }
            }
            (Method::SelfCon, true) => {
                let x = stack_views(exits, backbone);
                if self.multiview {
                    components.push(term(
                        "backbone_supcon",
                        1.0,
                        con.forward(&pair_views(backbone), positives(y), plain)?,
                    ));
                    let flags = ConLossFlags { selfcon_m_fg: true, ..plain };
                    components.push(term("selfcon_m_FG", self.alpha, con.forward(&x, positives(y), flags)?));
                } else {
                    // Without labels the backbone-only term has no positives and is left out.
                    if let Some(l) = y {
                        let flags = ConLossFlags { supcon_s: true, ..plain };
                        components.push(term(
                            "backbone_supcon_s",
                            1.0,
                            con.forward(&backbone.unsqueeze(1), Positives::Labels(l), flags)?,
                        ));
                    }
                    let flags = ConLossFlags { selfcon_s_fg: true, ..plain };
                    components.push(term("selfcon_s_FG", self.alpha, con.forward(&x, positives(y), flags)?));
                }
            }
        }
        let total = components
            .iter()
            .map(|c| if c.weight == 1.0 { c.value.shallow_clone() } else { &c.value * c.weight })
            .reduce(|a, b| a + b)
            .expect("every method has at least one term");
        Ok(LossTerms { total, components })
    }
}

fn positives(labels: Option<&Tensor>) -> Positives<'_> {
    labels.map_or(Positives::SameImage, Positives::Labels)
}

/// `[sub-network 1, …, sub-network k, backbone]` along the view axis: `[rows, k+1, D]`.
pub fn stack_views(exits: &[Tensor], backbone: &Tensor) -> Tensor {
    let views: Vec<&Tensor> = exits.iter().chain(std::iter::once(backbone)).collect();
    Tensor::stack(&views, 1)
}

/// `[2B, D]` rows `[view 1; view 2]` to `[B, 2, D]`.
pub fn pair_views(rows: &Tensor) -> Tensor {
    let size = rows.size();
    rows.view([2, size[0] / 2, size[1]]).transpose(0, 1)
}

/// `t` in fp32 when it is fp16/bf16, else unchanged.
fn full_precision(t: &Tensor) -> Tensor {
    match t.kind() {
        tch::Kind::Half | tch::Kind::BFloat16 => t.to_kind(tch::Kind::Float),
        _ => t.shallow_clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn objective(method: Method, multiview: bool, use_labels: bool, alpha: f64) -> MethodLoss {
        MethodLoss { method, multiview, use_labels, alpha, con_loss: ConLoss::new(0.1) }
    }

    fn proj(rows: i64) -> Tensor {
        crate::model::l2_normalize(&Tensor::randn([rows, 8], (Kind::Double, Device::Cpu)))
    }

    #[test]
    fn selfcon_with_one_exit_is_supcon_with_the_exit_as_second_view() {
        let labels = Tensor::from_slice(&[0i64, 1, 0, 1, 2, 2]);
        let (g, f) = (proj(6), proj(6));
        let selfcon = objective(Method::SelfCon, false, true, 0.0).compute(&[g.shallow_clone()], &f, &labels).unwrap();
        // SupCon multiview sees [view1; view2] rows; put the exit where view 1 would be.
        let rows = Tensor::cat(&[&g, &f], 0);
        let supcon = objective(Method::SupCon, true, true, 0.0).compute(&[], &rows, &labels).unwrap();
        assert!((selfcon.total - supcon.total).abs().double_value(&[]) < 1e-12);
        assert_eq!(supcon.components[0].name, "supcon");
    }

    #[test]
    fn con_ignores_labels_and_label_flag_turns_them_off() {
        let labels = Tensor::from_slice(&[0i64, 0, 1, 1]);
        let rows = proj(8);
        let con = objective(Method::Con, true, true, 0.0).compute(&[], &rows, &labels).unwrap();
        let unsup = objective(Method::SupCon, true, false, 0.0).compute(&[], &rows, &labels).unwrap();
        let sup = objective(Method::SupCon, true, true, 0.0).compute(&[], &rows, &labels).unwrap();
        assert!((&con.total - &unsup.total).abs().double_value(&[]) < 1e-12);
        assert!((&con.total - &sup.total).abs().double_value(&[]) > 1e-6);
        assert_eq!(con.components[0].name, "con");
    }

    #[test]
    fn alpha_variants_weight_their_terms() {
        let labels = Tensor::from_slice(&[0i64, 1, 0, 1]);
        let (g, f) = (proj(4), proj(4));
        let t = objective(Method::SelfCon, false, true, 0.5).compute(&[g.shallow_clone()], &f, &labels).unwrap();
        let names: Vec<_> = t.components.iter().map(|c| c.name).collect();
        assert_eq!(names, ["backbone_supcon_s", "selfcon_s_FG"]);
        let expect = t.components[0].value.double_value(&[]) + 0.5 * t.components[1].value.double_value(&[]);
        assert!((t.total.double_value(&[]) - expect).abs() < 1e-12);
        let u = objective(Method::SelfCon, false, false, 0.5).compute(&[g], &f, &labels).unwrap();
        assert_eq!(u.components.len(), 1, "without labels the backbone-only term is left out");
    }

    #[test]
    fn impossible_configurations_are_refused() {
        let labels = Tensor::from_slice(&[0i64, 1, 0, 1]);
        let e = |m: MethodLoss, exits: &[Tensor], rows: i64| {
            m.compute(exits, &proj(rows), &labels).unwrap_err().to_string()
        };
        assert!(e(objective(Method::SelfCon, false, true, 0.0), &[], 4).starts_with("--selfcon_pos: "));
        assert!(e(objective(Method::Con, false, true, 0.0), &[], 4).starts_with("--multiview: "));
        assert!(e(objective(Method::SupCon, true, true, 0.3), &[], 8).starts_with("--alpha: "));
        assert!(e(objective(Method::SupCon, true, true, 0.0), &[], 4).contains("multiview needs 2 rows per image"));
        assert!(e(objective(Method::SelfCon, false, true, 0.0), &[proj(3)], 4).contains("differs from backbone"));
        assert!("BYOL".parse::<Method>().unwrap_err().to_string().starts_with("--method: "));
    }
}
