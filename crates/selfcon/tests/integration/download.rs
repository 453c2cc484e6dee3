//! `--download` against a local HTTP server on 127.0.0.1 serving a small CIFAR-shaped archive.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use md5::{Digest, Md5};
use selfcon::data::{ensure_downloaded, load_cifar, ArchiveSource, CifarVariant};

/// A tar.gz of the py2 CIFAR-10 fixture folder.
fn archive() -> Vec<u8> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cifar/py2/cifar-10-batches-py");
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all("cifar-10-batches-py", &fixture).unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

/// What the test server answers on a route.
#[derive(Clone)]
enum Reply {
    /// Status, declared Content-Length, body.
    Full(u16, usize, Vec<u8>),
    /// Declares `len` bytes, sends the body, then sends nothing for 10 s.
    Stall(usize, Vec<u8>),
    /// No Content-Length: the body until the connection closes.
    Unsized(Vec<u8>),
}

/// Serves `routes` on 127.0.0.1 until the test ends; returns the base URL and a count of the
/// requests answered.
fn serve(routes: Vec<(&'static str, Reply)>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let routes = routes.clone();
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut head = [0u8; 2048];
                let n = stream.read(&mut head).unwrap_or(0);
                let request = String::from_utf8_lossy(&head[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                match routes.iter().find(|(p, _)| *p == path).map(|(_, r)| r) {
                    Some(Reply::Full(status, length, body)) => {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 {status} X\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
                        );
                        let _ = stream.write_all(body);
                    }
                    Some(Reply::Stall(length, body)) => {
                        let _ =
                            write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n");
                        let _ = stream.write_all(body);
                        let _ = stream.flush();
                        std::thread::sleep(std::time::Duration::from_secs(10));
                    }
                    Some(Reply::Unsized(body)) => {
                        let _ = write!(stream, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                        let _ = stream.write_all(body);
                    }
                    None => {
                        let _ =
                            write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), count)
}

/// Files left in `root`, the (kept, empty) lock file aside.
fn leftovers(root: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().ends_with(".lock"))
        .collect()
}

fn source(base: &str, path: &str, md5: &str) -> ArchiveSource {
    ArchiveSource {
        url: format!("{base}{path}"),
        md5: md5.into(),
        archive: "cifar-10-python.tar.gz".into(),
        folder: "cifar-10-batches-py".into(),
        size: archive().len() as u64,
        read_timeout: std::time::Duration::from_secs(2),
    }
}

#[test]
fn downloads_verifies_and_unpacks() {
    let body = archive();
    let md5 = Md5::digest(&body).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let len = body.len();
    let mut truncated = body.clone();
    truncated.truncate(len / 2);
    let (base, _) = serve(vec![
        ("/good.tar.gz", Reply::Full(200, len, body.clone())),
        ("/short.tar.gz", Reply::Full(200, len, truncated)),
        ("/other.tar.gz", Reply::Full(200, 5, b"hello".to_vec())),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");

    // A 404 leaves nothing behind.
    let e = ensure_downloaded(&root, &source(&base, "/missing.tar.gz", &md5), false).unwrap_err().to_string();
    assert!(e.contains("download from") && e.contains("404"), "{e}");
    // Wrong content: the MD5 check refuses it and removes the partial file.
    let e = ensure_downloaded(&root, &source(&base, "/other.tar.gz", &md5), false).unwrap_err().to_string();
    assert!(e.contains("does not match the published"), "{e}");
    // A connection that ends early.
    let e = ensure_downloaded(&root, &source(&base, "/short.tar.gz", &md5), false).unwrap_err().to_string();
    assert!(e.contains("failed"), "{e}");
    let left = leftovers(&root);
    assert!(left.is_empty(), "nothing half-written may remain: {left:?}");

    // What a killed download left is removed by the next one (issue #31); others' files stay.
    let stale = root.join("cifar-10-python.tar.4242.part");
    std::fs::write(&stale, b"half").unwrap();
    std::fs::write(root.join("notes.4242.part"), b"not ours").unwrap();
    let dir = ensure_downloaded(&root, &source(&base, "/good.tar.gz", &md5), false).unwrap();
    assert!(!stale.exists(), "a stale partial download is cleaned up");
    assert!(root.join("notes.4242.part").exists());
    std::fs::remove_file(root.join("notes.4242.part")).unwrap();
    assert!(dir.ends_with("cifar-10-batches-py"));
    assert!(root.join("cifar-10-python.tar.gz").is_file(), "archive kept, like torchvision");
    let train = load_cifar(&root, CifarVariant::Cifar10, true).unwrap();
    assert_eq!(train.len(), 10);
    // Present data is used as is: no request is made (the server would answer 404 now).
    ensure_downloaded(&root, &source(&base, "/missing.tar.gz", &md5), false).unwrap();
    // A kept archive is unpacked again without downloading.
    std::fs::remove_dir_all(&dir).unwrap();
    ensure_downloaded(&root, &source(&base, "/missing.tar.gz", &md5), false).unwrap();
    assert!(dir.is_dir());
}

#[test]
fn official_sources_are_the_published_archives() {
    let c10 = ArchiveSource::cifar10();
    assert_eq!(c10.url, "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz");
    assert_eq!(c10.md5, "c58f30108f718f92721af3b95e74349a");
    assert_eq!(ArchiveSource::cifar100().md5, "eb9058c3a382ffc7106e4002c42a8d85");
}

#[test]
fn a_stalled_or_oversized_download_fails_with_a_message_and_leaves_nothing() {
    let body = archive();
    let md5 = Md5::digest(&body).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let len = body.len();
    let mut bigger = body.clone();
    bigger.extend(vec![0u8; 4096]);
    let (base, _) = serve(vec![
        ("/stall.tar.gz", Reply::Stall(len, body[..len / 2].to_vec())),
        ("/announces-more.tar.gz", Reply::Full(200, len + 1, bigger.clone())),
        ("/sends-more.tar.gz", Reply::Unsized(bigger)),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    let started = std::time::Instant::now();
    let e = ensure_downloaded(&root, &source(&base, "/stall.tar.gz", &md5), false).unwrap_err().to_string();
    assert!(e.contains("the server sent nothing for 2 s"), "{e}");
    assert!(started.elapsed().as_secs() < 8, "the read timeout (2 s here) ends the wait");
    let e = ensure_downloaded(&root, &source(&base, "/announces-more.tar.gz", &md5), false).unwrap_err().to_string();
    assert!(e.contains(&format!("announces {} bytes; the archive has {len}", len + 1)), "{e}");
    let e = ensure_downloaded(&root, &source(&base, "/sends-more.tar.gz", &md5), false).unwrap_err().to_string();
    assert!(e.contains(&format!("sent more than the archive's {len} bytes")), "{e}");
    let left = leftovers(&root);
    assert!(left.is_empty(), "nothing half-written may remain: {left:?}");
}

#[test]
fn processes_asking_at_once_download_once() {
    let body = archive();
    let md5 = Md5::digest(&body).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let (base, requests) = serve(vec![("/good.tar.gz", Reply::Full(200, body.len(), body))]);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    // Four "ranks" at once (threads: the lock is per open file, so threads contend as processes do).
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (root, src) = (root.clone(), source(&base, "/good.tar.gz", &md5));
            std::thread::spawn(move || ensure_downloaded(&root, &src, false).map_err(|e| e.to_string()))
        })
        .collect();
    for w in workers {
        let dir = w.join().unwrap().unwrap();
        assert!(dir.join("data_batch_1").is_file());
    }
    assert_eq!(requests.load(Ordering::SeqCst), 1, "one download, the others waited for it");
    let left = leftovers(&root);
    assert_eq!(left.len(), 2, "the archive and its folder only: {left:?}");
}
