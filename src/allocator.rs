//! The process's memory allocator: jemalloc, for Rust and C alike.
//!
//! Why: a long `strata run` allocates in bursts. Every snapshot update of a
//! Delta table reads its `_delta_log` through the kernel, which keeps a
//! decoder per commit file it reads ahead, freed within the second, from
//! many threads at once. glibc's malloc keeps what a thread freed in that
//! thread's arena: RSS grew 468 -> 962 MiB in the 30-minute soak, and
//! `malloc_trim(0)` every 10 s on a thread of its own (what Strata did
//! before) held that to ~3.5 MiB a minute. jemalloc puts each size class
//! in slabs of its own and its background threads return dirty pages after
//! a decay time (10 s) without anyone calling it. Measured on one machine,
//! the same build profile, the soak's first 15 minutes
//! (`benches/soak-history.md`): RSS 284 -> 304 MiB against 242 -> 301 with
//! glibc and the trim, at 10% less CPU, epochs 9-11% shorter and point
//! queries 28-33% faster. It did not make RSS flat either: what it holds
//! follows how much is allocated and freed a second (see
//! `strata_engine::delta::table_committer` for the largest share found).
//!
//! The `unprefixed_malloc_on_supported_platforms` feature makes jemalloc
//! the process's `malloc` too, so the C libraries (librdkafka's fetch
//! buffers, zstd, aws-lc) share it; `background_threads` turns the purging
//! threads on by default. `MALLOC_CONF` tunes it at start (see jemalloc's
//! manual), e.g. `MALLOC_CONF=dirty_decay_ms:1000`.
//!
//! Its statistics (the `stats` feature) feed `strata_heap_allocated_bytes`
//! and `strata_heap_resident_bytes` ([`heap`], registered with the engine's
//! metrics by `main`). The `heap-profile` cargo feature builds jemalloc's
//! heap profiler in: run with `MALLOC_CONF=prof:true,lg_prof_interval:33,
//! prof_prefix:/tmp/strata` and compare two dumps with jemalloc's `jeprof
//! --base`.

use std::ffi::{CStr, c_void};

use strata_engine::metrics::HeapStats;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Reads jemalloc's control `name` into a `T`, writing `new` first if
/// given; `None` when jemalloc refuses the name or the value.
fn mallctl<T: Copy + Default, N>(name: &CStr, new: Option<&mut N>) -> Option<T> {
    let mut value = T::default();
    let mut len = std::mem::size_of::<T>();
    let (new_ptr, new_len) = match new {
        Some(n) => ((n as *mut N).cast::<c_void>(), std::mem::size_of::<N>()),
        None => (std::ptr::null_mut(), 0),
    };
    // SAFETY: `name` is NUL-terminated; `value`/`len` and `new_ptr`/
    // `new_len` describe live values of the types jemalloc's manual gives
    // for the controls its callers use.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            (&mut value as *mut T).cast(),
            &mut len,
            new_ptr,
            new_len,
        )
    };
    (rc == 0).then_some(value)
}

/// jemalloc's totals now. Its statistics are a snapshot taken when
/// `epoch` is written, so that comes first.
pub fn heap() -> Option<HeapStats> {
    let mut epoch: u64 = 1;
    mallctl::<u64, _>(c"epoch", Some(&mut epoch))?;
    Some(HeapStats {
        allocated: mallctl::<usize, ()>(c"stats.allocated", None)? as u64,
        resident: mallctl::<usize, ()>(c"stats.resident", None)? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::{heap, mallctl};
    use std::ffi::c_void;

    unsafe extern "C" {
        /// The C library's `malloc`, as librdkafka calls it.
        #[link_name = "malloc"]
        fn c_malloc(size: usize) -> *mut c_void;
        #[link_name = "free"]
        fn c_free(ptr: *mut c_void);
    }

    #[test]
    fn jemalloc_serves_rust_and_c_and_purges_in_the_background() {
        assert_eq!(
            mallctl::<bool, ()>(c"opt.background_thread", None),
            Some(true)
        );
        // `arenas.lookup` answers only for memory jemalloc handed out.
        let mut boxed = Box::new([7u8; 4096]);
        let mut rust_ptr = boxed.as_mut_ptr().cast::<c_void>();
        assert!(mallctl::<u32, _>(c"arenas.lookup", Some(&mut rust_ptr)).is_some());
        // SAFETY: one byte from the C `malloc`, freed by the C `free`.
        unsafe {
            let mut c_ptr = c_malloc(1);
            assert!(!c_ptr.is_null());
            let arena = mallctl::<u32, _>(c"arenas.lookup", Some(&mut c_ptr));
            c_free(c_ptr);
            assert!(arena.is_some(), "C's malloc is not jemalloc's");
        }
    }

    #[test]
    fn heap_figures_count_what_the_program_holds() {
        let before = heap().expect("jemalloc's statistics are built in");
        let held = vec![1u8; 64 << 20];
        let during = heap().expect("jemalloc's statistics are built in");
        assert!(
            during.allocated >= before.allocated + (32 << 20),
            "{before:?} -> {during:?}"
        );
        assert!(during.resident >= during.allocated, "{during:?}");
        drop(held);
    }
}
