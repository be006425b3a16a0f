//! The reject archive: the image of every rejected part, beside the same image with its anomaly map
//! as a heatmap, in a bounded ring of PNG files on disk.
//!
//! The inference loop hands a part over with [`Archive::submit`], which never waits: it copies the
//! part's image region and anomaly map into one of [`ARCHIVE_SLOTS`] preallocated slots and wakes the
//! writer thread. With every slot still waiting for the disk the part is not archived and counted as
//! `dropped`. The writer encodes the PNG, writes it under a temporary name and renames it into place
//! (a reader never sees half a file), then deletes the oldest images beyond `max_images` or
//! `max_megabytes`. A write that fails (disk full, permissions, a file size limit) is logged,
//! counted as `failed`, its partial file removed, and the line goes on.
//!
//! Files are named `NNNNNNNN-YYYYMMDDTHHMMSSZ-partSEQ-VERDICT-SCORE.png`; the ring continues the
//! numbering of the files it finds at start, so its bounds hold across restarts.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use heapless::mpmc::MpMcQueue;

use crate::preprocess::Roi;
use crate::stats::LogThrottle;

/// Parts that can wait for the disk at once; one more is dropped (and counted).
pub const ARCHIVE_SLOTS: usize = 4;

/// What went wrong setting up the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reject archive {dir}: cannot use the folder: {source}; create it and let the user partguard runs as write to it, or change archive.dir")]
    Folder {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reject archive {dir}: cannot start the writer thread: {source}")]
    Thread {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The archive's bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveSettings {
    pub dir: PathBuf,
    /// Most images kept; the oldest go first.
    pub max_images: usize,
    /// Most bytes kept; the oldest go first.
    pub max_bytes: u64,
}

/// What the archive did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArchiveCounts {
    /// Images written.
    pub archived: u64,
    /// Parts not archived because every slot was waiting for the disk.
    pub dropped: u64,
    /// Writes that failed (disk full, permissions, ...).
    pub failed: u64,
    /// Old images deleted to keep the ring within its bounds.
    pub removed: u64,
}

/// Why the part is archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveReason {
    /// Its score crossed the threshold.
    Reject,
    /// It could not be judged (inference fault) and was handled by the fail-safe policy.
    Fault,
}

impl ArchiveReason {
    fn as_str(self) -> &'static str {
        match self {
            ArchiveReason::Reject => "NG",
            ArchiveReason::Fault => "FAULT",
        }
    }
}

/// One part handed to the archive: the frame (RGB24, `width` x `height`), the region the model saw,
/// and the anomaly map when the model produced one.
#[derive(Debug, Clone, Copy)]
pub struct ArchivedPart<'a> {
    pub seq: u64,
    pub reason: ArchiveReason,
    pub score: f32,
    pub frame: &'a [u8],
    pub width: u32,
    pub height: u32,
    pub roi: Option<Roi>,
    /// The anomaly map, row-major, and its width and height.
    pub map: Option<(&'a [f32], usize, usize)>,
}

/// A preallocated copy of one part, waiting for the writer.
#[derive(Default)]
struct Entry {
    seq: u64,
    reason: Option<ArchiveReason>,
    score: f32,
    rgb: Vec<u8>,
    width: usize,
    height: usize,
    map: Vec<f32>,
    map_width: usize,
    map_height: usize,
    wall: Option<SystemTime>,
}

struct Shared {
    slots: [Mutex<Entry>; ARCHIVE_SLOTS],
    /// Slot indices: free for the loop, filled for the writer.
    free: MpMcQueue<u8, 8>,
    filled: MpMcQueue<u8, 8>,
    stop: AtomicBool,
    archived: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    removed: AtomicU64,
}

/// The reject archive and its writer thread. Dropping it writes what is queued and stops the thread.
pub struct Archive {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    dir: PathBuf,
}

