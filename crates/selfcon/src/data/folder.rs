//! Datasets streamed from image files: torchvision's ImageFolder layout (ImageNet, any
//! class-per-folder tree), Tiny-ImageNet's own layout, and the official ImageNet-100 subset.
//! Files are listed once; each image is read and decoded when the loader asks for it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::augment::resize_shorter_side;
use super::crop_source::{CropSource, DecodeRequest};
use super::dataset::Dataset;
use super::image::Image;
use crate::error::{Error, Result};

/// File extensions torchvision's ImageFolder accepts (compared case-insensitively).
const IMAGE_EXTENSIONS: [&str; 9] = ["jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp"];

/// The 100 ImageNet classes of the official ImageNet-100, in the file's order (= label order).
const IMAGENET100_CLASSES: &str = include_str!("imagenet100.txt");

#[derive(Clone, Debug)]
pub struct FileDataset {
    pub files: Vec<PathBuf>,
    pub labels: Vec<i64>,
    pub classes: Vec<String>,
    /// Resize the shorter side to this before any transform (the ImageNet-100 reader does).
    pub resize_shorter: Option<usize>,
}

impl Dataset for FileDataset {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn num_classes(&self) -> i64 {
        self.classes.len() as i64
    }

    fn label(&self, index: usize) -> i64 {
        self.labels[index]
    }

    fn image(&self, index: usize) -> Result<Image> {
        let image = decode_image(&self.files[index])?;
        Ok(match self.resize_shorter {
            Some(side) => resize_shorter_side(&image, side),
            None => image,
        })
    }

    fn class_names(&self) -> Vec<String> {
        self.classes.clone()
    }

    fn file_bytes(&self, index: usize) -> Option<Result<Vec<u8>>> {
        self.resize_shorter.is_none().then(|| read_image_file(&self.files[index]))
    }

    fn image_for_crops(&self, index: usize, plan: &mut dyn FnMut(usize, usize) -> DecodeRequest) -> Result<CropSource> {
        if self.resize_shorter.is_some() {
            // ImageNet-100 resizes every image first: its crops are taken from that.
            let image = self.image(index)?;
            plan(image.width, image.height);
            return Ok(CropSource::whole(image));
        }
        let path = &self.files[index];
        decode_for_crops(&read_image_file(path)?, plan).map_err(|why| Error::file(path, why))
    }
}

/// The most pixels a decoded image may have (8,000 × 8,000; ImageNet's largest are ~10 MP): a
/// header claiming more is refused before the pixels are allocated.
pub const MAX_IMAGE_PIXELS: u64 = 64_000_000;
/// The longest side may be at most this many times the shorter one: resizing the shorter side
/// (ImageNet's Resize(256)) of a 1 × 20000 strip would otherwise ask for gigabytes.
pub const MAX_ASPECT_RATIO: u64 = 64;
/// The largest image file read: the pixel cap stored uncompressed (16-bit RGBA TIFF) and some.
const MAX_IMAGE_FILE_BYTES: u64 = 8 * MAX_IMAGE_PIXELS + (1 << 20);
/// What a decoder may allocate for one image (the RGBA/16-bit intermediate of the largest one).
const MAX_DECODER_BYTES: u64 = 1 << 30;

/// Reads and decodes an image file to 8-bit RGB (as PIL's `convert("RGB")`).
pub fn decode_image(path: &Path) -> Result<Image> {
    decode_image_bytes(&read_image_file(path)?).map_err(|why| Error::file(path, why))
}

/// The bytes of an image file: a regular file of at most the largest image allowed.
pub fn read_image_file(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let unreadable = |e: std::io::Error| Error::file(path, format!("unreadable image: {e}"));
    // A FIFO or a device would block or never end: regular files only (listings skip the others).
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => return Err(Error::file(path, "not a regular file")),
        _ => {}
    }
    // Bounded even if the file grows while read: the largest image allowed, stored uncompressed, fits.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(unreadable)?
        .take(MAX_IMAGE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_IMAGE_FILE_BYTES {
        return Err(Error::file(path, format!("image file is larger than {MAX_IMAGE_FILE_BYTES} bytes")));
    }
    Ok(bytes)
}

