//! # sonosam-data
//!
//! Labelled data: the BUSI layout (`X.png` + `X_mask*.png`, listed in `splits.csv`) and a plain
//! `images/` + `masks/` layout. One instance per mask file; problems are reported, never
//! silently dropped. Paths named by a list must stay inside the data folder.
//!
//! No dependencies: the fuzz targets build it quickly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Errors are messages naming the file (and line) and what is wrong.
pub type Result<T> = std::result::Result<T, String>;

/// An image with its lesion masks.
#[derive(Debug, Clone)]
pub struct ImageEntry {
    /// Path relative to the data folder (also the instance key in reports).
    pub image: String,
    pub masks: Vec<String>,
    /// `benign`, `malignant`, `normal`, or empty when unknown.
    pub label: String,
    /// `train`, `val`, `test`, or `all` without a splits file.
    pub split: String,
}

/// A data set folder.
#[derive(Debug)]
pub struct Dataset {
    pub root: PathBuf,
    pub images: Vec<ImageEntry>,
}

impl Dataset {
    /// Open `root`: with `splits` (or `root/splits.csv`) the BUSI layout, else
    /// `root/images` + `root/masks`.
    pub fn open(root: &Path, splits: Option<&Path>) -> Result<Self> {
        if !root.is_dir() {
            return Err(format!("data folder {} does not exist", root.display()));
        }
        let splits_path = splits
            .map(Path::to_path_buf)
            .or_else(|| Some(root.join("splits.csv")).filter(|p| p.exists()));
        let images = match splits_path {
            Some(p) => read_splits(&p)?,
            None if root.join("images").is_dir() && root.join("masks").is_dir() => {
                scan_images_masks(root)?
            }
            None => {
                return Err(format!(
                    "{}: no splits.csv and no images/ + masks/ folders: not a data set this tool reads",
                    root.display()
                ));
            }
        };
        Ok(Self {
            root: root.to_path_buf(),
            images,
        })
    }

    /// Images of one split (`all` = every image).
    pub fn split(&self, split: &str) -> Vec<&ImageEntry> {
        self.images
            .iter()
            .filter(|e| split == "all" || e.split == split)
            .collect()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

fn read_splits(path: &Path) -> Result<Vec<ImageEntry>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_splits(&text).map_err(|e| format!("{}{e}", path.display()))
}

/// Parse a splits list: a CSV header with `image`, `masks` (`;`-separated), `label` and
/// `split` columns, then one image per line. Errors start with ` line N:` or `:` (the caller
/// puts the file name in front).
pub fn parse_splits(text: &str) -> Result<Vec<ImageEntry>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| " is empty".to_string())?
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!(": no `{name}` column (have {header:?})"))
    };
    let (ci, cm, cl, cs) = (col("image")?, col("masks")?, col("label")?, col("split")?);
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(|s| s.trim().trim_matches('"')).collect();
        if f.len() < header.len() {
            return Err(format!(" line {}: expected {} fields", n + 2, header.len()));
        }
        let entry = ImageEntry {
            image: f[ci].to_string(),
            masks: f[cm]
                .split(';')
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect(),
            label: f[cl].to_string(),
            split: f[cs].to_string(),
        };
        for rel in std::iter::once(&entry.image).chain(&entry.masks) {
            inside_data_folder(rel).map_err(|e| format!(" line {}: {e}", n + 2))?;
        }
        out.push(entry);
    }
    Ok(out)
}

/// A data file named in a splits file must lie inside the data folder: a relative path
/// without `..` (a list from elsewhere must not make the tool read arbitrary files).
pub fn inside_data_folder(rel: &str) -> Result<()> {
    use std::path::Component;
    let p = Path::new(rel);
    if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(format!(
            "`{rel}` is not a path inside the data folder (absolute paths and `..` are refused)"
        ));
    }
    Ok(())
}

/// An image file: PNG, JPEG, BMP — or DICOM (`.dcm`) for images, not for masks.
fn is_image(p: &Path, dicom: bool) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| match e.to_ascii_lowercase().as_str() {
        "png" | "jpg" | "jpeg" | "bmp" => true,
        "dcm" => dicom,
        _ => false,
    })
}

/// `images/NAME.ext` with `masks/NAME*.ext` (e.g. `NAME.png`, `NAME_mask.png`, `NAME_1.png`);
/// images may be DICOM files (`NAME.dcm`: its first frame), masks are images.
fn scan_images_masks(root: &Path) -> Result<Vec<ImageEntry>> {
    let list = |dir: &Path, dicom: bool| -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_image(p, dicom))
            .collect();
        v.sort();
        Ok(v)
    };
    let masks = list(&root.join("masks"), false)?;
    let mut by_stem: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in &masks {
        let name = m.file_stem().unwrap().to_string_lossy().to_string();
        by_stem.entry(name).or_default().push(format!(
            "masks/{}",
            m.file_name().unwrap().to_string_lossy()
        ));
    }
    let mut out = Vec::new();
    for img in list(&root.join("images"), true)? {
        let stem = img.file_stem().unwrap().to_string_lossy().to_string();
        let mine: Vec<String> = by_stem
            .iter()
            .filter(|(k, _)| {
                *k == &stem
                    || k.strip_prefix(&stem)
                        .is_some_and(|rest| rest.starts_with('_') || rest.starts_with('-'))
            })
            .flat_map(|(_, v)| v.clone())
            .collect();
        out.push(ImageEntry {
            image: format!("images/{}", img.file_name().unwrap().to_string_lossy()),
            masks: mine,
            label: String::new(),
            split: "all".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_parse_and_stay_inside_the_data_folder() {
        let ok = parse_splits("image,masks,label,split\nbenign/a.png,benign/a_mask.png;benign/a_mask_1.png,benign,train\n").unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].masks.len(), 2);
        for bad in ["../../../../etc/passwd", "/etc/passwd", "a/../../b.png", ""] {
            let text = format!("image,masks,label,split\n{bad},x.png,benign,val\n");
            let e = parse_splits(&text).unwrap_err();
            assert!(e.contains("line 2"), "{bad}: {e}");
        }
        assert!(parse_splits("").unwrap_err().contains("empty"));
        assert!(parse_splits("image,masks\n").unwrap_err().contains("label"));
        assert!(parse_splits("image,masks,label,split\na.png\n").unwrap_err().contains("fields"));
    }
}
