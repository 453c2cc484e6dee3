//! Small hostile or broken files give a one-line error (or the right value) quickly, never a
//! crash, a hang or an exhausted machine. Each file is generated here.

use crate::common;

use std::rc::Rc;
use std::time::Instant;

use selfcon::pickle::{parse, parse_as, Dialect, Value, MAX_DEPTH};

#[test]
fn a_memoised_object_is_shared_not_copied() {
    // ~300 bytes asking for 2^40 list nodes if memo entries were copied: `]q\0` then 40 × `(h\0h\0lq\0`.
    let mut bomb = vec![0x80, 2, b']', b'q', 0];
    for _ in 0..40 {
        bomb.extend_from_slice(b"(h\x00h\x00lq\x00");
    }
    bomb.push(b'.');
    assert!(bomb.len() < 400);
    let started = Instant::now();
    let value = parse(&bomb).unwrap();
    assert!(started.elapsed().as_secs() < 2, "parsing is linear in the file");
    // Every level holds the same object twice.
    let mut v = &value;
    for _ in 0..40 {
        let items = v.as_seq().expect("a list");
        assert_eq!(items.len(), 2);
        let (Value::List(a), Value::List(b)) = (&items[0], &items[1]) else { panic!("lists") };
        assert!(Rc::ptr_eq(a, b), "one shared object, as in Python");
        v = &items[0];
    }
}

#[test]
fn a_list_memoised_before_its_items_is_the_same_list_afterwards() {
    // Python: l = [1]; pickle.dumps((l, l), 2) — the memo entry is made before APPEND.
    let value = parse(b"\x80\x02]q\x00K\x01ah\x00\x86q\x01.").unwrap();
    let items = value.as_seq().unwrap();
    assert_eq!(items.len(), 2);
    for item in items {
        assert_eq!(item.as_seq().unwrap(), [Value::Int(1)], "both references see the appended item");
    }
}

#[test]
fn deep_nesting_is_refused_with_a_message_not_a_stack_overflow() {
    // N × `]` then N-1 × `a`: a list N deep.
    let n = 1_000_000;
    let mut deep = vec![0x80, 2];
    deep.extend(std::iter::repeat_n(b']', n));
    deep.extend(std::iter::repeat_n(b'a', n - 1));
    deep.push(b'.');
    let e = parse(&deep).unwrap_err();
    assert!(e.contains(&format!("more than {MAX_DEPTH} levels deep")), "{e}");
    // Just inside the limit is fine.
    let mut ok = vec![0x80, 2];
    ok.extend(std::iter::repeat_n(b']', MAX_DEPTH));
    ok.extend(std::iter::repeat_n(b'a', MAX_DEPTH - 1));
    ok.push(b'.');
    parse(&ok).unwrap();
}

#[test]
fn a_shared_object_counts_its_own_depth_wherever_it_is_placed() {
    // Chain 1 is 150 lists deep; chain 2 is 150 lists around chain 1 (shared through the memo),
    // so 300 deep although no single new nesting exceeds 200.
    let mut p = vec![0x80, 2, b']', b'q', 0];
    p.extend(std::iter::repeat_n(b']', 150));
    p.extend(std::iter::repeat_n(b'a', 149));
    p.extend_from_slice(b"q\x01a");
    p.extend(std::iter::repeat_n(b']', 150));
    p.extend_from_slice(b"h\x01");
    p.extend(std::iter::repeat_n(b'a', 150));
    p.extend_from_slice(b"a.");
    let e = parse(&p).unwrap_err();
    assert!(e.contains("levels deep"), "{e}");
}

#[test]
fn an_object_that_contains_itself_is_refused() {
    // l = []; l.append(l)
    let e = parse(b"\x80\x02]q\x00h\x00a.").unwrap_err();
    assert!(e.contains("contains itself"), "{e}");
}

#[test]
fn sizes_computed_from_file_data_cannot_overflow() {
    // A numpy array whose shape multiplies past usize: _reconstruct + BUILD with shape (2^62, 2^62).
    let mut p = vec![0x80, 2];
    p.extend_from_slice(b"cnumpy.core.multiarray\n_reconstruct\n");
    p.extend_from_slice(b"cnumpy\nndarray\nK\x00\x85C\x01b\x87R");
    // state: (1, (2^62, 2^62), dtype('u1'), False, b'')
    p.extend_from_slice(b"(K\x01");
    for _ in 0..2 {
        p.push(0x8a);
        p.push(8);
        p.extend_from_slice(&(1u64 << 62).to_le_bytes());
    }
    p.push(0x86);
    p.extend_from_slice(b"cnumpy\ndtype\nX\x02\x00\x00\x00u1\x89\x88\x87R");
    p.extend_from_slice(b"\x89C\x00tb.");
    let value = parse(&p).unwrap();
    let e = selfcon::pickle::NdArray::from_value(&value).unwrap_err();
    assert!(e.contains("overflows"), "{e}");
}

