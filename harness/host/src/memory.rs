// Guest memory access for hostcalls: bounds-checked reads and writes, and the hand-over of
// results through the guest's own allocator (`proxy_on_memory_allocate`, else `malloc`).

use wasmtime::Caller;

use super::abi::status;
use super::state::HostState;

pub(crate) type Ctx<'a> = Caller<'a, HostState>;

/// The guest bytes at `ptr..ptr + len`, or INVALID_MEMORY_ACCESS.
pub(crate) fn slice(mem: &[u8], ptr: i32, len: i32) -> Result<&[u8], i32> {
    let start = ptr as u32 as usize;
    let len = len as u32 as usize;
    mem.get(start..start.saturating_add(len)).ok_or(status::INVALID_MEMORY_ACCESS)
}

/// Writes `bytes` at `ptr`, or INVALID_MEMORY_ACCESS.
pub(crate) fn write(mem: &mut [u8], ptr: i32, bytes: &[u8]) -> Result<(), i32> {
    let start = ptr as u32 as usize;
    mem.get_mut(start..start.saturating_add(bytes.len())).ok_or(status::INVALID_MEMORY_ACCESS)?.copy_from_slice(bytes);
    Ok(())
}

pub(crate) fn write_u32(mem: &mut [u8], ptr: i32, v: u32) -> Result<(), i32> {
    write(mem, ptr, &v.to_le_bytes())
}

pub(crate) fn write_u64(mem: &mut [u8], ptr: i32, v: u64) -> Result<(), i32> {
    write(mem, ptr, &v.to_le_bytes())
}

/// Memory of the calling VM and its host state, borrowed together.
pub(crate) fn split<'a>(c: &'a mut Ctx<'_>) -> Result<(&'a mut [u8], &'a mut HostState), i32> {
    match c.data().memory {
        Some(m) => Ok(m.data_and_store_mut(c)),
        None => Err(status::INVALID_MEMORY_ACCESS),
    }
}

/// Writes a plain u32 result.
pub(crate) fn ret_u32(c: &mut Ctx<'_>, ptr: i32, v: u32) -> i32 {
    match split(c).and_then(|(mem, _)| write_u32(mem, ptr, v)) {
        Ok(()) => status::OK,
        Err(s) => s,
    }
}

/// Hands `HostState::scratch` over to the guest: allocates exactly its length with the
/// guest's allocator, copies it in, and writes the pointer and size at `ret_ptr`/`ret_size`.
/// An empty result is ptr 0 / size 0 without calling the allocator, as cpp-host does (the
/// Rust SDK reads a null pointer as "empty" and would free a dangling one).
///
/// The allocator re-enters the guest; a trap there fails the hostcall (and so the callback).
pub(crate) fn hand_over(c: &mut Ctx<'_>, ret_ptr: i32, ret_size: i32) -> wasmtime::Result<i32> {
    let len = c.data().scratch.len();
    let ptr = if len == 0 {
        0
    } else {
        let Some(alloc) = c.data().alloc.clone() else {
            return Ok(status::INVALID_MEMORY_ACCESS);
        };
        let len_i32 = i32::try_from(len).map_err(|_| wasmtime::Error::msg("result too large"))?;
        let ptr = alloc.call(&mut *c, len_i32)?;
        if ptr == 0 {
            return Ok(status::INVALID_MEMORY_ACCESS);
        }
        ptr
    };
    let (mem, state) = match split(c) {
        Ok(x) => x,
        Err(s) => return Ok(s),
    };
    let result = (|| {
        if len > 0 {
            write(mem, ptr, &state.scratch)?;
        }
        write_u32(mem, ret_ptr, ptr as u32)?;
        write_u32(mem, ret_size, len as u32)
    })();
    state.scratch.clear();
    Ok(match result {
        Ok(()) => status::OK,
        Err(s) => s,
    })
}
