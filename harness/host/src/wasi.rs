// The WASI preview1 imports a Rust or TinyGo filter needs: stdout/stderr to the log, clock
// and randomness from the host (deterministic), empty environment and arguments, proc_exit.

use wasmtime::Linker;

use super::logs::LogLevel;
use super::memory::{slice, split, write, write_u32, write_u64, Ctx};
use super::state::HostState;

/// The WASI module names cpp-host serves (both with the same functions).
pub(crate) const MODULES: [&str; 2] = ["wasi_snapshot_preview1", "wasi_unstable"];

/// WASI errno values used here.
pub(crate) mod errno {
    pub const SUCCESS: i32 = 0;
    pub const BADF: i32 = 8;
    pub const FAULT: i32 = 21;
    pub const INVAL: i32 = 28;
    pub const NOSYS: i32 = 52;
}

fn fd_write(c: &mut Ctx<'_>, fd: i32, iovs: i32, iovs_len: i32, ret: i32) -> i32 {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return errno::BADF,
    };
    let Ok((mem, st)) = split(c) else {
        return errno::FAULT;
    };
    let mut text = Vec::new();
    for i in 0..iovs_len.max(0) {
        let Ok(iov) = slice(mem, iovs.wrapping_add(i * 8), 8) else {
            return errno::FAULT;
        };
        let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        match slice(mem, ptr, len) {
            Ok(bytes) => text.extend_from_slice(bytes),
            Err(_) => return errno::FAULT,
        }
    }
    let written = text.len() as u32;
    let message = String::from_utf8_lossy(&text);
    for line in message.lines().filter(|l| !l.is_empty()) {
        st.filter_log(level, line.to_owned());
    }
    match write_u32(mem, ret, written) {
        Ok(()) => errno::SUCCESS,
        Err(_) => errno::FAULT,
    }
}

/// Defines the WASI functions under both module names; returns the names defined.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<Vec<&'static str>> {
    for m in MODULES {
        linker.func_wrap(m, "fd_write", |mut c: Ctx<'_>, fd: i32, iovs: i32, n: i32, ret: i32| {
            Ok(fd_write(&mut c, fd, iovs, n, ret))
        })?;
        linker.func_wrap(m, "clock_time_get", |mut c: Ctx<'_>, id: i32, _precision: i64, ret: i32| {
            // REALTIME (0) and MONOTONIC (1) both read the harness clock; CPU clocks are not served.
            if !(0..=1).contains(&id) {
                return Ok(errno::INVAL);
            }
            let now = c.data().shared.clock.now_ns();
            Ok(match split(&mut c).and_then(|(mem, _)| write_u64(mem, ret, now)) {
                Ok(()) => errno::SUCCESS,
                Err(_) => errno::FAULT,
            })
        })?;
        linker.func_wrap(m, "clock_res_get", |mut c: Ctx<'_>, _id: i32, ret: i32| {
            Ok(match split(&mut c).and_then(|(mem, _)| write_u64(mem, ret, 1)) {
                Ok(()) => errno::SUCCESS,
                Err(_) => errno::FAULT,
            })
        })?;
        linker.func_wrap(m, "random_get", |mut c: Ctx<'_>, buf: i32, len: i32| {
            let Ok((mem, st)) = split(&mut c) else {
                return Ok(errno::FAULT);
            };
            let mut bytes = vec![0u8; len.max(0) as usize];
            for chunk in bytes.chunks_mut(8) {
                let r = st.next_random().to_le_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
            Ok(match write(mem, buf, &bytes) {
                Ok(()) => errno::SUCCESS,
                Err(_) => errno::FAULT,
            })
        })?;
        for name in ["environ_sizes_get", "args_sizes_get"] {
            linker.func_wrap(m, name, |mut c: Ctx<'_>, count: i32, size: i32| {
                Ok(
                    match split(&mut c)
                        .and_then(|(mem, _)| write_u32(mem, count, 0).and_then(|_| write_u32(mem, size, 0)))
                    {
                        Ok(()) => errno::SUCCESS,
                        Err(_) => errno::FAULT,
                    },
                )
            })?;
        }
        for name in ["environ_get", "args_get"] {
            linker.func_wrap(m, name, |_c: Ctx<'_>, _ptrs: i32, _buf: i32| Ok(errno::SUCCESS))?;
        }
        linker.func_wrap(m, "sched_yield", |_c: Ctx<'_>| Ok(errno::SUCCESS))?;
        linker.func_wrap(m, "proc_exit", |_c: Ctx<'_>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!("the filter called proc_exit({code})")))
        })?;
    }
    Ok(vec![
        "fd_write",
        "clock_time_get",
        "clock_res_get",
        "random_get",
        "environ_sizes_get",
        "args_sizes_get",
        "environ_get",
        "args_get",
        "sched_yield",
        "proc_exit",
    ])
}