/// Decodes an image held in memory for crops (see [`Dataset::image_for_crops`]): a JPEG's size
/// is read from its header, and when the crops accept a reduction, the DCT-domain scaled decode
/// of their region is used; anything else is decoded whole.
pub fn decode_for_crops(
    bytes: &[u8],
    plan: &mut dyn FnMut(usize, usize) -> DecodeRequest,
) -> std::result::Result<CropSource, String> {
    let Some((width, height)) = super::jpeg_reduced::jpeg_size(bytes) else {
        let image = decode_image_bytes(bytes)?;
        plan(image.width, image.height);
        return Ok(CropSource::whole(image));
    };
    check_size(width as u64, height as u64)?;
    let request = plan(width, height);
    if request.reduction > 1 {
        let region = request.region.unwrap_or(super::augment::CropBox { left: 0, top: 0, width, height });
        let pixels = region.width.div_ceil(request.reduction) * region.height.div_ceil(request.reduction);
        let ticket = super::decode_budget::acquire(pixels as u64 + 1);
        if let Some(mut source) = super::jpeg_reduced::decode_region(bytes, (width, height), request.reduction, region)
        {
            source.image = source.image.holding(ticket);
            return Ok(source);
        }
    }
    let image = decode_image_bytes(bytes)?;
    if (image.width, image.height) != (width, height) {
        return Err(format!(
            "the JPEG header says {width} × {height} pixels, the decoder {} × {}",
            image.width, image.height
        ));
    }
    Ok(CropSource::whole(image))
}

/// Decodes an image held in memory, within the limits above.
pub fn decode_image_bytes(bytes: &[u8]) -> std::result::Result<Image, String> {
    if let Some(decoded) = decode_ycbcr_jpeg(bytes) {
        return decoded;
    }
    let reader = |max_side: Option<u32>| {
        let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| format!("unreadable image: {e}"))?;
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(MAX_DECODER_BYTES);
        limits.max_image_width = max_side;
        limits.max_image_height = max_side;
        reader.limits(limits);
        Ok::<_, String>(reader)
    };
    // The header first: the size is checked before any pixel is decoded.
    let (w, h) = reader(None)?.into_dimensions().map_err(|e| format!("corrupt or unsupported image: {e}"))?;
    check_size(w as u64, h as u64)?;
    // Held until the decoded image is dropped: the workers' decodes share one budget.
    let ticket = super::decode_budget::acquire(w as u64 * h as u64);
    let decoded = reader(Some(w.max(h)))?.decode().map_err(|e| format!("corrupt or unsupported image: {e}"))?;
    let rgb = decoded.into_rgb8();
    let (w, h) = rgb.dimensions();
    Ok(Image::new(w as usize, h as usize, rgb.into_raw()).holding(ticket))
}

/// A colour JPEG (YCbCr, nearly every photograph) decoded by zune-jpeg directly, with the options
/// the `image` crate gives it (lenient, RGB out), so the pixels are the same; `None` for anything
/// else (other colour spaces, not a JPEG), which goes through `image`. Direct, the headers are
/// parsed once instead of three times and the file is not copied twice first.
fn decode_ycbcr_jpeg(bytes: &[u8]) -> Option<std::result::Result<Image, String>> {
    use zune_core::colorspace::ColorSpace;
    // `image`'s own test for a JPEG, so that nothing it refuses is decoded here.
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return None;
    }
    let options = zune_core::options::DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(bytes), options);
    decoder.decode_headers().ok()?;
    if decoder.input_colorspace()? != ColorSpace::YCbCr {
        return None;
    }
    let (w, h) = decoder.dimensions()?;
    Some((|| {
        check_size(w as u64, h as u64)?;
        let ticket = super::decode_budget::acquire(w as u64 * h as u64);
        let pixels = decoder.decode().map_err(|e| format!("corrupt or unsupported image: {e}"))?;
        if pixels.len() != w * h * 3 {
            return Err(format!(
                "corrupt or unsupported image: {} bytes decoded for {w} × {h} RGB pixels",
                pixels.len()
            ));
        }
        Ok(Image::new(w, h, pixels).holding(ticket))
    })())
}

fn check_size(w: u64, h: u64) -> std::result::Result<(), String> {
    if w == 0 || h == 0 {
        return Err(format!("image is {w} × {h} pixels (empty)"));
    }
    if w * h > MAX_IMAGE_PIXELS {
        return Err(format!("image is {w} × {h} pixels, more than the {MAX_IMAGE_PIXELS}-pixel limit"));
    }
    if w.max(h) > MAX_ASPECT_RATIO * w.min(h) {
        return Err(format!(
            "image is {w} × {h} pixels, longer than {MAX_ASPECT_RATIO} times its shorter side (resizing it would take too much memory)"
        ));
    }
    Ok(())
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::file(dir, "missing folder"),
        _ => Error::Io { path: dir.to_path_buf(), source: e },
    })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    Ok(paths)
}

