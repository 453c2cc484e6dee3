//! The 2-D maps of `selfcon report`: a few thousand test images' pooled features (backbone and
//! first exit) embedded with t-SNE (Barnes-Hut, `bhtsne`) or PCA, coloured by class, for the
//! trained encoder and for the random initialisation it started from — rebuilt exactly from the
//! run's seed, as pre-training built it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use super::plot;
use crate::data::augment::EvalTransform;
use crate::data::{Dataset, OpenedDataset, Subset};
use crate::error::{Error, Result};
use crate::model::BatchNormKind;
use crate::train::{encoder_features, FeatureExtraction, PretrainConfig};

/// How points are placed.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, strum::Display, strum::IntoStaticStr, strum::EnumIter, strum::EnumMessage,
)]
#[strum(serialize_all = "lowercase")]
pub enum MapMethod {
    Tsne,
    Pca,
}

crate::named_enum!(MapMethod, "map", "map", parse_only);

/// One picture: what it shows and where it is.
pub struct FeatureMap {
    pub title: String,
    pub path: PathBuf,
}

/// The class names the legend shows for the datasets that have well-known ones.
pub fn class_names(dataset: &str, classes: i64) -> Vec<String> {
    let known: &[&str] = match dataset {
        "fashionmnist" => {
            &["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
        }
        "cifar10" => &["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
        "mnist" => &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
        _ => &[],
    };
    (0..classes as usize).map(|c| known.get(c).map_or_else(|| format!("class {c}"), |n| n.to_string())).collect()
}

/// Maps of the run in `dir` (its `config.json` and `last.safetensors`): `images` test images
/// spread evenly over the split (only the first ten classes' when there are more: one colour
/// each), backbone and first exit, trained and at initialisation. PNGs go to `out` as
/// `{stem}_{trained|init}_{backbone|exit1}.png`.
#[allow(clippy::too_many_arguments)]
pub fn run_maps(
    dir: &Path,
    config: &PretrainConfig,
    data: &OpenedDataset,
    eval: EvalTransform,
    images: usize,
    method: MapMethod,
    out: &Path,
    stem: &str,
    device: Device,
) -> Result<Vec<FeatureMap>> {
    let test = data.test.clone().ok_or_else(|| {
        Error::option(
            "map_images",
            format!("{} has no test split to map (--map_images 0: no maps)", config.dataset_name),
        )
    })?;
    let classes = test.num_classes();
    let shown: Vec<usize> = (0..test.len()).filter(|&i| test.label(i) < 10).collect();
    if shown.is_empty() {
        return Err(Error::input("no test image to map"));
    }
    let n = images.min(shown.len()).max(1);
    let pick: Vec<usize> = (0..n).map(|i| shown[i * shown.len() / n]).collect();
    let set: Arc<dyn Dataset> = Arc::new(Subset::new(test.clone(), pick));
    let how = FeatureExtraction {
        mean: data.mean,
        std: data.std,
        threads: config.optim.num_workers.max(1),
        device,
        // fp32 whatever the run used (an fp64 or a CUDA fp16 run is mapped on any device).
        precision: crate::train::Precision::Fp32,
        channels_last: false,
        shard: None,
    };
    // The random initialisation: the same seeded construction pre-training started from.
    let (vs, model) = config.initial_model(device, BatchNormKind::Local)?;
    let init = encoder_features(&model, &set, eval, how)?;
    let weights = dir.join("last.safetensors");
    crate::checkpoint::ModelCheckpoint::open(&weights)?.load_into(&vs)?;
    let trained = encoder_features(&model, &set, eval, how)?;
    let names = class_names(&config.dataset_name, classes.min(10));
    let labels: Vec<i64> = Vec::<i64>::try_from(&trained.labels).map_err(Error::Torch)?;
    let what = match method {
        MapMethod::Tsne => "t-SNE",
        MapMethod::Pca => "PCA",
    };
    let mut maps = Vec::new();
    for (state, features) in [("trained", &trained), ("init", &init)] {
        let mut outputs = vec![("backbone", &features.backbone)];
        if let Some(exit) = features.exits.first() {
            outputs.push(("exit1", exit));
        }
        for (output, x) in outputs {
            let points = embed(x, method)?;
            let path = out.join(format!("{stem}_{state}_{output}.png"));
            let title = format!(
                "{} · {} · {what} of {n} test images",
                if output == "backbone" { "backbone" } else { "sub-network (exit 1)" },
                if state == "trained" { "trained" } else { "random init" }
            );
            plot::scatter_map(&path, &title, &points, &labels, &names)?;
            maps.push(FeatureMap { title, path });
        }
    }
    Ok(maps)
}

/// 2-D coordinates of the rows of `x` (`[N, d]`, L2-normalised first, as the features are used).
fn embed(x: &Tensor, method: MapMethod) -> Result<Vec<(f64, f64)>> {
    let _guard = tch::no_grad_guard();
    let x = x.to_kind(Kind::Double);
    let x = &x / x.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
    let centred = &x - x.mean_dim([0i64].as_slice(), true, Kind::Double);
    // Principal axes from the SVD; t-SNE starts from the PCA layout (deterministic, and the
    // recommended initialisation) and works on the first 50 components.
    let (_, _, v) = centred.f_svd(true, true).map_err(Error::Torch)?;
    let components = |k: i64| centred.matmul(&v.narrow(1, 0, k.min(v.size()[1])));
    let pca2 = components(2);
    let pairs = |t: &Tensor| -> Result<Vec<(f64, f64)>> {
        let flat = Vec::<f64>::try_from(&t.contiguous().view([-1])).map_err(Error::Torch)?;
        Ok(flat.chunks(2).map(|p| (p[0], *p.get(1).unwrap_or(&0.0))).collect())
    };
    if method == MapMethod::Pca || x.size()[0] < 10 {
        return pairs(&pca2);
    }
    let reduced = components(50).to_kind(Kind::Float);
    let n = reduced.size()[0] as usize;
    let dims = reduced.size()[1] as usize;
    let data = Vec::<f32>::try_from(&reduced.contiguous().view([-1])).map_err(Error::Torch)?;
    let rows: Vec<&[f32]> = data.chunks(dims).collect();
    let scale = pca2.std(false).double_value(&[]).max(1e-12);
    let start: Vec<f32> = Vec::<f64>::try_from(&(pca2 / scale * 1e-4).contiguous().view([-1]))
        .map_err(Error::Torch)?
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let perplexity = 30.0f32.min(((n - 1) as f32 / 3.0).max(1.0));
    let mut tsne = bhtsne::tSNE::new(&rows);
    tsne.embedding_dim(2)
        .perplexity(perplexity)
        .epochs(750)
        .initial_embedding(start)
        .barnes_hut(0.5, |a, b| a.iter().zip(b.iter()).map(|(p, q)| (p - q).powi(2)).sum::<f32>().sqrt());
    let embedding = tsne.embedding();
    Ok(embedding.chunks(2).map(|p| (f64::from(p[0]), f64::from(p[1]))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separated_clusters_stay_separated_in_both_maps() {
        // Two tight clusters far apart in 16 dimensions.
        let a = crate::engine::seeded(5, || Tensor::randn([40, 16], (Kind::Float, Device::Cpu)) * 0.01);
        let offset = Tensor::zeros([1, 16], (Kind::Float, Device::Cpu));
        let _ = offset.narrow(1, 0, 1).fill_(1.0);
        let b = crate::engine::seeded(6, || Tensor::randn([40, 16], (Kind::Float, Device::Cpu)) * 0.01) - &offset;
        let x = Tensor::cat(&[&a + &offset, b], 0);
        for method in [MapMethod::Pca, MapMethod::Tsne] {
            let points = embed(&x, method).unwrap();
            assert_eq!(points.len(), 80);
            let centre = |r: std::ops::Range<usize>| {
                let n = r.len() as f64;
                points[r].iter().fold((0.0, 0.0), |c, p| (c.0 + p.0 / n, c.1 + p.1 / n))
            };
            let (ca, cb) = (centre(0..40), centre(40..80));
            let spread =
                points[0..40].iter().map(|p| ((p.0 - ca.0).powi(2) + (p.1 - ca.1).powi(2)).sqrt()).fold(0.0, f64::max);
            let gap = ((ca.0 - cb.0).powi(2) + (ca.1 - cb.1).powi(2)).sqrt();
            assert!(gap > 2.0 * spread, "{method:?}: gap {gap} vs spread {spread}");
        }
    }
}
