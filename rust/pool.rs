//! Thread pools that survive `fork`.
//!
//! rayon's global pool is created once per process; after a `fork` (Python's multiprocessing
//! default on Linux, pre-forking servers) the child inherits the pool's bookkeeping but none of
//! its threads, and the first job sent there waits forever. So distblob never uses the global
//! pool: pools are built on demand, remembered per process id, and a child builds its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The pools of this process, by thread count.
struct Pools {
    pid: u32,
    by_threads: HashMap<usize, Arc<rayon::ThreadPool>>,
}

/// A pool of `threads` threads (0: one per core) belonging to the calling process.
pub fn pool(threads: usize) -> Arc<rayon::ThreadPool> {
    static POOLS: OnceLock<Mutex<Pools>> = OnceLock::new();
    let threads = if threads == 0 { cores() } else { threads };
    let pid = std::process::id();
    let pools = POOLS.get_or_init(|| {
        Mutex::new(Pools {
            pid,
            by_threads: HashMap::new(),
        })
    });
    let mut pools = pools
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if pools.pid != pid {
        // A forked child: the parent's pools have no threads here. Dropping them would signal
        // threads that do not exist, so they are leaked instead (once per fork).
        for (_, stale) in pools.by_threads.drain() {
            std::mem::forget(stale);
        }
        pools.pid = pid;
    }
    pools
        .by_threads
        .entry(threads)
        .or_insert_with(|| {
            Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("distblob-{i}"))
                    .build()
                    .expect("a rayon pool can be built"),
            )
        })
        .clone()
}

/// The number of cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
