//! `--tensorboard`: the event files of a pre-training and a linear run, read back by a reader
//! written here from the format's description (its own CRC-32C, its own protobuf decoding), not
//! by the writer's code.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::selfcon;

/// CRC-32C, bit by bit (reflected polynomial 0x82F63B78), independent of the `crc32c` crate.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
        }
    }
    !crc
}

fn masked(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn varint(data: &[u8], at: &mut usize) -> u64 {
    let (mut value, mut shift) = (0u64, 0);
    loop {
        let b = data[*at];
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return value;
        }
        shift += 7;
    }
}

/// (field number, wire type, payload) of every field of one protobuf message.
fn fields(data: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < data.len() {
        let key = varint(data, &mut at);
        let (field, wire) = (key >> 3, key & 7);
        let payload = match wire {
            0 => {
                let start = at;
                varint(data, &mut at);
                data[start..at].to_vec()
            }
            1 => {
                at += 8;
                data[at - 8..at].to_vec()
            }
            2 => {
                let len = varint(data, &mut at) as usize;
                at += len;
                data[at - len..at].to_vec()
            }
            5 => {
                at += 4;
                data[at - 4..at].to_vec()
            }
            other => panic!("unexpected wire type {other}"),
        };
        out.push((field, wire, payload));
    }
    out
}

struct Events {
    version: String,
    /// tag → (step, value) in file order.
    scalars: BTreeMap<String, Vec<(i64, f32)>>,
}

/// Reads every record of a TFRecord event file, checking both CRCs of each.
fn read_events(path: &Path) -> Events {
    let bytes = std::fs::read(path).unwrap();
    let mut at = 0;
    let mut events = Events { version: String::new(), scalars: BTreeMap::new() };
    while at < bytes.len() {
        let length = &bytes[at..at + 8];
        let len = u64::from_le_bytes(length.try_into().unwrap()) as usize;
        let length_crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        assert_eq!(length_crc, masked(crc32c(length)), "length CRC at byte {at}");
        let data = &bytes[at + 12..at + 12 + len];
        let data_crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
        assert_eq!(data_crc, masked(crc32c(data)), "data CRC at byte {at}");
        at += 16 + len;
        let mut step = 0i64;
        let mut wall_time = 0.0;
        for (field, _, payload) in fields(data) {
            match field {
                1 => wall_time = f64::from_le_bytes(payload.try_into().unwrap()),
                2 => step = varint(&payload, &mut 0) as i64,
                3 => events.version = String::from_utf8(payload).unwrap(),
                5 => {
                    for (_, _, value) in fields(&payload) {
                        let (mut tag, mut simple) = (String::new(), f32::NAN);
                        for (f, _, p) in fields(&value) {
                            match f {
                                1 => tag = String::from_utf8(p).unwrap(),
                                2 => simple = f32::from_le_bytes(p.try_into().unwrap()),
                                _ => {}
                            }
                        }
                        events.scalars.entry(tag).or_default().push((step, simple));
                    }
                }
                other => panic!("unexpected Event field {other}"),
            }
        }
        assert!(wall_time > 1.6e9, "wall time {wall_time} is seconds since 1970");
    }
    assert_eq!(at, bytes.len(), "no partial record at the end");
    events
}

fn event_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents."))
        .collect();
    assert_eq!(files.len(), 1, "one event file in {}: {files:?}", dir.display());
    files.into_iter().next().unwrap()
}

#[test]
fn pretrain_and_linear_write_event_files_tensorboard_can_read() {
    let d = tempfile::tempdir().unwrap();
    common::tiny_fashion_mnist(d.path(), 16, 8);
    let save = tempfile::tempdir().unwrap();
    let (data, out) = (d.path().to_str().unwrap(), save.path().to_str().unwrap());
    let o = selfcon(&[
        "pretrain",
        "--dataset",
        "fashionmnist",
        "--data_folder",
        data,
        "--save_dir",
        out,
        "--model",
        "resnet18",
        "--method",
        "SelfCon",
        "--selfcon_pos",
        "[False,True,False]",
        "--selfcon_size",
        "fc",
        "--batch_size",
        "8",
        "--epochs",
        "2",
        "--num_workers",
        "1",
        "--print_freq",
        "1",
        "--knn_every",
        "1",
        "--knn_k",
        "3",
        "--tensorboard",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ckpt = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let run_dir = ckpt.parent().unwrap();
    let events = read_events(&event_file(run_dir));
    assert_eq!(events.version, "brain.Event:2");
    // 16 images at batch 8: 2 steps per epoch, global steps 1..4.
    let steps: Vec<i64> = events.scalars["pretrain/step/loss"].iter().map(|s| s.0).collect();
    assert_eq!(steps, vec![1, 2, 3, 4]);
    for tag in ["pretrain/step/lr", "pretrain/step/images_per_s"] {
        assert_eq!(events.scalars[tag].len(), 4, "{tag}");
    }
    // Epoch scalars at epochs 1, 2, equal to metrics.jsonl's values (as f32).
    let jsonl = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let epoch_records: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["kind"] == "epoch")
        .collect();
    for key in ["loss", "lr", "knn_top1", "knn_top5", "knn_exit1_top1", "knn_exit1_top5", "seconds"] {
        let got = &events.scalars[&format!("pretrain/epoch/{key}")];
        let want: Vec<(i64, f32)> =
            epoch_records.iter().map(|r| (r["epoch"].as_i64().unwrap(), r[key].as_f64().unwrap() as f32)).collect();
        assert_eq!(got, &want, "{key}");
    }

    // Linear evaluation of that checkpoint: its accuracies per epoch.
    let o = selfcon(&[
        "linear",
        "--ckpt",
        ckpt.to_str().unwrap(),
        "--dataset",
        "fashionmnist",
        "--data_folder",
        data,
        "--save_dir",
        out,
        "--model",
        "resnet18",
        "--selfcon_pos",
        "[False,True,False]",
        "--selfcon_size",
        "fc",
        "--subnet",
        "--batch_size",
        "8",
        "--epochs",
        "2",
        "--num_workers",
        "1",
        "--tensorboard",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let linear_dir = std::fs::read_dir(save.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .flat_map(|p| common::walk_files(&p))
        .find(|p| {
            p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("events.out.tfevents."))
                && !p.starts_with(run_dir)
        })
        .expect("the linear run's event file");
    let events = read_events(&linear_dir);
    for tag in ["linear/epoch/backbone_top1", "linear/epoch/sub_top1", "linear/epoch/ensemble_top1"] {
        let values = &events.scalars[tag];
        assert_eq!(values.iter().map(|v| v.0).collect::<Vec<_>>(), vec![1, 2], "{tag}");
        assert!(values.iter().all(|v| (0.0..=100.0).contains(&v.1)), "{tag}: {values:?}");
    }
}

#[test]
fn without_the_flag_no_event_file_is_written() {
    let d = tempfile::tempdir().unwrap();
    common::tiny_fashion_mnist(d.path(), 8, 4);
    let save = tempfile::tempdir().unwrap();
    let o = selfcon(&[
        "pretrain",
        "--dataset",
        "fashionmnist",
        "--data_folder",
        d.path().to_str().unwrap(),
        "--save_dir",
        save.path().to_str().unwrap(),
        "--model",
        "resnet18",
        "--method",
        "SupCon",
        "--batch_size",
        "8",
        "--epochs",
        "1",
        "--num_workers",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let all = common::walk_files(save.path());
    assert!(all.iter().all(|p| !p.to_string_lossy().contains("tfevents")), "{all:?}");
    assert!(all.iter().any(|p| p.ends_with("metrics.jsonl")));
}
