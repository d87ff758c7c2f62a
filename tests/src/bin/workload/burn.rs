//! The modes that burn a resource without limit: `hog` (memory) and `spin` (CPU).
//!
//! They must never stop by themselves: only a limit (the OOM killer, a signal) ends them.

use std::hint::black_box;
use std::thread;
use std::time::Duration;

use crate::sleep_forever;

/// Allocates `step` bytes every `every` and writes to every byte, so the pages are really
/// resident, keeping all of it; logs the total after each step. If an allocation fails (rare:
/// Linux overcommits), logs it and sleeps.
pub fn hog(step: usize, every: Duration) -> ! {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut total: usize = 0;
    loop {
        let mut chunk = Vec::new();
        if let Err(error) = chunk.try_reserve_exact(step) {
            say!("hog: allocating {step} more bytes after {total}: {error}");
            sleep_forever();
        }
        // Non-zero, so the writes are not optimised into untouched zero pages.
        chunk.resize(step, 0xa5);
        chunks.push(black_box(chunk));
        total = total.saturating_add(step);
        say!("hog: {total} bytes ({} MiB) touched", total >> 20);
        thread::sleep(every);
    }
}

/// Burns CPU on `threads` threads (the main thread is one of them).
pub fn spin(threads: usize) -> ! {
    for index in 1..threads {
        let spawned = thread::Builder::new()
            .name(format!("spin{index}"))
            .spawn(burn);
        if let Err(error) = spawned {
            say!("spin: starting thread {index}: {error}");
        }
    }
    burn()
}

/// Spins forever.
fn burn() -> ! {
    let mut counter: u64 = 0;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}
