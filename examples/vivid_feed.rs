//! Feeds part images through the vivid V4L2 test driver's loop (output node -> HDMI capture node)
//! and triggers partguard once per image through its software-trigger socket: the camera side of
//! the whole-system test (`cross/e2e`), usable by hand on any machine with vivid loaded.
//!
//! ```text
//! modprobe vivid n_devs=1 node_types=0x101      # /dev/video0 capture, /dev/video1 output
//! vivid_feed --trigger /tmp/trigger --decisions run.txt --manifest feed.txt good.png crack.png ...
//! ```
//!
//! Each image is placed unscaled in the middle of a mid-grey 1280x720 YUYV frame (BT.601 limited
//! range, what partguard's YUYV conversion inverts); `--print-roi` gives the `[roi]` that frames it.
//! For each image in order: show it, wait `--settle-ms` so the capture side shows it, send one
//! datagram to the trigger socket, log `index label path trigger_ns` (CLOCK_MONOTONIC) to the
//! manifest, then wait until partguard has printed one more `part` decision line, so every image
//! is exactly one inspected part. The output is fed with raw REQBUFS/QUERYBUF/QBUF/DQBUF/STREAMON
//! ioctls (the `v4l` crate's output stream never starts on vivid: it polls before the first QBUF).

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use clap::Parser;
use v4l::control::{Control, Value};
use v4l::v4l2::{ioctl, vidioc};
use v4l::v4l_sys::{v4l2_buffer, v4l2_requestbuffers};
use v4l::video::Output;
use v4l::{Device, FourCC};

const BUF_TYPE_OUTPUT: u32 = 2; // V4L2_BUF_TYPE_VIDEO_OUTPUT
const MEMORY_MMAP: u32 = 1; // V4L2_MEMORY_MMAP
const HDMI_OUTPUT: i32 = 1; // vivid's output 1 (HDMI) loops to capture input 3 (HDMI)

#[derive(Parser)]
#[command(about = "Feed part images through vivid's loop and trigger partguard once per image")]
struct Args {
    /// vivid's output node.
    #[arg(long, default_value = "/dev/video1")]
    output: PathBuf,
    /// vivid's capture node (its loop and OSD controls are set here).
    #[arg(long, default_value = "/dev/video0")]
    capture: PathBuf,
    #[arg(long, default_value_t = 1280)]
    width: u32,
    #[arg(long, default_value_t = 720)]
    height: u32,
    /// partguard's `[trigger] socket`.
    #[arg(long)]
    trigger: Option<PathBuf>,
    /// partguard's stdout (one `part` line per decision), to pace the images.
    #[arg(long)]
    decisions: Option<PathBuf>,
    /// Where to log what was shown and when it was triggered.
    #[arg(long)]
    manifest: Option<PathBuf>,
    #[arg(long, default_value_t = 1500)]
    settle_ms: u64,
    /// Before the first trigger, wait until this file holds `--ready-text` (e.g. partguard's log
    /// line that its capture is open), besides the socket existing.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    #[arg(long, default_value = "source: ")]
    ready_text: String,
    /// Longest wait for partguard's socket or one decision.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// Print the [roi] for these images at this frame size and exit.
    #[arg(long)]
    print_roi: bool,
    images: Vec<PathBuf>,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("vivid_feed: {e}");
        std::process::exit(1);
    }
}

type Res<T> = Result<T, String>;