#[test]
fn torch_dialect_refuses_globals_before_reading_further() {
    let e = parse_as(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.", Dialect::TORCH).unwrap_err();
    assert!(e.contains("refusing pickle global os.system"), "{e}");
}

#[test]
fn a_zip_record_claiming_more_than_the_file_could_hold_is_refused() {
    use std::io::Write;
    // A deflated record that expands 1000×: torch.save never compresses, so this is refused
    // before it is inflated.
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let deflated = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("archive/data.pkl", deflated).unwrap();
    zip.write_all(&vec![b'N'; 2 << 20]).unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    assert!(bytes.len() < 64 << 10);
    let e = selfcon::checkpoint::torch_archive::TorchArchive::from_bytes(std::path::Path::new("bomb.pth"), bytes)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("bomb.pth") && e.contains("more than 4 times the file's size"), "{e}");
}

#[test]
fn huge_or_strip_images_are_refused_before_decoding() {
    use selfcon::data::decode_image_bytes;
    let ppm = |w: u64, h: u64, body: usize| {
        let mut v = format!("P6\n{w} {h}\n255\n").into_bytes();
        v.extend(std::iter::repeat_n(7u8, body));
        v
    };
    let e = decode_image_bytes(&ppm(100_000, 100_000, 30)).unwrap_err();
    assert!(e.contains("more than the 64000000-pixel limit"), "{e}");
    let e = decode_image_bytes(&ppm(20_000, 1, 60_000)).unwrap_err();
    assert!(e.contains("longer than 64 times its shorter side"), "{e}");
    let img = decode_image_bytes(&ppm(4, 2, 24)).unwrap();
    assert_eq!((img.width, img.height), (4, 2));
}

/// Decoded images hold their share of the one decode budget all loader workers share (16
/// workers × 64-megapixel images would otherwise reach ~11 GB) until they are dropped; what is
/// made from them (clones, crops) holds none, so a worker never waits on its own images.
#[test]
fn a_decoded_image_holds_its_share_of_the_shared_decode_budget() {
    use selfcon::data::decode_budget::{BYTES_PER_PIXEL, DECODE_BUDGET_BYTES};
    let mut ppm = b"P6\n40 30\n255\n".to_vec();
    ppm.resize(ppm.len() + 40 * 30 * 3, 9);
    let img = selfcon::data::decode_image_bytes(&ppm).unwrap();
    assert_eq!(img.held_decode_bytes(), 40 * 30 * BYTES_PER_PIXEL);
    assert_eq!(img.clone().held_decode_bytes(), 0);
    assert_eq!(img.crop(0, 0, 4, 4).held_decode_bytes(), 0);
    // Two of the largest images fit at once, sixteen do not.
    let largest = selfcon::data::MAX_IMAGE_PIXELS * BYTES_PER_PIXEL;
    assert!(2 * largest <= DECODE_BUDGET_BYTES && 16 * largest > 4 * DECODE_BUDGET_BYTES);
}

#[cfg(unix)]
#[test]
fn a_folder_loop_is_an_error_naming_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let class = dir.path().join("root/cats");
    std::fs::create_dir_all(class.join("inner")).unwrap();
    image::RgbImage::new(4, 4).save(class.join("a.png")).unwrap();
    std::os::unix::fs::symlink(&class, class.join("inner/loop")).unwrap();
    let e = selfcon::data::image_folder(&dir.path().join("root")).err().unwrap().to_string();
    assert!(e.contains("inner/loop") && e.contains("folder loop"), "{e}");
    // The same folder linked twice side by side (no loop) is read, as torchvision does.
    std::fs::remove_file(class.join("inner/loop")).unwrap();
    let other = dir.path().join("root/dogs");
    std::fs::create_dir_all(&other).unwrap();
    std::os::unix::fs::symlink(class.join("a.png"), other.join("b.png")).unwrap();
    let data = selfcon::data::image_folder(&dir.path().join("root")).unwrap();
    assert_eq!(data.files.len(), 2);
    // An "image" that never ends (a link to /dev/zero) or never starts (a FIFO, issue #31: the
    // loader blocked for ever) is not a regular file: not listed, and refused if named.
    std::os::unix::fs::symlink("/dev/zero", other.join("c.png")).unwrap();
    let fifo = std::ffi::CString::new(other.join("d.jpg").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let started = Instant::now();
    let data = selfcon::data::image_folder(&dir.path().join("root")).unwrap();
    assert_eq!(data.files.len(), 2, "{:?}", data.files);
    for name in ["c.png", "d.jpg"] {
        let e = selfcon::data::decode_image(&other.join(name)).err().unwrap().to_string();
        assert!(e.contains(name) && e.contains("not a regular file"), "{e}");
    }
    assert!(started.elapsed().as_secs() < 2);
}

