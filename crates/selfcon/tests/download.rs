//! `--download` against a local HTTP server on 127.0.0.1 serving a small CIFAR-shaped archive.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

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

/// Serves `routes` (path → (status, declared length, body)) for `requests` requests, then stops.
fn serve(routes: Vec<(&'static str, u16, usize, Vec<u8>)>, requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let mut stream = stream.unwrap();
            let mut head = [0u8; 2048];
            let n = stream.read(&mut head).unwrap_or(0);
            let request = String::from_utf8_lossy(&head[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            match routes.iter().find(|(p, ..)| *p == path) {
                Some((_, status, length, body)) => {
                    let _ =
                        write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n");
                    let _ = stream.write_all(body);
                }
                None => {
                    let _ = write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                }
            }
        }
    });
    format!("http://{addr}")
}

fn source(base: &str, path: &str, md5: &str) -> ArchiveSource {
    ArchiveSource {
        url: format!("{base}{path}"),
        md5: md5.into(),
        archive: "cifar-10-python.tar.gz".into(),
        folder: "cifar-10-batches-py".into(),
    }
}

#[test]
fn downloads_verifies_and_unpacks() {
    let body = archive();
    let md5 = Md5::digest(&body).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let len = body.len();
    let mut truncated = body.clone();
    truncated.truncate(len / 2);
    let base = serve(
        vec![
            ("/good.tar.gz", 200, len, body.clone()),
            ("/short.tar.gz", 200, len, truncated),
            ("/other.tar.gz", 200, 5, b"hello".to_vec()),
        ],
        6,
    );
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
    let leftovers: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(leftovers.is_empty(), "nothing half-written may remain: {leftovers:?}");

    let dir = ensure_downloaded(&root, &source(&base, "/good.tar.gz", &md5), false).unwrap();
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
