//! Real-time scheduling for the calling thread: SCHED_FIFO and CPU pinning when permitted, one clear
//! log line either way.

/// Puts the calling thread under SCHED_FIFO at `priority` (1..=99; 0 leaves it alone) and pins it to
/// `cpu`. Returns whether SCHED_FIFO is in force. `role` names the thread in the log.
pub fn apply(role: &str, priority: u8, cpu: Option<usize>) -> bool {
    let mut fifo = false;
    if priority > 0 {
        let param = libc::sched_param {
            sched_priority: i32::from(priority.min(99)),
        };
        // SAFETY: pthread_self() is the calling thread; param is a valid sched_param.
        let rc =
            unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
        if rc == 0 {
            fifo = true;
            log::info!("{role} thread: SCHED_FIFO priority {priority}");
        } else {
            log::warn!(
                "{role} thread: SCHED_FIFO priority {priority} not permitted ({}); it runs as an \
                 ordinary thread and reject onsets may jitter under load. Grant it with \
                 `setcap cap_sys_nice+ep partguard`, `LimitRTPRIO=99` in the systemd unit, or set \
                 realtime.fifo_priority = 0 to silence this",
                std::io::Error::from_raw_os_error(rc)
            );
        }
    }
    if let Some(cpu) = cpu {
        // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity(0) is this thread.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        if rc == 0 {
            log::info!("{role} thread: pinned to CPU {cpu}");
        } else {
            log::warn!(
                "{role} thread: cannot pin to CPU {cpu} ({}); check realtime.*_cpu against `nproc`",
                std::io::Error::last_os_error()
            );
        }
    }
    fifo
}
