//! A folder of collected part images for training: what the model will see (the `[roi]` crop of
//! each frame, full resolution, PNG), numbered `000001.png`, `000002.png`, ... without ever
//! overwriting a file, and a `manifest.json` that says when, from which camera, under which
//! controls each image was taken. The folder is directly the `--data` of `models/train.py`.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use image::ImageEncoder as _;
use serde::{Deserialize, Serialize};

use crate::capture::controls::ControlsInForce;
use crate::capture::Roi;

/// The manifest's file name inside a collection folder.
pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("cannot use collection folder {dir}: {source}; give --out a folder you can write")]
    Folder {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}: {source}; the images saved so far are kept (disk full?)")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot encode {path} as PNG: {reason}")]
    Encode { path: PathBuf, reason: String },
    #[error(
        "{path} is not a collect manifest ({source}); move it away or collect into another folder"
    )]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("collection folder {dir} holds images labelled \"{existing}\"; collect \"{label}\" parts into another folder (one label per folder)")]
    OtherLabel {
        dir: PathBuf,
        existing: String,
        label: String,
    },
}

/// One saved image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageEntry {
    pub file: String,
    /// UTC, RFC 3339, when the frame was taken.
    pub time: String,
    /// The source's frame number.
    pub frame: u64,
}

/// One `partguard collect` invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectSession {
    pub partguard_version: String,
    pub started: String,
    pub finished: Option<String>,
    /// The source, as `check` describes it.
    pub source: String,
    /// The `[camera.controls]` in force, read back from the camera.
    pub camera_controls: ControlsInForce,
    /// The crop saved (None: the whole frame).
    pub roi: Option<Roi>,
    /// "trigger" (one image per part) or "frames" (every frame, thinned by the options below).
    pub mode: String,
    pub every_ms: Option<f64>,
    pub min_change: Option<f64>,
    pub frames_seen: u64,
    pub skipped_unchanged: u64,
    pub images: Vec<ImageEntry>,
}

/// The collection's manifest: every session that added images.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `good` for training images; anything else is a defect class (calibrate --defects, eval).
    pub label: String,
    pub sessions: Vec<CollectSession>,
}

/// A collection folder open for adding images.
pub struct Collection {
    dir: PathBuf,
    next: u64,
    manifest: Manifest,
}

/// An image to save: packed RGB24 or 8-bit grey, `width` x `height`.
pub struct Crop<'a> {
    pub pixels: &'a [u8],
    pub width: u32,
    pub height: u32,
    pub grey: bool,
}