impl Archive {
    /// Creates the folder if needed, checks that it is writable, reads the ring already there, and
    /// starts the writer thread.
    pub fn open(settings: ArchiveSettings) -> Result<Archive, ArchiveError> {
        let ring = Ring::scan(&settings)?;
        let shared = Arc::new(Shared {
            slots: Default::default(),
            free: MpMcQueue::new(),
            filled: MpMcQueue::new(),
            stop: AtomicBool::new(false),
            archived: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            removed: AtomicU64::new(0),
        });
        for i in 0..ARCHIVE_SLOTS as u8 {
            // Cannot fail: the queue holds more than ARCHIVE_SLOTS.
            let _ = shared.free.enqueue(i);
        }
        let dir = settings.dir.clone();
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("archive".into())
                .spawn(move || writer_loop(&shared, ring))
                .map_err(|source| ArchiveError::Thread {
                    dir: dir.clone(),
                    source,
                })?
        };
        Ok(Archive {
            shared,
            writer: Some(writer),
            dir,
        })
    }

    /// The folder the images go to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Hands a part to the writer without waiting. `false`: every slot is busy, the part is not
    /// archived (counted as dropped). Allocation-free once each slot has held a part this size.
    pub fn submit(&self, part: &ArchivedPart<'_>) -> bool {
        let Some(i) = self.shared.free.dequeue() else {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        // Only the writer locks a slot taken from `filled`; a free slot is ours alone.
        if let Ok(mut e) = self.shared.slots[usize::from(i)].lock() {
            copy_part(&mut e, part);
        }
        // Cannot fail: a slot index is in at most one queue.
        let _ = self.shared.filled.enqueue(i);
        if let Some(w) = &self.writer {
            w.thread().unpark();
        }
        true
    }

    /// The counts so far (writes still queued are not in them yet).
    pub fn counts(&self) -> ArchiveCounts {
        let s = &self.shared;
        ArchiveCounts {
            archived: s.archived.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            removed: s.removed.load(Ordering::Relaxed),
        }
    }

    /// Writes what is queued, stops the writer and returns the final counts.
    pub fn finish(mut self) -> ArchiveCounts {
        self.stop_writer();
        self.counts()
    }

    fn stop_writer(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(w) = self.writer.take() {
            w.thread().unpark();
            if w.join().is_err() {
                log::error!(
                    "reject archive {}: writer thread panicked",
                    self.dir.display()
                );
            }
        }
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        self.stop_writer();
    }
}

fn copy_part(e: &mut Entry, part: &ArchivedPart<'_>) {
    let roi = Roi::or_whole_frame(part.roi, part.width, part.height);
    let size = (roi.width as usize, roi.height as usize);
    let frame_size = (part.width, part.height);
    (e.width, e.height) = if roi.copy_rgb(part.frame, frame_size, size, &mut e.rgb) {
        size
    } else {
        (0, 0)
    };
    e.map.clear();
    match part.map {
        Some((m, mw, mh)) if m.len() >= mw * mh => {
            e.map.extend_from_slice(&m[..mw * mh]);
            e.map_width = mw;
            e.map_height = mh;
        }
        _ => {
            e.map_width = 0;
            e.map_height = 0;
        }
    }
    e.seq = part.seq;
    e.reason = Some(part.reason);
    e.score = part.score;
    e.wall = Some(SystemTime::now());
}

/// The files of the ring, oldest first.
struct Ring {
    dir: PathBuf,
    files: VecDeque<(PathBuf, u64)>,
    bytes: u64,
    next_index: u64,
    max_images: usize,
    max_bytes: u64,
}

impl Ring {
    fn scan(settings: &ArchiveSettings) -> Result<Ring, ArchiveError> {
        let dir = &settings.dir;
        let folder_err = |source: std::io::Error| ArchiveError::Folder {
            dir: dir.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(folder_err)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(folder_err)? {
            let entry = entry.map_err(folder_err)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(".partguard-tmp-") {
                // Left by a run that died mid-write.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some(index) = ring_index(name) else {
                continue;
            };
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            found.push((index, entry.path(), size));
        }
        // Prove the folder is writable now, not at the first reject.
        let probe = dir.join(".partguard-tmp-probe");
        std::fs::write(&probe, b"")
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| {
                folder_err(std::io::Error::new(
                    e.kind(),
                    format!("cannot write in it: {e}"),
                ))
            })?;
        found.sort();
        let next_index = found.last().map_or(0, |(i, _, _)| i + 1);
        let bytes = found.iter().map(|(_, _, s)| s).sum();
        let mut ring = Ring {
            dir: dir.clone(),
            files: found.into_iter().map(|(_, p, s)| (p, s)).collect(),
            bytes,
            next_index,
            max_images: settings.max_images.max(1),
            max_bytes: settings.max_bytes,
        };
        ring.trim(0);
        Ok(ring)
    }