/// Every image file below `dir` (following links, sorted at each level, as torchvision walks).
/// A link back to a folder on the current path (a loop) is an error naming it. Each folder is read
/// once, by device and inode: torchvision lists a folder reached through two links twice, which
/// links joining again level after level turn into 2^depth visits. Only regular files (or links
/// to them) are images: a FIFO named `a.jpg` would block the loader for ever.
fn images_below(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut walked = Walked::default();
    walk(dir, out, &mut walked)
}

/// The folders of a walk: those on the current path (a loop) and all read so far.
#[derive(Default)]
struct Walked {
    open: Vec<(u64, u64)>,
    read: std::collections::HashSet<(u64, u64)>,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, walked: &mut Walked) -> Result<()> {
    let entries = list_dir(dir)?;
    let id = crate::files::file_id(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
    if walked.open.contains(&id) {
        let target = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        return Err(Error::file(
            dir,
            format!("is a link back to {} (a folder loop); remove the link", target.display()),
        ));
    }
    if !walked.read.insert(id) {
        return Ok(());
    }
    walked.open.push(id);
    for path in entries {
        if path.is_dir() {
            walk(&path, out, walked)?;
        } else if path.is_file() && is_image(&path) {
            out.push(path);
        }
    }
    walked.open.pop();
    Ok(())
}

/// torchvision's `ImageFolder(root)`: one sub-folder per class, classes sorted by name.
pub fn image_folder(root: &Path) -> Result<FileDataset> {
    let classes: Vec<PathBuf> = list_dir(root)?.into_iter().filter(|p| p.is_dir()).collect();
    if classes.is_empty() {
        return Err(Error::file(root, "no class folders (expected one sub-folder of images per class)"));
    }
    class_folders(classes.iter().map(|p| (p.clone(), name_of(p))).collect())
}

fn name_of(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Images of each `(folder, class name)`, labelled by position.
fn class_folders(classes: Vec<(PathBuf, String)>) -> Result<FileDataset> {
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (label, (dir, _)) in classes.iter().enumerate() {
        let before = files.len();
        images_below(dir, &mut files)?;
        if files.len() == before {
            return Err(Error::file(dir, format!("class folder without images ({})", IMAGE_EXTENSIONS.join(", "))));
        }
        labels.resize(files.len(), label as i64);
    }
    Ok(FileDataset { files, labels, classes: classes.into_iter().map(|(_, n)| n).collect(), resize_shorter: None })
}

/// ImageNet: `ImageFolder(root/train)` and `ImageFolder(root/val)`.
pub fn imagenet(root: &Path, train: bool) -> Result<FileDataset> {
    image_folder(&root.join(if train { "train" } else { "val" }))
}

/// ImageNet-100: the official class list (label = line index, file order) over
/// `root/{train,val}/{wnid}/`, every image first resized to a shorter side of 256.
pub fn imagenet100(root: &Path, train: bool) -> Result<FileDataset> {
    let split = root.join(if train { "train" } else { "val" });
    if !split.is_dir() {
        return Err(Error::file(
            &split,
            "missing folder (ImageNet-100 reads train/ and val/ with one folder per wnid)",
        ));
    }
    let classes =
        IMAGENET100_CLASSES.lines().map(str::trim).filter(|l| !l.is_empty()).map(|w| (split.join(w), w.to_string()));
    let mut set = class_folders(classes.collect())?;
    set.resize_shorter = Some(256);
    Ok(set)
}

/// Tiny-ImageNet (SPEC §3.3): classes from `wnids.txt` sorted; training images
/// `train/**/{wnid}_{k}.JPEG` labelled by their name, validation images labelled through
/// `val/val_annotations.txt`.
pub fn tiny_imagenet(root: &Path, train: bool) -> Result<FileDataset> {
    let wnids_path = root.join("wnids.txt");
    let text =
        std::fs::read_to_string(&wnids_path).map_err(|e| Error::file(&wnids_path, format!("unreadable: {e}")))?;
    let mut classes: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    classes.sort();
    if classes.is_empty() {
        return Err(Error::file(&wnids_path, "lists no classes"));
    }
    let index: HashMap<&str, i64> = classes.iter().enumerate().map(|(i, w)| (w.as_str(), i as i64)).collect();
    let mut files = Vec::new();
    let mut labels = Vec::new();
    if train {
        let mut all = Vec::new();
        images_below(&root.join("train"), &mut all)?;
        for path in all {
            let name = name_of(&path);
            let wnid = name.split('_').next().unwrap_or("");
            let label =
                *index.get(wnid).ok_or_else(|| Error::file(&path, format!("class '{wnid}' is not in wnids.txt")))?;
            files.push(path);
            labels.push(label);
        }
    } else {
        let notes_path = root.join("val/val_annotations.txt");
        let notes =
            std::fs::read_to_string(&notes_path).map_err(|e| Error::file(&notes_path, format!("unreadable: {e}")))?;
        let mut by_file = HashMap::new();
        for (n, line) in notes.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let mut cols = line.split('\t');
            let (Some(file), Some(wnid)) = (cols.next(), cols.next()) else {
                return Err(Error::file(&notes_path, format!("line {} is not 'file<TAB>wnid...'", n + 1)));
            };
            let label = *index.get(wnid).ok_or_else(|| {
                Error::file(&notes_path, format!("line {}: class '{wnid}' is not in wnids.txt", n + 1))
            })?;
            by_file.insert(file.to_string(), label);
        }
        let mut all = Vec::new();
        images_below(&root.join("val"), &mut all)?;
        for path in all {
            let label = *by_file
                .get(&name_of(&path))
                .ok_or_else(|| Error::file(&path, "not listed in val/val_annotations.txt"))?;
            files.push(path);
            labels.push(label);
        }
    }
    if files.is_empty() {
        return Err(Error::file(root.join(if train { "train" } else { "val" }), "no images"));
    }
    Ok(FileDataset { files, labels, classes, resize_shorter: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `image` alone makes of `bytes` (the path every other format takes).
    fn through_image(bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
        let decoded = image::load_from_memory(bytes).map_err(|e| e.to_string())?;
        Ok(decoded.into_rgb8().into_raw())
    }

    fn jpeg(width: u32, height: u32, quality: u8, colour: image::ExtendedColorType) -> Vec<u8> {
        let channels = if colour == image::ExtendedColorType::L8 { 1 } else { 3 };
        let pixels: Vec<u8> = (0..width * height * channels).map(|i| ((i * 37) ^ (i / 7)) as u8).collect();
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
            .encode(&pixels, width, height, colour)
            .unwrap();
        out
    }

    #[test]
    fn colour_jpegs_decoded_directly_equal_images_decode_and_the_rest_go_through_image() {
        for (w, h, q) in [(1, 1, 90), (17, 9, 75), (64, 48, 97), (333, 250, 90)] {
            let bytes = jpeg(w, h, q, image::ExtendedColorType::Rgb8);
            let direct = decode_ycbcr_jpeg(&bytes).expect("a colour JPEG").unwrap();
            assert_eq!((direct.width, direct.height), (w as usize, h as usize));
            assert_eq!(direct.data, through_image(&bytes).unwrap(), "{w}×{h} q{q}");
            // A cut file: the lenient decoder fills what is missing, the same way both routes.
            let cut = &bytes[..bytes.len() * 2 / 3];
            match (decode_image_bytes(cut), through_image(cut)) {
                (Ok(direct), Ok(image)) => assert_eq!(direct.data, image, "{w}×{h} cut"),
                (Err(_), Err(_)) => {}
                (direct, image) => panic!("{w}×{h} cut: {:?} against {:?}", direct.map(|_| ()), image.map(|_| ())),
            }
        }
        for (name, bytes) in [
            ("progressive", &include_bytes!("../../tests/data/jpeg/progressive.jpg")[..]),
            ("4:4:4", include_bytes!("../../tests/data/jpeg/subsampling-444.jpg")),
            ("restart markers", include_bytes!("../../tests/data/jpeg/restart-markers.jpg")),
        ] {
            let direct = decode_ycbcr_jpeg(bytes).expect("a colour JPEG").unwrap();
            assert_eq!(direct.data, through_image(bytes).unwrap(), "{name}");
        }
        let cmyk = include_bytes!("../../tests/data/jpeg/cmyk.jpg");
        assert!(decode_ycbcr_jpeg(cmyk).is_none(), "CMYK goes through image");
        assert_eq!(decode_image_bytes(cmyk).unwrap().data, through_image(cmyk).unwrap());
        let grey = jpeg(20, 10, 90, image::ExtendedColorType::L8);
        assert!(decode_ycbcr_jpeg(&grey).is_none(), "greyscale goes through image");
        assert_eq!(decode_image_bytes(&grey).unwrap().data, through_image(&grey).unwrap());
        assert!(decode_ycbcr_jpeg(b"\x89PNG\r\n\x1a\n").is_none());
        assert!(decode_ycbcr_jpeg(&[0xFF, 0xD8, 0xFF]).is_none(), "no header: image reports it");
        assert!(decode_image_bytes(&[0xFF, 0xD8, 0xFF]).is_err());
    }
}