/// Folders joined again by two links at every level: torchvision's walk visits the last level
/// 2^depth times; each folder is read once here, and its images listed once (issue #31).
#[cfg(unix)]
#[test]
fn folder_links_joining_again_are_walked_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let levels: Vec<_> = (0..=24).map(|i| dir.path().join(format!("level{i}"))).collect();
    for level in &levels {
        std::fs::create_dir_all(level).unwrap();
    }
    for pair in levels.windows(2) {
        std::os::unix::fs::symlink(&pair[1], pair[0].join("a")).unwrap();
        std::os::unix::fs::symlink(&pair[1], pair[0].join("b")).unwrap();
    }
    image::RgbImage::new(4, 4).save(levels[24].join("x.png")).unwrap();
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink(&levels[0], root.join("cats")).unwrap();
    let started = Instant::now();
    let data = selfcon::data::image_folder(&root).unwrap();
    assert_eq!(data.files.len(), 1, "{:?}", data.files);
    assert!(started.elapsed().as_secs() < 2, "each folder once, not 2^24 visits");
}

#[test]
fn a_safetensors_file_whose_first_byte_is_0x80_is_not_taken_for_a_legacy_torch_file() {
    use safetensors::tensor::{Dtype, TensorView};
    let data = [0u8; 4];
    let view = TensorView::new(Dtype::F32, vec![1], &data).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    // Pad the metadata until the header length's low byte is 0x80 (one file in 256 is like this).
    let bytes = (0..600)
        .map(|k| {
            let meta = std::collections::HashMap::from([("pad".to_string(), "a".repeat(k))]);
            safetensors::tensor::serialize([("x", &view)], &Some(meta)).unwrap()
        })
        .find(|b| b[0] == 0x80)
        .expect("some padding gives 0x80");
    std::fs::write(&path, bytes).unwrap();
    assert!(!selfcon::checkpoint::is_torch_file(&path).unwrap());
    let ckpt = selfcon::checkpoint::ModelCheckpoint::open(&path).unwrap();
    assert_eq!(ckpt.weights.len(), 1);
}

/// A safetensors header with a dimension past i64 (no bytes needed: another dimension is 0) is one
/// line naming the file and the tensor, not libtorch's error with its backtrace (issue #31).
#[test]
fn a_safetensors_shape_past_i64_names_the_file_and_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.safetensors");
    let header = br#"{"w":{"dtype":"F32","shape":[0,18446744073709551615],"data_offsets":[0,0]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    std::fs::write(&path, bytes).unwrap();
    let started = Instant::now();
    let e = common::user_error(selfcon::checkpoint::load(&path).map(|_| ()));
    assert!(e.contains("huge.safetensors") && e.contains("tensor w") && e.len() <= 200, "{e}");
    assert!(started.elapsed().as_secs() < 2);
}

