//! `index.html` of a report: every picture (relative links, so the folder opens in a browser
//! without a server and can be moved), each run's configuration and final numbers.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::feature_map::FeatureMap;
use super::runs::RunLog;
use super::Figure;
use crate::error::Result;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.4}").trim_end_matches('0').trim_end_matches('.').to_string(),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// The settings a reader compares runs by.
const SETTINGS: [(&str, &str); 14] = [
    ("method", "/method"),
    ("model", "/model/architecture"),
    ("exits (selfcon_pos)", "/model/exits"),
    ("sub-network", "/model/sub_size"),
    ("dataset", "/model/dataset"),
    ("epochs", "/optim/epochs"),
    ("batch size", "/optim/batch_size"),
    ("learning rate", "/optim/learning_rate"),
    ("cosine", "/optim/cosine"),
    ("temperature", "/temp"),
    ("precision", "/optim/precision"),
    ("seed", "/optim/seed"),
    ("checkpoint (linear)", "/ckpt"),
    ("sub-network head (linear)", "/subnet"),
];

/// The final numbers: the last epoch record's fields.
const FINAL: [(&str, &str); 10] = [
    ("epoch", "epoch"),
    ("loss", "loss"),
    ("kNN top-1 (backbone)", "knn_top1"),
    ("kNN top-5 (backbone)", "knn_top5"),
    ("kNN top-1 (exit 1)", "knn_exit1_top1"),
    ("backbone top-1", "backbone_top1"),
    ("sub-network top-1", "sub_top1"),
    ("ensemble top-1", "ensemble_top1"),
    ("top-1 (CE)", "top1"),
    ("images/s", "images_per_s"),
];

/// The demo's linear probes (`demo_results.json` in the run folder), trained against random init.
fn probe_table(h: &mut String, run: &RunLog, results: Option<&Path>) {
    let path = results.map(Path::to_path_buf).unwrap_or_else(|| run.dir.join("demo_results.json"));
    let Ok(text) = std::fs::read_to_string(path) else { return };
    let Ok(results) = serde_json::from_str::<Value>(&text) else { return };
    let _ = writeln!(
        h,
        "<h2>Linear probe on frozen features ({}): test top-1 (%)</h2>\n<table><tr><th></th><th>trained</th><th>random init</th><th>gain</th></tr>",
        escape(&run.label)
    );
    for (name, output) in [("backbone", "backbone"), ("sub-network", "sub"), ("ensemble", "ensemble")] {
        let top1 = |who: &str| results.pointer(&format!("/{who}/test/{output}/top1")).and_then(Value::as_f64);
        if let (Some(trained), Some(init)) = (top1("selfcon"), top1("random_init")) {
            let _ = writeln!(
                h,
                "<tr><td>{name}</td><td>{trained:.2}</td><td>{init:.2}</td><td>{:+.2}</td></tr>",
                trained - init
            );
        }
    }
    let _ = writeln!(h, "</table>");
}

pub fn write_index(
    path: &Path,
    runs: &[RunLog],
    figures: &[Figure],
    maps: &[FeatureMap],
    demo_results: Option<&Path>,
) -> Result<()> {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>selfcon report</title>\n<style>\
         body{{font-family:sans-serif;margin:1.5em;max-width:1900px;color:#222}}\
         table{{border-collapse:collapse;margin:0.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}\
         th{{background:#f3f3f3}}figure{{display:inline-block;margin:0.5em;vertical-align:top}}\
         img{{max-width:820px;border:1px solid #ddd}}figcaption{{font-size:0.9em;color:#555}}\
         </style></head><body>\n<h1>selfcon report</h1>\n"
    );
    let _ = writeln!(h, "<h2>Runs</h2>\n<table><tr><th>setting</th>");
    for run in runs {
        let _ = write!(h, "<th>{}</th>", escape(&run.label));
    }
    let _ = writeln!(h, "</tr>");
    let _ = write!(h, "<tr><td>folder</td>");
    for run in runs {
        let _ = write!(h, "<td><code>{}</code></td>", escape(&run.dir.display().to_string()));
    }
    let _ = writeln!(h, "</tr>");
    for (name, pointer) in SETTINGS {
        if runs.iter().all(|r| r.config.pointer(pointer).is_none()) {
            continue;
        }
        let _ = write!(h, "<tr><td>{}</td>", escape(name));
        for run in runs {
            let _ =
                write!(h, "<td>{}</td>", escape(&run.config.pointer(pointer).map(show).unwrap_or_else(|| "–".into())));
        }
        let _ = writeln!(h, "</tr>");
    }
    let _ = writeln!(h, "</table>\n<h2>Final numbers (last epoch)</h2>\n<table><tr><th></th>");
    for run in runs {
        let _ = write!(h, "<th>{}</th>", escape(&run.label));
    }
    let _ = writeln!(h, "</tr>");
    for (name, key) in FINAL {
        if runs.iter().all(|r| r.last_epoch().and_then(|e| e.get(key)).is_none_or(Value::is_null)) {
            continue;
        }
        let _ = write!(h, "<tr><td>{}</td>", escape(name));
        for run in runs {
            let v = run.last_epoch().and_then(|e| e.get(key)).map(show).unwrap_or_else(|| "–".into());
            let _ = write!(h, "<td>{}</td>", escape(&v));
        }
        let _ = writeln!(h, "</tr>");
    }
    let _ = writeln!(h, "</table>");
    for run in runs {
        probe_table(&mut h, run, demo_results);
    }
    let _ = writeln!(h, "<h2>Curves</h2>");
    for f in figures {
        let _ = writeln!(
            h,
            "<figure><img src=\"{}\" alt=\"{}\" onerror=\"this.dataset.broken=1\"><figcaption>{}</figcaption></figure>",
            escape(&file_name(&f.path)),
            escape(&f.title),
            escape(&f.title)
        );
    }
    if !maps.is_empty() {
        let _ = writeln!(h, "<h2>Feature maps</h2>\n<p>Test images' pooled features, coloured by class.</p>");
        for m in maps {
            let _ = writeln!(
                h,
                "<figure><img src=\"{}\" alt=\"{}\" onerror=\"this.dataset.broken=1\"><figcaption>{}</figcaption></figure>",
                escape(&file_name(&m.path)),
                escape(&m.title),
                escape(&m.title)
            );
        }
    }
    let _ = writeln!(h, "</body></html>");
    crate::checkpoint::write_atomically(path, h.as_bytes(), "the report index")?;
    // Readable like the pictures (the atomic write creates its file private to the owner).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| crate::error::Error::file(path, format!("cannot set permissions: {e}")))
}