    /// Deletes the oldest files until `incoming` more bytes and one more file fit (with `incoming`
    /// 0: until the ring is within its bounds). Returns how many were deleted.
    fn trim(&mut self, incoming: u64) -> u64 {
        let extra = usize::from(incoming > 0);
        let mut removed = 0;
        while !self.files.is_empty()
            && (self.files.len() + extra > self.max_images
                || self.bytes + incoming > self.max_bytes)
        {
            let Some((path, size)) = self.files.pop_front() else {
                break;
            };
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!(
                    "reject archive: cannot delete {} to keep the ring bounded: {e}",
                    path.display()
                ),
            }
            self.bytes = self.bytes.saturating_sub(size);
        }
        removed
    }
}

/// The ring index of an archive file name (`NNNNNNNN-....png`).
fn ring_index(name: &str) -> Option<u64> {
    let (digits, rest) = name.split_once('-')?;
    if digits.len() != 8 || !rest.ends_with(".png") {
        return None;
    }
    digits.parse().ok()
}

fn writer_loop(shared: &Shared, mut ring: Ring) {
    let mut png = Vec::new();
    let mut image = Vec::new();
    let mut throttle = LogThrottle::new(Duration::from_secs(5));
    let started = std::time::Instant::now();
    loop {
        // `stop` is set after the last submit: read before the queue, an empty queue then means
        // every part has been written.
        let stopping = shared.stop.load(Ordering::Acquire);
        match shared.filled.dequeue() {
            Some(i) => write_slot(
                shared,
                &mut ring,
                i,
                &mut image,
                &mut png,
                &mut throttle,
                started,
            ),
            None if stopping => return,
            None => std::thread::park_timeout(Duration::from_millis(200)),
        }
    }
}