/// An IDX image file whose header claims a million 28×28 images (784 MB, under the 2 GiB file cap)
/// is refused before its data is read: padded to 32×32×3 they would need 3.1 GB (issue #31).
#[test]
fn the_idx_cap_counts_the_padded_images() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut header = vec![0, 0, 8, 3];
    for d in [1_000_000u32, 28, 28] {
        header.extend_from_slice(&d.to_be_bytes());
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&header).unwrap();
    std::fs::write(dir.path().join("train-images-idx3-ubyte.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(dir.path().join("train-labels-idx1-ubyte"), [0, 0, 8, 1, 0, 0, 0, 0]).unwrap();
    let started = Instant::now();
    let e = common::user_error(selfcon::data::load_mnist(dir.path(), true).map(|_| ()));
    assert!(e.contains("train-images-idx3-ubyte.gz") && e.contains("limit"), "{e}");
    assert!(started.elapsed().as_secs() < 1, "refused from the header");
}

/// A requeued job reruns its command line: without `--resume` it is refused (one line printing
/// the command that resumes, nothing in the run folder touched); `--resume auto` continues when
/// the folder holds a checkpoint and starts otherwise; a second process in a run folder in use is
/// refused naming the first's PID (issue #31).
#[test]
fn a_rerun_never_replaces_the_checkpoint_and_a_run_folder_has_one_writer() {
    let d = tempfile::tempdir().unwrap();
    common::tiny_fashion_mnist(d.path(), 12, 4);
    let save = tempfile::tempdir().unwrap();
    let data = d.path().to_str().unwrap();
    let run = |save: &std::path::Path, epochs: &str, resume: Option<&str>| {
        let mut args = vec!["pretrain", "--method", "SupCon", "--dataset", "fashionmnist", "--data_folder", data];
        args.extend(["--model", "resnet18", "--batch_size", "12", "--num_workers", "1", "--epochs", epochs]);
        args.extend(["--save_dir", save.to_str().unwrap()]);
        args.extend(resume.map(|r| ["--resume", r]).into_iter().flatten());
        common::selfcon(&args)
    };
    let o = run(save.path(), "1", None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let last = std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let run_dir = last.parent().unwrap().to_path_buf();
    let contents =
        || ["last.safetensors", "config.json", "metrics.csv"].map(|f| std::fs::read(run_dir.join(f)).unwrap());
    let before = contents();

    let o = run(save.path(), "1", None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let resume = format!("--resume {}", last.display());
    assert!(err.contains("already exists") && err.contains(&resume) && err.contains("--resume auto"), "{err}");
    assert!(err.contains("selfcon pretrain --method SupCon"), "prints the whole command: {err}");
    assert!(contents() == before, "the refused run touched the run folder");

    let held = selfcon::train::RunFolder::claim(&run_dir).unwrap();
    let o = run(save.path(), "2", Some("auto"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("in use by another selfcon run (process {})", std::process::id())), "{err}");
    assert!(contents() == before, "the refused run touched the run folder");
    drop(held);

    let o = run(save.path(), "2", Some("auto"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(run_dir.join("metrics.csv")).unwrap();
    let epochs: Vec<&str> = csv.lines().filter(|l| l.starts_with("epoch,")).collect();
    assert_eq!(epochs.len(), 2, "epochs 1 and 2 once each: {csv}");
    assert!(epochs[0].starts_with("epoch,pretrain,1,") && epochs[1].starts_with("epoch,pretrain,2,"), "{csv}");

    // Requeued once more after it finished: done, nothing rewritten.
    let finished = contents();
    let o = run(save.path(), "2", Some("auto"));
    assert!(o.status.success(), "a finished run requeued: {}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("all 2 epochs done already"));
    assert!(contents() == finished, "a finished run requeued rewrote its folder");

    let fresh = tempfile::tempdir().unwrap();
    let o = run(fresh.path(), "1", Some("auto"));
    assert!(o.status.success(), "auto starts a run with no checkpoint: {}", String::from_utf8_lossy(&o.stderr));
    let other = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(other.ends_with("last.safetensors"));
    // Continuing from another checkpoint would replace this run's own: refused, naming it.
    let o = run(save.path(), "3", Some(&other));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("--resume {}", last.display())), "{err}");
    assert!(contents() == finished, "the refused run touched the run folder");
}

/// A `torch.save`-style archive (`a/data.pkl`, deflated as a hostile file may be, and one float
/// storage `a/data/0` of one element).
fn torch_archive(dir: &std::path::Path, pickle: &[u8]) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("hostile.pth");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let deflated = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("a/data.pkl", deflated).unwrap();
    zip.write_all(pickle).unwrap();
    zip.start_file("a/data/0", deflated).unwrap();
    zip.write_all(&1f32.to_le_bytes()).unwrap();
    zip.finish().unwrap();
    path
}

/// Pickle opcodes of a one-element float tensor on storage `0`, left on the stack.
fn tensor_ops() -> Vec<u8> {
    let mut p = b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n".to_vec();
    p.extend_from_slice(b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00K\x01\x85K\x01\x85\x89tR");
    p
}

/// BINUNICODE of `s`.
fn text_op(s: &[u8]) -> Vec<u8> {
    let mut p = vec![b'X'];
    p.extend_from_slice(&(s.len() as u32).to_le_bytes());
    p.extend_from_slice(s);
    p
}

/// 1.8 KB on disk: a state dict of 131,072 entries that all name one memoised 512 KB key (a
/// reader copying keys needs 64 GB). Refused at the first entry, in one short line (#31).
#[test]
fn a_huge_memoised_key_is_refused_at_once_in_a_short_line() {
    let mut p = b"\x80\x02}(".to_vec();
    p.extend(text_op(&vec![b'k'; 512 << 10]));
    p.extend_from_slice(b"r\x01\x00\x00\x00");
    p.extend(tensor_ops());
    p.extend_from_slice(b"r\x02\x00\x00\x00");
    for _ in 1..131_072 {
        p.extend_from_slice(b"h\x01h\x02");
    }
    p.extend_from_slice(b"u.");
    let dir = tempfile::tempdir().unwrap();
    let path = torch_archive(dir.path(), &p);
    assert!(std::fs::metadata(&path).unwrap().len() < 8 << 10, "a small file");
    let started = Instant::now();
    let e = common::user_error(selfcon::checkpoint::OfficialCheckpoint::open(&path).map(|_| ()));
    assert!(e.contains("hostile.pth") && e.contains("a key of 524288 bytes"), "{e}");
    assert!(e.chars().count() <= 200, "{} chars: {e}", e.chars().count());
    assert!(started.elapsed().as_secs() < 1);
}

/// An optimiser state of 160,000 entries naming one shared 120,000-key dict (a lookup per entry
/// is quadratic: minutes), then the same index twice with a small state: both refused at once.
#[test]
fn an_optimizer_state_cannot_make_lookups_quadratic_or_repeat_a_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let open = |state_entry: &[u8], entries: usize| {
        let mut p = b"\x80\x02}(".to_vec();
        p.extend(text_op(b"model"));
        p.extend_from_slice(b"}");
        p.extend(text_op(b"w"));
        p.extend(tensor_ops());
        p.extend_from_slice(b"s");
        p.extend(text_op(b"epoch"));
        p.extend_from_slice(b"K\x01");
        p.extend(text_op(b"optimizer"));
        p.extend_from_slice(b"}");
        p.extend(text_op(b"state"));
        // {0: entry, 0: entry, ...}, the entry memoised once.
        p.extend_from_slice(b"}(K\x00");
        p.extend_from_slice(state_entry);
        p.extend_from_slice(b"r\x05\x00\x00\x00");
        for _ in 1..entries {
            p.extend_from_slice(b"K\x00h\x05");
        }
        p.extend_from_slice(b"us");
        p.extend(text_op(b"param_groups"));
        p.extend_from_slice(b"]su.");
        let path = torch_archive(dir.path(), &p);
        let started = Instant::now();
        let read = selfcon::checkpoint::OfficialCheckpoint::open(&path);
        assert!(started.elapsed().as_secs() < 2, "{:?}", started.elapsed());
        read
    };
    let mut huge = b"}(".to_vec();
    for _ in 0..120_000 {
        huge.extend_from_slice(b"K\x00N");
    }
    huge.push(b'u');
    let e = common::user_error(open(&huge, 160_000));
    assert!(e.contains("the state of parameter 0 has 120000 entries"), "{e}");
    let mut small = b"}".to_vec();
    small.extend(text_op(b"momentum_buffer"));
    small.extend(tensor_ops());
    small.push(b's');
    let e = common::user_error(open(&small, 2));
    assert!(e.contains("'optimizer': parameter 0 has two state entries"), "{e}");
    assert_eq!(open(&small, 1).unwrap().momentum.len(), 1, "one entry is read");
}

/// 10 MB of empty tuples (one object per byte, ~130 bytes each: 1.3 GB) stop at the object
/// budget with a clear error.
#[test]
fn a_pickle_of_millions_of_empty_tuples_stops_at_the_object_budget() {
    let mut p = b"\x80\x02".to_vec();
    p.resize(10 << 20, b')');
    p.push(b'.');
    let started = Instant::now();
    let e = parse_as(&p, Dialect::TORCH).unwrap_err();
    assert!(e.contains(&format!("more than {} objects", selfcon::pickle::MAX_OBJECTS)), "{e}");
    assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
}

/// A data set whose images stop arriving after the first `served` each loader worker reads (a
/// FIFO read, a hung network file system): later reads block for `hang`.
struct Hanging {
    inner: std::sync::Arc<dyn selfcon::data::Dataset>,
    served: usize,
    hang: std::time::Duration,
}

thread_local! {
    static READS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl selfcon::data::Dataset for Hanging {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn num_classes(&self) -> i64 {
        self.inner.num_classes()
    }
    fn label(&self, index: usize) -> i64 {
        self.inner.label(index)
    }
    fn image(&self, index: usize) -> selfcon::Result<selfcon::data::Image> {
        if READS.replace(READS.get() + 1) >= self.served {
            std::thread::sleep(self.hang);
        }
        self.inner.image(index)
    }
}

/// Asks to stop (as SIGTERM would) from its fourth question on: the training loop asks at the
/// start of a pass, once per step, and while a batch has been awaited for 2 s — so with two
/// batches that arrive and a third that hangs, the fourth question comes during the wait.
struct StopOnFourthQuestion(usize);

impl selfcon::train::Progress for StopOnFourthQuestion {
    fn stop_requested(&mut self) -> Option<i32> {
        self.0 += 1;
        (self.0 >= 4).then_some(libc::SIGTERM)
    }
}

/// Data that never arrives cannot make a run unstoppable: a stop asked while a batch is awaited
/// saves the steps done and ends the run within seconds (issue #31's FIFO row; without this the
/// run waited for the data, here 12 × 30 s, before it could stop).
#[test]
fn a_stop_is_honoured_while_a_batch_never_arrives() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_fashion_mnist(dir.path(), 36, 8);
    let mut data = selfcon::data::open_dataset(selfcon::data::DatasetKind::FashionMnist, Some(dir.path())).unwrap();
    // Batches of 12, two workers: the first (batches 1 and 3) serves one batch, then hangs.
    let hang = std::time::Duration::from_secs(30);
    data.train = std::sync::Arc::new(Hanging { inner: data.train.clone(), served: 12, hang });
    let save = tempfile::tempdir().unwrap();
    let config = common::tiny_pretrain_config(save.path(), 1, 12);
    let started = Instant::now();
    let start = selfcon::train::Start::Fresh;
    let e = selfcon::train::pretrain(&config, &data, tch::Device::Cpu, &start, &mut StopOnFourthQuestion(0))
        .expect_err("stopped");
    let waited = started.elapsed();
    let selfcon::Error::Interrupted { message, saved, .. } = &e else { panic!("not an interruption: {e}") };
    // Two steps, then the wait (on a machine too busy to deliver a batch within 2 s, the wait
    // comes earlier; the position says where the run stopped either way).
    let steps =
        (0..=2).find(|s| message.starts_with(&format!("pretrain stopped by SIGTERM at epoch 1, step {s} of 3;")));
    let steps = steps.unwrap_or_else(|| panic!("{message}"));
    let saved = saved.as_ref().unwrap();
    let position = selfcon::checkpoint::load(saved).unwrap().metadata["position"].clone();
    assert!(position.contains(&format!("\"steps\":{steps},")), "{position}");
    // Without the wait's question the fourth comes only with the third batch, 12 × 30 s away.
    assert!(waited.as_secs() < 30, "stopped after {waited:?}: not during the wait");
}

/// Keys pickled as `_codecs.encode("k1", E)` with one memoised 512 KB "encoding" E, named by
/// 60,000 entries: a reader copying E at each comparison copies ~90 GB; compared in place, the
/// file is refused at once (#31 review).
#[test]
fn a_huge_memoised_encoding_argument_is_never_copied() {
    let mut p = b"\x80\x02}(c_codecs\nencode\n".to_vec();
    p.extend(text_op(b"k1"));
    p.extend(text_op(&vec![b'e'; 512 << 10]));
    p.extend_from_slice(b"\x86Rr\x03\x00\x00\x00");
    p.extend(tensor_ops());
    p.extend_from_slice(b"r\x04\x00\x00\x00");
    for _ in 1..60_000 {
        p.extend_from_slice(b"h\x03h\x04");
    }
    p.extend_from_slice(b"u.");
    let dir = tempfile::tempdir().unwrap();
    let path = torch_archive(dir.path(), &p);
    let started = Instant::now();
    let e = common::user_error(selfcon::checkpoint::OfficialCheckpoint::open(&path).map(|_| ()));
    assert!(e.contains("hostile.pth") && e.chars().count() <= 200, "{e}");
    assert!(started.elapsed().as_secs() < 2, "{:?}", started.elapsed());
}