fn run(args: &Args) -> Res<()> {
    if args.images.is_empty() {
        return Err("give at least one image".into());
    }
    let parts: Vec<(PathBuf, image::RgbImage)> = args
        .images
        .iter()
        .map(|p| {
            image::open(p)
                .map(|i| (p.clone(), i.into_rgb8()))
                .map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect::<Res<_>>()?;
    let (iw, ih) = parts[0].1.dimensions();
    if parts.iter().any(|(_, i)| i.dimensions() != (iw, ih)) {
        return Err("all images must have the same size (the ROI is fixed)".into());
    }
    if iw > args.width || ih > args.height || iw % 2 != 0 {
        return Err(format!(
            "{iw}x{ih} images do not fit a {}x{} frame (even width needed)",
            args.width, args.height
        ));
    }
    let (x0, y0) = (((args.width - iw) / 2) & !1, (args.height - ih) / 2);
    if args.print_roi {
        println!("[roi]\nx = {x0}\ny = {y0}\nwidth = {iw}\nheight = {ih}");
        return Ok(());
    }

    let cap =
        Device::with_path(&args.capture).map_err(|e| format!("{}: {e}", args.capture.display()))?;
    set_control(&cap, "Loop Video", Value::Boolean(true))?;
    set_control(&cap, "OSD Text Mode", Value::Integer(2))?;

    let out =
        Device::with_path(&args.output).map_err(|e| format!("{}: {e}", args.output.display()))?;
    let fd = out.handle().fd();
    let mut index = HDMI_OUTPUT;
    // SAFETY: VIDIOC_S_OUTPUT reads and writes one int we own.
    unsafe {
        ioctl(
            fd,
            vidioc::VIDIOC_S_OUTPUT,
            &mut index as *mut i32 as *mut _,
        )
    }
    .map_err(|e| format!("VIDIOC_S_OUTPUT {HDMI_OUTPUT}: {e}"))?;
    let want = v4l::Format::new(args.width, args.height, FourCC::new(b"YUYV"));
    let fmt = Output::set_format(&out, &want).map_err(|e| format!("VIDIOC_S_FMT: {e}"))?;
    if (fmt.width, fmt.height) != (args.width, args.height) || fmt.fourcc != want.fourcc {
        return Err(format!(
            "the output took {}x{} {}, not {}x{} YUYV",
            fmt.width, fmt.height, fmt.fourcc, args.width, args.height
        ));
    }
    let stride = fmt.stride.max(args.width * 2) as usize;
    let frames: Vec<Vec<u8>> = parts
        .iter()
        .map(|(_, img)| yuyv_frame(img, args.width, args.height, stride, x0, y0))
        .collect();
    let frames = Arc::new(RwLock::new(frames));
    let current = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let pump = {
        let (frames, current, stop) = (frames.clone(), current.clone(), stop.clone());
        std::thread::spawn(move || feed(out, &frames, &current, &stop))
    };

    let result = trigger_each(args, &parts, &current);
    stop.store(true, Ordering::Release);
    let fed = pump
        .join()
        .map_err(|_| "the feeding thread panicked".to_string())??;
    eprintln!("vivid_feed: {fed} output frames queued");
    result
}

fn set_control(dev: &Device, name: &str, value: Value) -> Res<()> {
    let ctrls = dev
        .query_controls()
        .map_err(|e| format!("query controls: {e}"))?;
    let d = ctrls
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| format!("the capture device has no control \"{name}\" (is it vivid?)"))?;
    dev.set_control(Control { id: d.id, value })
        .map_err(|e| format!("set \"{name}\": {e}"))
}

/// BT.601 limited range, the inverse of partguard's YUYV conversion; chroma of each pixel pair
/// averaged.
fn yuyv_frame(img: &image::RgbImage, w: u32, h: u32, stride: usize, x0: u32, y0: u32) -> Vec<u8> {
    let mut f = vec![0u8; stride * h as usize];
    for row in f.chunks_exact_mut(stride) {
        for px in row[..w as usize * 2].chunks_exact_mut(2) {
            px.copy_from_slice(&[126, 128]); // mid grey
        }
    }
    let yuv = |p: &image::Rgb<u8>| {
        let [r, g, b] = p.0.map(i32::from);
        (
            ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16,
            ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128,
            ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128,
        )
    };
    for y in 0..img.height() {
        let row = &mut f[(y0 + y) as usize * stride..];
        for x in (0..img.width()).step_by(2) {
            let (y_a, u_a, v_a) = yuv(img.get_pixel(x, y));
            let (y_b, u_b, v_b) = yuv(img.get_pixel(x + 1, y));
            let o = (x0 + x) as usize * 2;
            row[o] = y_a.clamp(0, 255) as u8;
            row[o + 1] = ((u_a + u_b + 1) / 2).clamp(0, 255) as u8;
            row[o + 2] = y_b.clamp(0, 255) as u8;
            row[o + 3] = ((v_a + v_b + 1) / 2).clamp(0, 255) as u8;
        }
    }
    f
}

/// One mmap'ed output buffer.
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: mapped by us with this length, unmapped once.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Keeps vivid's output queue full with the current image until `stop`; returns the frames queued.
fn feed(
    out: Device,
    frames: &RwLock<Vec<Vec<u8>>>,
    current: &AtomicUsize,
    stop: &AtomicBool,
) -> Res<u64> {
    let fd = out.handle().fd();
    // SAFETY (all ioctls below): each passes a properly initialised V4L2 struct we own.
    let mut req: v4l2_requestbuffers = unsafe { std::mem::zeroed() };
    req.count = 4;
    req.type_ = BUF_TYPE_OUTPUT;
    req.memory = MEMORY_MMAP;
    unsafe { ioctl(fd, vidioc::VIDIOC_REQBUFS, &mut req as *mut _ as *mut _) }
        .map_err(|e| format!("VIDIOC_REQBUFS: {e}"))?;
    let mut maps = Vec::new();
    let fill = |m: &Mapped| {
        let frames = frames
            .read()
            .map_err(|_| "frames lock poisoned".to_string())?;
        let src = &frames[current.load(Ordering::Acquire)];
        let n = src.len().min(m.len);
        // SAFETY: the mapping is m.len bytes long and writable.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), m.ptr as *mut u8, n) };
        Ok::<u32, String>(n as u32)
    };
    for i in 0..req.count {
        let mut b: v4l2_buffer = unsafe { std::mem::zeroed() };
        b.index = i;
        b.type_ = BUF_TYPE_OUTPUT;
        b.memory = MEMORY_MMAP;
        unsafe { ioctl(fd, vidioc::VIDIOC_QUERYBUF, &mut b as *mut _ as *mut _) }
            .map_err(|e| format!("VIDIOC_QUERYBUF {i}: {e}"))?;
        // SAFETY: offset and length come from QUERYBUF for this fd.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                b.length as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                b.m.offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "mmap of output buffer {i}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let m = Mapped {
            ptr,
            len: b.length as usize,
        };
        b.bytesused = fill(&m)?;
        unsafe { ioctl(fd, vidioc::VIDIOC_QBUF, &mut b as *mut _ as *mut _) }
            .map_err(|e| format!("VIDIOC_QBUF {i}: {e}"))?;
        maps.push(m);
    }
    let mut ty = BUF_TYPE_OUTPUT as i32;
    unsafe { ioctl(fd, vidioc::VIDIOC_STREAMON, &mut ty as *mut i32 as *mut _) }
        .map_err(|e| format!("VIDIOC_STREAMON: {e}"))?;
    let mut queued = u64::from(req.count);
    while !stop.load(Ordering::Acquire) {
        // The device is non-blocking: wait until a buffer has been shown.
        if out
            .handle()
            .poll(libc::POLLOUT, 100)
            .map_err(|e| format!("poll: {e}"))?
            == 0
        {
            continue;
        }
        let mut b: v4l2_buffer = unsafe { std::mem::zeroed() };
        b.type_ = BUF_TYPE_OUTPUT;
        b.memory = MEMORY_MMAP;
        unsafe { ioctl(fd, vidioc::VIDIOC_DQBUF, &mut b as *mut _ as *mut _) }
            .map_err(|e| format!("VIDIOC_DQBUF: {e}"))?;
        let m = maps
            .get(b.index as usize)
            .ok_or_else(|| format!("DQBUF returned buffer {}", b.index))?;
        b.bytesused = fill(m)?;
        unsafe { ioctl(fd, vidioc::VIDIOC_QBUF, &mut b as *mut _ as *mut _) }
            .map_err(|e| format!("VIDIOC_QBUF: {e}"))?;
        queued += 1;
    }
    let _ = unsafe { ioctl(fd, vidioc::VIDIOC_STREAMOFF, &mut ty as *mut i32 as *mut _) };
    Ok(queued)
}