fn write_slot(
    shared: &Shared,
    ring: &mut Ring,
    i: u8,
    image: &mut Vec<u8>,
    png: &mut Vec<u8>,
    throttle: &mut LogThrottle,
    started: std::time::Instant,
) {
    let name = match shared.slots[usize::from(i)].lock() {
        Ok(e) if e.width > 0 => {
            let (w, h) = compose(&e, image);
            png.clear();
            let encoded = image::codecs::png::PngEncoder::new(&mut *png);
            let r = image::ImageEncoder::write_image(
                encoded,
                image,
                w as u32,
                h as u32,
                image::ExtendedColorType::Rgb8,
            );
            r.ok().map(|_| file_name(ring.next_index, &e))
        }
        _ => None,
    };
    // The slot is free again as soon as the image is encoded.
    let _ = shared.free.enqueue(i);
    let Some(name) = name else {
        shared.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let removed = ring.trim(png.len() as u64);
    shared.removed.fetch_add(removed, Ordering::Relaxed);
    let tmp = ring.dir.join(format!(".partguard-tmp-{}", ring.next_index));
    let path = ring.dir.join(&name);
    let result = std::fs::write(&tmp, &*png).and_then(|_| std::fs::rename(&tmp, &path));
    match result {
        Ok(()) => {
            ring.files.push_back((path, png.len() as u64));
            ring.bytes += png.len() as u64;
            ring.next_index += 1;
            shared.archived.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            let failed = shared.failed.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(suppressed) = throttle.allow(started.elapsed()) {
                log::error!(
                    "reject archive: cannot write {} ({e}); {failed} images not archived so far{}; inspection goes on",
                    path.display(),
                    if suppressed > 0 {
                        format!(" ({suppressed} more failures since the last message)")
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
}

fn file_name(index: u64, e: &Entry) -> String {
    let secs = e
        .wall
        .and_then(|w| w.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let stamp: String = crate::clock::utc_from_unix(secs)
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let reason = e.reason.map_or("NG", ArchiveReason::as_str);
    let score = if e.score.is_finite() {
        format!("{:.4}", e.score)
    } else {
        "nan".to_owned()
    };
    format!("{index:08}-{stamp}-part{}-{reason}-{score}.png", e.seq)
}

/// The archived picture into `out` (RGB24): the part on the left, the part under its heatmap on the
/// right; without a map, the part alone. Returns its width and height.
fn compose(e: &Entry, out: &mut Vec<u8>) -> (usize, usize) {
    let map = (e.map_width > 0 && e.map_height > 0).then_some((
        e.map.as_slice(),
        e.map_width,
        e.map_height,
    ));
    part_beside_heatmap(&e.rgb, e.width, e.height, map, out)
}

/// `rgb` (`w` x `h`, RGB24) on the left and the same under the heatmap of `map` (row-major, with
/// its width and height) on the right, into `out`; without a map, the part alone. Returns the
/// picture's width and height. The archive and the page's frame both show parts this way.
pub fn part_beside_heatmap(
    rgb: &[u8],
    w: usize,
    h: usize,
    map: Option<(&[f32], usize, usize)>,
    out: &mut Vec<u8>,
) -> (usize, usize) {
    let Some((map, mw, mh)) = map else {
        out.clear();
        out.extend_from_slice(&rgb[..w * h * 3]);
        return (w, h);
    };
    let ow = 2 * w;
    out.clear();
    out.resize(ow * h * 3, 0);
    let mut overlay = Vec::with_capacity(w * h * 3);
    heatmap_overlay(rgb, w, h, map, mw, mh, &mut overlay);
    for y in 0..h {
        let row = &mut out[y * ow * 3..(y + 1) * ow * 3];
        row[..w * 3].copy_from_slice(&rgb[y * w * 3..(y + 1) * w * 3]);
        row[w * 3..].copy_from_slice(&overlay[y * w * 3..(y + 1) * w * 3]);
    }
    (ow, h)
}

/// Blends `rgb` (`w` x `h`) half and half with the jet colour of the anomaly map, which is
/// bilinearly resized to the image; map values are clamped to 0..1 (blue = 0, red = 1; a
/// non-finite value shows as 1), so heatmaps of different parts compare directly.
pub fn heatmap_overlay(
    rgb: &[u8],
    w: usize,
    h: usize,
    map: &[f32],
    mw: usize,
    mh: usize,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.reserve(w * h * 3);
    let sample = |x: usize, y: usize| {
        let v = map[y * mw + x];
        if v.is_finite() {
            v.clamp(0.0, 1.0)
        } else {
            1.0
        }
    };
    for y in 0..h {
        let (y0, y1, ty) = bilinear_taps(y, h, mh);
        for x in 0..w {
            let (x0, x1, tx) = bilinear_taps(x, w, mw);
            let top = sample(x0, y0) * (1.0 - tx) + sample(x1, y0) * tx;
            let bottom = sample(x0, y1) * (1.0 - tx) + sample(x1, y1) * tx;
            let colour = jet(top * (1.0 - ty) + bottom * ty);
            let p = &rgb[(y * w + x) * 3..(y * w + x) * 3 + 3];
            for c in 0..3 {
                out.push(((u16::from(p[c]) + u16::from(colour[c])) / 2) as u8);
            }
        }
    }
}

/// Output pixel `i` of `n_out` in a map of `n_in`: the two source taps and the weight of the second
/// (pixel centres aligned, as the model's resize is).
fn bilinear_taps(i: usize, n_out: usize, n_in: usize) -> (usize, usize, f32) {
    let f = ((i as f32 + 0.5) * n_in as f32 / n_out as f32 - 0.5).clamp(0.0, (n_in - 1) as f32);
    let i0 = f.floor() as usize;
    (i0, (i0 + 1).min(n_in - 1), f - f.floor())
}

/// The jet colour map: 0 dark blue, 0.5 green-yellow, 1 dark red.
pub fn jet(v: f32) -> [u8; 3] {
    let v = v.clamp(0.0, 1.0);
    let channel = |centre: f32| (1.5 - (4.0 * v - centre).abs()).clamp(0.0, 1.0);
    [
        (channel(3.0) * 255.0).round() as u8,
        (channel(2.0) * 255.0).round() as u8,
        (channel(1.0) * 255.0).round() as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_runs_from_blue_to_red() {
        assert_eq!(jet(0.0), [0, 0, 128]);
        assert_eq!(jet(1.0), [128, 0, 0]);
        let mid = jet(0.5);
        assert!(mid[1] == 255 && mid[0] == 128 && mid[2] == 128, "{mid:?}");
    }

    #[test]
    fn ring_index_reads_only_archive_names() {
        assert_eq!(
            ring_index("00000042-20261128T101010Z-part7-NG-0.5000.png"),
            Some(42)
        );
        assert_eq!(ring_index("notes.txt"), None);
        assert_eq!(ring_index("123-x.png"), None);
        assert_eq!(ring_index(".partguard-tmp-3"), None);
    }
}