impl Collection {
    /// Opens (creating it) `dir` for `label` images; numbering continues after the highest
    /// `NNNNNN.png` already there.
    pub fn open(dir: &Path, label: &str) -> Result<Collection, CollectError> {
        let folder_err = |source| CollectError::Folder {
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(folder_err)?;
        let mut highest = 0u64;
        for entry in std::fs::read_dir(dir).map_err(folder_err)? {
            let name = entry.map_err(folder_err)?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_suffix(".png")
                .and_then(|s| s.parse::<u64>().ok())
            {
                highest = highest.max(n);
            }
        }
        let path = dir.join(MANIFEST);
        let manifest = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str::<Manifest>(&text).map_err(|source| {
                CollectError::Manifest {
                    path: path.clone(),
                    source,
                }
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Manifest {
                label: label.to_owned(),
                sessions: Vec::new(),
            },
            Err(e) => return Err(CollectError::Write { path, source: e }),
        };
        if manifest.label != label {
            return Err(CollectError::OtherLabel {
                dir: dir.to_owned(),
                existing: manifest.label,
                label: label.to_owned(),
            });
        }
        Ok(Collection {
            dir: dir.to_owned(),
            next: highest + 1,
            manifest,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The number the next image gets.
    pub fn next_number(&self) -> u64 {
        self.next
    }

    /// Starts a session; images saved from now on are listed under it.
    pub fn begin(&mut self, session: CollectSession) -> Result<(), CollectError> {
        self.manifest.sessions.push(session);
        self.write_manifest()
    }

    /// The session being collected.
    pub fn session(&mut self) -> Option<&mut CollectSession> {
        self.manifest.sessions.last_mut()
    }

    /// Saves `crop` as the next numbered PNG (never replacing a file: a name taken meanwhile is
    /// skipped) and lists it in the manifest.
    pub fn save(
        &mut self,
        crop: &Crop<'_>,
        time: String,
        frame: u64,
    ) -> Result<PathBuf, CollectError> {
        let channels = if crop.grey { 1 } else { 3 };
        if crop.pixels.len() != crop.width as usize * crop.height as usize * channels {
            return Err(CollectError::Encode {
                path: self.dir.join(format!("{:06}.png", self.next)),
                reason: format!(
                    "{} bytes for a {}x{} image (a bug: report it)",
                    crop.pixels.len(),
                    crop.width,
                    crop.height
                ),
            });
        }
        let (path, file) = loop {
            let path = self.dir.join(format!("{:06}.png", self.next));
            self.next += 1;
            match File::options().write(true).create_new(true).open(&path) {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(CollectError::Write { path, source: e }),
            }
        };
        let color = if crop.grey {
            image::ExtendedColorType::L8
        } else {
            image::ExtendedColorType::Rgb8
        };
        let mut w = io::BufWriter::new(file);
        let encoded = image::codecs::png::PngEncoder::new(&mut w).write_image(
            crop.pixels,
            crop.width,
            crop.height,
            color,
        );
        if let Err(e) = encoded {
            drop(w);
            let _ = std::fs::remove_file(&path);
            return Err(CollectError::Encode {
                path,
                reason: e.to_string(),
            });
        }
        w.flush()
            .and_then(|()| w.get_ref().sync_data())
            .map_err(|e| CollectError::Write {
                path: path.clone(),
                source: e,
            })?;
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(s) = self.session() {
            s.images.push(ImageEntry { file, time, frame });
        }
        self.write_manifest()?;
        Ok(path)
    }

    /// Writes the manifest (to a temporary file, then renamed over the old one).
    pub fn write_manifest(&self) -> Result<(), CollectError> {
        let path = self.dir.join(MANIFEST);
        let tmp = self.dir.join(".manifest.json.tmp");
        let text = serde_json::to_string_pretty(&self.manifest).map_err(|source| {
            CollectError::Manifest {
                path: path.clone(),
                source,
            }
        })?;
        std::fs::write(&tmp, text + "\n")
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| CollectError::Write { path, source: e })
    }
}

/// Skips frames that differ too little from the last saved one (a line standing still): the mean
/// absolute difference of 32x32 grey thumbnails, in grey levels (0-255).
pub struct ChangeGate {
    min_change: f64,
    last: Option<[f32; THUMB * THUMB]>,
}

const THUMB: usize = 32;

impl ChangeGate {
    pub fn new(min_change: f64) -> Self {
        ChangeGate {
            min_change,
            last: None,
        }
    }

    /// The change from the last accepted crop (`None` for the first); accepted (and remembered)
    /// when it is at least `min_change`.
    pub fn accept(&mut self, crop: &Crop<'_>) -> (bool, Option<f64>) {
        let thumb = thumbnail(crop);
        let change = self.last.as_ref().map(|last| {
            last.iter()
                .zip(&thumb)
                .map(|(a, b)| f64::from((a - b).abs()))
                .sum::<f64>()
                / (THUMB * THUMB) as f64
        });
        let ok = change.is_none_or(|c| c >= self.min_change);
        if ok {
            self.last = Some(thumb);
        }
        (ok, change)
    }
}

/// Box-averaged grey thumbnail.
fn thumbnail(crop: &Crop<'_>) -> [f32; THUMB * THUMB] {
    let (w, h) = (crop.width as usize, crop.height as usize);
    let bpp = if crop.grey { 1 } else { 3 };
    let mut sum = [0f32; THUMB * THUMB];
    let mut n = [0u32; THUMB * THUMB];
    for y in 0..h {
        let ty = y * THUMB / h.max(1);
        for x in 0..w {
            let tx = x * THUMB / w.max(1);
            let p = &crop.pixels[(y * w + x) * bpp..(y * w + x) * bpp + bpp];
            let g = p.iter().map(|&v| f32::from(v)).sum::<f32>() / bpp as f32;
            sum[ty * THUMB + tx] += g;
            n[ty * THUMB + tx] += 1;
        }
    }
    for (s, n) in sum.iter_mut().zip(n) {
        *s /= n.max(1) as f32;
    }
    sum
}

/// Copies the `roi` rectangle of a packed RGB24 `width`-wide frame into `out` (RGB24).
pub fn crop_region(rgb: &[u8], width: u32, roi: Roi, out: &mut Vec<u8>) {
    out.clear();
    let (w, x0, y0) = (width as usize, roi.x as usize, roi.y as usize);
    for y in y0..y0 + roi.height as usize {
        out.extend_from_slice(&rgb[(y * w + x0) * 3..(y * w + x0 + roi.width as usize) * 3]);
    }
}

/// Turns packed RGB24 with R = G = B ([`is_grey`]) into 8-bit grey, in place.
pub fn keep_one_channel(rgb: &mut Vec<u8>) {
    let n = rgb.len() / 3;
    for i in 0..n {
        rgb[i] = rgb[3 * i];
    }
    rgb.truncate(n);
}

/// Whether every pixel of a packed RGB24 buffer has R = G = B (a monochrome camera or a grey
/// image replayed): then the crop is saved as an 8-bit grey PNG.
pub fn is_grey(rgb: &[u8]) -> bool {
    rgb.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> CollectSession {
        CollectSession {
            partguard_version: "test".into(),
            started: "2026-12-02T00:00:00Z".into(),
            finished: None,
            source: "test".into(),
            camera_controls: ControlsInForce::new(),
            roi: None,
            mode: "frames".into(),
            every_ms: None,
            min_change: None,
            frames_seen: 0,
            skipped_unchanged: 0,
            images: Vec::new(),
        }
    }

    #[test]
    fn numbering_continues_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("000007.png"), b"not mine").unwrap();
        let mut c = Collection::open(dir.path(), "good").unwrap();
        assert_eq!(c.next_number(), 8);
        c.begin(session()).unwrap();
        let px = [10u8; 4 * 2 * 3];
        let crop = Crop {
            pixels: &px,
            width: 4,
            height: 2,
            grey: false,
        };
        let p = c.save(&crop, "t".into(), 0).unwrap();
        assert!(p.ends_with("000008.png"));
        // A file appearing under the next name meanwhile is skipped, not replaced.
        std::fs::write(dir.path().join("000009.png"), b"someone else's").unwrap();
        let p = c.save(&crop, "t".into(), 1).unwrap();
        assert!(p.ends_with("000010.png"));
        assert_eq!(
            std::fs::read(dir.path().join("000007.png")).unwrap(),
            b"not mine"
        );
        assert_eq!(
            std::fs::read(dir.path().join("000009.png")).unwrap(),
            b"someone else's"
        );
        let img = image::open(&p).unwrap();
        assert_eq!((img.width(), img.height()), (4, 2));
        // Reopened: numbering goes on, the manifest keeps the first session.
        let c2 = Collection::open(dir.path(), "good").unwrap();
        assert_eq!(c2.next_number(), 11);
        assert_eq!(c2.manifest.sessions[0].images.len(), 2);
        // Another label in the same folder is refused.
        let e = Collection::open(dir.path(), "scratch")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("\"good\"") && e.contains("\"scratch\""), "{e}");
        // A wrong-sized buffer is an error, not a panic, and leaves no file.
        let bad = Crop {
            pixels: &px[..5],
            width: 4,
            height: 2,
            grey: false,
        };
        let mut c3 = c2;
        assert!(c3.save(&bad, "t".into(), 2).is_err());
        assert!(!dir.path().join("000011.png").exists());
    }

    #[test]
    fn the_change_gate_skips_a_line_standing_still() {
        let mut gate = ChangeGate::new(2.0);
        let a = vec![100u8; 64 * 64];
        let mut b = a.clone();
        b[..64 * 8].fill(200); // an eighth of the image changes by 100: mean change 12.5
        fn crop(p: &[u8]) -> Crop<'_> {
            Crop {
                pixels: p,
                width: 64,
                height: 64,
                grey: true,
            }
        }
        assert_eq!(gate.accept(&crop(&a)), (true, None));
        assert!(!gate.accept(&crop(&a)).0);
        let (ok, change) = gate.accept(&crop(&b));
        assert!(ok && (change.unwrap() - 12.5).abs() < 1e-3, "{change:?}");
    }

    #[test]
    fn crops_keep_full_resolution_and_grey_is_detected() {
        let (w, h) = (6u32, 4u32);
        let rgb: Vec<u8> = (0..w * h).flat_map(|i| [i as u8; 3]).collect();
        assert!(is_grey(&rgb));
        let roi = Roi {
            x: 2,
            y: 1,
            width: 3,
            height: 2,
        };
        let mut out = Vec::new();
        crop_region(&rgb, w, roi, &mut out);
        assert_eq!(out.len(), 18);
        keep_one_channel(&mut out);
        assert_eq!(out, [8, 9, 10, 14, 15, 16]);
        assert!(!is_grey(&[1, 2, 3]));
    }
}