fn monotonic_ns() -> u128 {
    partguard::clock::monotonic_now().as_nanos()
}

fn decision_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().filter(|l| l.starts_with("part ")).count())
        .unwrap_or(0)
}

fn trigger_each(
    args: &Args,
    parts: &[(PathBuf, image::RgbImage)],
    current: &AtomicUsize,
) -> Res<()> {
    let timeout = Duration::from_secs(args.timeout_s);
    let settle = Duration::from_millis(args.settle_ms);
    let sock = UnixDatagram::unbound().map_err(|e| format!("socket: {e}"))?;
    if let Some(t) = &args.trigger {
        let start = Instant::now();
        while !t.exists() {
            if start.elapsed() > timeout {
                return Err(format!(
                    "partguard's trigger socket {} did not appear",
                    t.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    if let Some(f) = &args.ready_file {
        let start = Instant::now();
        while !std::fs::read_to_string(f).is_ok_and(|s| s.contains(&args.ready_text)) {
            if start.elapsed() > timeout {
                return Err(format!(
                    "{} never showed \"{}\"",
                    f.display(),
                    args.ready_text
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let mut manifest = match &args.manifest {
        Some(p) => Some(std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    for (k, (path, _)) in parts.iter().enumerate() {
        current.store(k, Ordering::Release);
        std::thread::sleep(settle);
        let before = args.decisions.as_deref().map_or(0, decision_lines);
        let at = monotonic_ns();
        if let Some(t) = &args.trigger {
            sock.send_to(b"part", t)
                .map_err(|e| format!("trigger {}: {e}", t.display()))?;
        }
        let label = path
            .parent()
            .and_then(|d| d.file_name())
            .map_or("?".into(), |d| d.to_string_lossy().into_owned());
        let line = format!("{k} {label} {} {at}", path.display());
        eprintln!("vivid_feed: {line}");
        if let Some(m) = manifest.as_mut() {
            writeln!(m, "{line}").map_err(|e| format!("manifest: {e}"))?;
        }
        if let Some(d) = &args.decisions {
            let start = Instant::now();
            while decision_lines(d) <= before {
                if start.elapsed() > timeout {
                    return Err(format!(
                        "no decision for image {k} ({}) within {} s",
                        path.display(),
                        args.timeout_s
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        } else {
            std::thread::sleep(settle);
        }
    }
    Ok(())
}
