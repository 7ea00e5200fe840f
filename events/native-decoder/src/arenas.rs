//! `events._native.prefault_arenas(megabytes)`: Python's object arenas come from memory that a
//! background thread has already faulted in, so the thread that allocates objects (the worker's
//! fold) does not stop for the kernel to map and zero fresh pages.
//!
//! Rules of this module:
//!
//! * CPython's small-object allocator takes its memory in arenas of one size (1 MiB on 3.11,
//!   256 KiB before) from an arena allocator (`PyObject_SetArenaAllocator`), whose default maps
//!   each arena (`mmap`) and unmaps it when it is empty again. CPython 3.11 also takes the
//!   16 KiB chunks of its frame stacks there, so the pool learns the arena size from the first
//!   request of at least 256 KiB.
//! * An arena is handed out from the pool when one is ready (mapped with `MAP_POPULATE` by the
//!   pool's thread, so its pages are already there) and unmapped when CPython frees it. Every
//!   other request goes to the allocator this one replaced: another size, an empty pool (so
//!   CPython never waits for the thread), and the freeing of every arena the pool did not make
//!   (it remembers the ones it lent).
//! * The pool holds at most the asked number of megabytes; its thread fills it again when an
//!   arena is taken and sleeps while it is full. It never touches Python objects and never
//!   holds the GIL.
//! * It is installed once per process and stays for the life of the process. A process that
//!   forks without exec must not use it: the child has no pool thread (and could inherit its
//!   lock held).

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

use rustc_hash::FxHashSet;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;

/// CPython's arenas are 256 KiB or 1 MiB; smaller requests (3.11's frame stack chunks, 16 KiB)
/// are not arenas.
const SMALLEST_ARENA: usize = 256 << 10;

/// The arena allocator this one replaced.
struct Previous(ffi::PyObjectArenaAllocator);

// SAFETY: the allocator's context and functions are CPython's, called with the GIL held.
unsafe impl Send for Previous {}
unsafe impl Sync for Previous {}

struct Pool {
    /// Arenas mapped and faulted in, as addresses.
    ready: Mutex<Vec<usize>>,
    /// Arenas handed out from the pool and not freed yet.
    lent: Mutex<FxHashSet<usize>>,
    previous: Previous,
    /// Signalled when an arena is taken (or the arena size becomes known).
    taken: Condvar,
    /// Arenas the pool keeps ready.
    keep_bytes: usize,
    /// CPython's arena size, learnt from its first request of an arena's size (0 until then).
    arena: AtomicUsize,
}

static POOL: OnceLock<Pool> = OnceLock::new();
/// Whether the pool's allocator is in place (its thread started).
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// A fresh private anonymous mapping of `size` bytes, its pages already faulted in (writable),
/// or null.
fn populated(size: usize) -> *mut c_void {
    // SAFETY: a new anonymous mapping; no existing memory is touched.
    let address = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    if address == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        address
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

extern "C" fn alloc(ctx: *mut c_void, size: libc::size_t) -> *mut c_void {
    let pool = ctx as *const Pool;
    // SAFETY: `ctx` is the pool installed with this function; it lives as long as the process.
    let pool = unsafe { &*pool };
    let arena = pool.arena.load(Ordering::Relaxed);
    if arena == 0 && size >= SMALLEST_ARENA {
        // under the pool's lock, so the thread cannot miss it between its check and its wait
        let _ready = lock(&pool.ready);
        pool.arena.store(size, Ordering::Relaxed);
        pool.taken.notify_one();
    } else if arena == size {
        let found = lock(&pool.ready).pop();
        if let Some(address) = found {
            lock(&pool.lent).insert(address);
            pool.taken.notify_one();
            return address as *mut c_void;
        }
    }
    let previous = &pool.previous.0;
    match previous.alloc {
        Some(f) => f(previous.ctx, size),
        None => std::ptr::null_mut(),
    }
}

extern "C" fn free(ctx: *mut c_void, address: *mut c_void, size: libc::size_t) {
    // SAFETY: as in `alloc`.
    let pool = unsafe { &*(ctx as *const Pool) };
    if lock(&pool.lent).remove(&(address as usize)) {
        // SAFETY: an arena this pool mapped with this size, which CPython no longer uses.
        unsafe { libc::munmap(address, size) };
        return;
    }
    let previous = &pool.previous.0;
    if let Some(f) = previous.free {
        f(previous.ctx, address, size);
    }
}

/// The pool's thread: keep `keep_bytes` of arenas mapped and faulted in.
fn fill(pool: &'static Pool) {
    loop {
        let mut ready = lock(&pool.ready);
        let mut arena = pool.arena.load(Ordering::Relaxed);
        while arena == 0 || ready.len() * arena >= pool.keep_bytes {
            ready = pool.taken.wait(ready).unwrap_or_else(|e| e.into_inner());
            arena = pool.arena.load(Ordering::Relaxed);
        }
        drop(ready);
        let address = populated(arena);
        if address.is_null() {
            return; // out of memory: CPython's own requests will say so
        }
        lock(&pool.ready).push(address as usize);
    }
}

/// Serve CPython's object arenas from a pool of `megabytes` kept faulted in by a background
/// thread (see the module rules); False if it was installed before. `RuntimeError` if its
/// thread cannot start (then, and on any later call, CPython's allocator stays as it was).
#[pyfunction]
pub fn prefault_arenas(megabytes: usize) -> PyResult<bool> {
    if megabytes == 0 {
        return Err(PyValueError::new_err(
            "prefault_arenas needs at least 1 megabyte",
        ));
    }
    if POOL.get().is_some() {
        if INSTALLED.load(Ordering::Relaxed) {
            return Ok(false);
        }
        return Err(PyRuntimeError::new_err(
            "the arena pool's thread could not be started before; arenas are not prefaulted",
        ));
    }
    let mut previous = ffi::PyObjectArenaAllocator::default();
    // SAFETY: reads the allocator into a struct of its type (the GIL is held).
    unsafe { ffi::PyObject_GetArenaAllocator(&mut previous) };
    let pool = POOL.get_or_init(|| Pool {
        ready: Mutex::new(Vec::new()),
        lent: Mutex::new(FxHashSet::default()),
        previous: Previous(previous),
        taken: Condvar::new(),
        keep_bytes: megabytes << 20,
        arena: AtomicUsize::new(0),
    });
    std::thread::Builder::new()
        .name("trackerflow-arenas".into())
        .spawn(move || fill(pool))
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the arena thread: {e}")))?;
    let mut ours = ffi::PyObjectArenaAllocator {
        ctx: pool as *const Pool as *mut c_void,
        alloc: Some(alloc),
        free: Some(free),
    };
    // SAFETY: CPython copies the struct (the GIL is held); the pool is static.
    unsafe { ffi::PyObject_SetArenaAllocator(&mut ours) };
    INSTALLED.store(true, Ordering::Relaxed);
    Ok(true)
}
