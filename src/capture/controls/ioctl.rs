//! The V4L2 control ioctls: enumerate (VIDIOC_QUERY_EXT_CTRL, VIDIOC_QUERYMENU), read
//! (VIDIOC_G_EXT_CTRLS) and write (VIDIOC_S_EXT_CTRLS) single-value controls.

use std::io;
use std::mem;
use std::os::raw::c_void;
use std::path::Path;

use v4l::v4l2::vidioc;
use v4l::v4l_sys::{v4l2_ext_control, v4l2_ext_controls, v4l2_query_ext_ctrl, v4l2_querymenu};

use super::{control_key, CameraControl, ControlKind, FLAG_WRITE_ONLY};
use crate::capture::CaptureError;

const FLAG_NEXT_CTRL: u32 = 0x8000_0000;
const TYPE_INTEGER: u32 = 1;
const TYPE_BOOLEAN: u32 = 2;
const TYPE_MENU: u32 = 3;
const TYPE_INTEGER64: u32 = 5;
const TYPE_CTRL_CLASS: u32 = 6;
const TYPE_INTEGER_MENU: u32 = 9;

/// Every control `fd`'s device offers, in the driver's order (control classes left out).
pub fn list(fd: i32, device: &Path) -> Result<Vec<CameraControl>, CaptureError> {
    let mut out = Vec::new();
    // SAFETY: zeroed is a valid bit pattern for these plain C structs.
    let mut q: v4l2_query_ext_ctrl = unsafe { mem::zeroed() };
    loop {
        q.id |= FLAG_NEXT_CTRL;
        // SAFETY: VIDIOC_QUERY_EXT_CTRL reads and writes one v4l2_query_ext_ctrl we own.
        let r = unsafe {
            v4l::v4l2::ioctl(
                fd,
                vidioc::VIDIOC_QUERY_EXT_CTRL,
                &mut q as *mut _ as *mut c_void,
            )
        };
        match r {
            Ok(()) => {}
            // EINVAL after the last control ends the list.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => return Err(control_io(device, "VIDIOC_QUERY_EXT_CTRL", e)),
        }
        if q.type_ == TYPE_CTRL_CLASS {
            continue;
        }
        let name_bytes: Vec<u8> = q
            .name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c.to_ne_bytes()[0]) // c_char is i8 on x86_64, u8 on aarch64
            .collect();
        let name = String::from_utf8_lossy(&name_bytes).into_owned();
        let kind = match q.type_ {
            TYPE_INTEGER if q.elems <= 1 && q.nr_of_dims == 0 => ControlKind::Integer,
            TYPE_INTEGER64 => ControlKind::Integer64,
            TYPE_BOOLEAN => ControlKind::Boolean,
            TYPE_MENU => ControlKind::Menu(menu(fd, &q, |m| {
                // SAFETY: a menu control's entries are names.
                let raw = unsafe { m.__bindgen_anon_1.name };
                let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
                String::from_utf8_lossy(&raw[..end]).into_owned()
            })),
            // SAFETY: an integer menu's entries are numbers.
            TYPE_INTEGER_MENU => {
                ControlKind::IntegerMenu(menu(fd, &q, |m| unsafe { m.__bindgen_anon_1.value }))
            }
            t => ControlKind::Other(t),
        };
        out.push(CameraControl {
            id: q.id,
            key: control_key(&name),
            name,
            kind,
            minimum: q.minimum,
            maximum: q.maximum,
            step: q.step,
            default: q.default_value,
            flags: q.flags,
        });
    }
    Ok(out)
}

/// The entries of a menu control; indices the driver refuses are left out (UVC cameras skip some).
fn menu<T>(
    fd: i32,
    q: &v4l2_query_ext_ctrl,
    entry: impl Fn(&v4l2_querymenu) -> T,
) -> Vec<(i64, T)> {
    let mut items = Vec::new();
    // A menu has at most a few dozen entries; a driver claiming more is not believed.
    let last = q.maximum.min(q.minimum.saturating_add(255));
    for index in q.minimum.max(0)..=last {
        // SAFETY: zeroed is valid for v4l2_querymenu.
        let mut m: v4l2_querymenu = unsafe { mem::zeroed() };
        m.id = q.id;
        m.index = index as u32;
        // SAFETY: VIDIOC_QUERYMENU reads and writes one v4l2_querymenu we own.
        let ok = unsafe {
            v4l::v4l2::ioctl(
                fd,
                vidioc::VIDIOC_QUERYMENU,
                &mut m as *mut _ as *mut c_void,
            )
        }
        .is_ok();
        if ok {
            items.push((index, entry(&m)));
        }
    }
    items
}

/// Every control of the camera at `device` with its current value (`None`: not readable), for
/// `check`. Opens the device a second time; that does not disturb a stream.
pub fn list_device(device: &Path) -> Result<Vec<(CameraControl, Option<i64>)>, CaptureError> {
    let dev = v4l::Device::with_path(device).map_err(|e| control_io(device, "open", e))?;
    let fd = dev.handle().fd();
    Ok(list(fd, device)?
        .into_iter()
        .map(|c| {
            let value = (!matches!(c.kind, ControlKind::Other(_))
                && c.flags & FLAG_WRITE_ONLY == 0)
                .then(|| read(fd, &c).ok())
                .flatten();
            (c, value)
        })
        .collect())
}

/// VIDIOC_G_EXT_CTRLS or VIDIOC_S_EXT_CTRLS on one control, `c` (which =
/// V4L2_CTRL_WHICH_CUR_VAL).
fn ext_ctrl(fd: i32, request: vidioc::_IOC_TYPE, c: &mut v4l2_ext_control) -> io::Result<()> {
    // SAFETY: zeroed is valid for this struct; which = 0 is V4L2_CTRL_WHICH_CUR_VAL.
    let mut cs: v4l2_ext_controls = unsafe { mem::zeroed() };
    cs.count = 1;
    cs.controls = c;
    // SAFETY: the kernel reads or fills the one v4l2_ext_control `cs` points at, which outlives
    // the call.
    unsafe { v4l::v4l2::ioctl(fd, request, &mut cs as *mut _ as *mut c_void) }
}

/// The current value of a single-value control.
pub fn read(fd: i32, control: &CameraControl) -> io::Result<i64> {
    // SAFETY: zeroed is valid for this struct.
    let mut c: v4l2_ext_control = unsafe { mem::zeroed() };
    c.id = control.id;
    ext_ctrl(fd, vidioc::VIDIOC_G_EXT_CTRLS, &mut c)?;
    // SAFETY: the union holds value64 for 64-bit controls and value otherwise.
    Ok(unsafe {
        if control.kind == ControlKind::Integer64 {
            c.__bindgen_anon_1.value64
        } else {
            i64::from(c.__bindgen_anon_1.value)
        }
    })
}

/// Sets a single-value control to `raw`.
pub(super) fn write(fd: i32, control: &CameraControl, raw: i64) -> io::Result<()> {
    // SAFETY: zeroed is valid for this struct.
    let mut c: v4l2_ext_control = unsafe { mem::zeroed() };
    c.id = control.id;
    if control.kind == ControlKind::Integer64 {
        c.__bindgen_anon_1.value64 = raw;
    } else {
        // resolve() kept it within the control's 32-bit range.
        c.__bindgen_anon_1.value = raw as i32;
    }
    ext_ctrl(fd, vidioc::VIDIOC_S_EXT_CTRLS, &mut c)
}

pub(super) fn control_io(device: &Path, operation: &'static str, e: io::Error) -> CaptureError {
    CaptureError::Io {
        device: device.to_owned(),
        operation,
        source: e,
    }
}
