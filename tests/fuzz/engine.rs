//! The fuzzing engine of `tests/fuzz.rs`: a seeded RNG, a byte mutator, a counting allocator
//! and the loop that runs one target (docs/fuzzing.md).
//!
//! Each target is a function from bytes to an outcome. The loop replays the target's corpus
//! (`tests/fuzz-corpus/<target>/`), then mutates entries of a pool (the corpus plus every input
//! that gave an outcome not seen before) for `FUZZ_ITERS` inputs. An input fails when the
//! target panics, reports a broken invariant, takes longer than the hang bound, or has more
//! memory allocated at once than the allocation bound; it is then written to
//! `target/fuzz-failures/` and the test fails with its hex.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one input did: a signature of its outcome (new signatures grow the pool), or the
/// invariant it broke.
pub type Outcome = Result<u64, String>;

/// A signature for any hashable outcome description.
pub fn sig(value: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

// ---------------------------------------------------------------------------------------------
// Random numbers

/// SplitMix64: tiny, fast, and the whole run follows from one seed.
pub struct Rng(u64);

impl Rng {
    /// A generator starting at `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True once in `n` times.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// A random element.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------------------------
// Allocation accounting

/// The test binary's allocator: the system one, counting the bytes live on the current thread
/// while an input runs.
pub struct CountingAlloc;

struct Tracking {
    /// Counting is on (an input is running on this thread).
    on: Cell<bool>,
    /// Inside the allocator's own bookkeeping: nested allocations are not counted.
    busy: Cell<bool>,
    live: Cell<isize>,
    peak: Cell<isize>,
    /// Largest allowed `live`; a single request over it saves the input at once, since a huge
    /// request may abort the process before the loop sees it.
    limit: Cell<isize>,
    /// The running input, for that early save.
    input: Cell<(*const u8, usize)>,
    target: Cell<&'static str>,
}

thread_local! {
    static TRACKING: Tracking = const {
        Tracking {
            on: Cell::new(false),
            busy: Cell::new(false),
            live: Cell::new(0),
            peak: Cell::new(0),
            limit: Cell::new(isize::MAX),
            input: Cell::new((std::ptr::null(), 0)),
            target: Cell::new(""),
        }
    };
}

fn account(delta: isize) {
    let _ = TRACKING.try_with(|t| {
        if !t.on.get() || t.busy.get() {
            return;
        }
        let live = t.live.get() + delta;
        t.live.set(live);
        if live > t.peak.get() {
            t.peak.set(live);
        }
        if delta > t.limit.get() {
            t.busy.set(true);
            let (ptr, len) = t.input.get();
            // SAFETY: `input` points at the slice that `run_one` is running, alive until it
            // clears `on`.
            let input = unsafe { std::slice::from_raw_parts(ptr, len) };
            let path = save_failure(t.target.get(), input);
            eprintln!(
                "fuzz {}: one allocation of {delta} bytes (limit {}); input saved to {}",
                t.target.get(),
                t.limit.get(),
                path.display()
            );
            t.busy.set(false);
        }
    });
}

// SAFETY: every call is forwarded to `System`; the bookkeeping only touches thread-locals.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        account(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

/// Most bytes an input may have allocated at once: 64 times its size, plus 1 MiB.
pub fn allocation_limit(input_len: usize) -> usize {
    64 * input_len + (1 << 20)
}

// ---------------------------------------------------------------------------------------------
// Settings

/// How a run is set up: from `FUZZ_SEED` and `FUZZ_ITERS`, or a fresh seed and the target's
/// default count.
pub struct Settings {
    /// The seed printed at the start; `FUZZ_SEED` reproduces the run.
    pub seed: u64,
    /// Generated inputs per target (the corpus replay comes on top).
    pub iters: Option<u64>,
}

impl Settings {
    /// Reads the environment; a malformed variable is a test failure, not a silent default.
    pub fn from_env() -> Settings {
        let seed = match std::env::var("FUZZ_SEED") {
            Ok(text) => parse_number(&text).unwrap_or_else(|| panic!("FUZZ_SEED={text:?}")),
            Err(_) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                sig((now, std::process::id()))
            }
        };
        let iters = std::env::var("FUZZ_ITERS")
            .ok()
            .map(|text| parse_number(&text).unwrap_or_else(|| panic!("FUZZ_ITERS={text:?}")));
        Settings { seed, iters }
    }
}

fn parse_number(text: &str) -> Option<u64> {
    let text = text.trim().replace('_', "");
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

// ---------------------------------------------------------------------------------------------
// Mutation

const BYTES: &[u8] = b"\x00\x01\x02\x7f\x80\xfe\xff\n\r\t .:-,=$\"'{}[]\\/0129afAF";
const WORDS: &[u16] = &[
    0, 1, 2, 8, 255, 256, 512, 576, 1024, 1500, 0x7fff, 0x8000, 65464, 65535,
];
const DWORDS: &[u32] = &[0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0x6382_5363];

/// Applies one to eight random edits to `data`, keeping it at most `max_len` long.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>], dict: &[&[u8]], max_len: usize) {
    let stack = rng.below(4);
    let rounds = 1 + rng.below(1 << stack);
    for _ in 0..rounds {
        let len = data.len();
        let at = rng.below(len + 1);
        match rng.below(15) {
            0 if len > 0 => data[at.min(len - 1)] ^= 1 << rng.below(8),
            1 if len > 0 => data[at.min(len - 1)] = rng.next_u64() as u8,
            2 if len > 0 => data[at.min(len - 1)] = *rng.pick(BYTES),
            3 if len > 0 => {
                let i = at.min(len - 1);
                data[i] = data[i].wrapping_add(rng.below(33) as u8).wrapping_sub(16);
            }
            4 if len >= 2 => {
                let i = at.min(len - 2);
                let w = *rng.pick(WORDS);
                let bytes = if rng.one_in(2) {
                    w.to_be_bytes()
                } else {
                    w.to_le_bytes()
                };
                data[i..i + 2].copy_from_slice(&bytes);
            }
            5 if len >= 4 => {
                let i = at.min(len - 4);
                let w = *rng.pick(DWORDS);
                let bytes = if rng.one_in(2) {
                    w.to_be_bytes()
                } else {
                    w.to_le_bytes()
                };
                data[i..i + 4].copy_from_slice(&bytes);
            }
            // A length field: the number of bytes that follow, or one off.
            6 if len > 0 => {
                let i = at.min(len - 1);
                let rest = len - i - 1;
                data[i] = (rest as u8)
                    .wrapping_add(rng.below(3) as u8)
                    .wrapping_sub(1);
            }
            7 => {
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                data.splice(at..at, bytes);
            }
            8 => {
                let most = if rng.one_in(8) { 1024 } else { 32 };
                let n = 1 + rng.below(most);
                let byte = *rng.pick(BYTES);
                data.splice(at..at, std::iter::repeat_n(byte, n));
            }
            9 if len > 0 => {
                let start = rng.below(len);
                let most = if rng.one_in(4) { len } else { 16 };
                let end = (start + 1 + rng.below(most)).min(len);
                data.drain(start..end);
            }
            10 if len > 0 => {
                // Copy a piece of the input elsewhere in it (insert or overwrite).
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                let piece = data[start..end].to_vec();
                if rng.one_in(2) {
                    data.splice(at..at, piece);
                } else {
                    let to = at.min(len - piece.len());
                    data[to..to + piece.len()].copy_from_slice(&piece);
                }
            }
            11 if !pool.is_empty() => {
                // Splice: a piece of another input, or this one's head on another's tail.
                let other = rng.pick(pool);
                if other.is_empty() {
                    continue;
                }
                if rng.one_in(2) {
                    let start = rng.below(other.len());
                    let end = (start + 1 + rng.below(128)).min(other.len());
                    data.splice(at..at, other[start..end].iter().copied());
                } else {
                    let from = rng.below(other.len());
                    data.truncate(at);
                    data.extend_from_slice(&other[from..]);
                }
            }
            12 if len > 0 => data.truncate(rng.below(len)),
            13 | 14 if !dict.is_empty() => {
                let word = *rng.pick(dict);
                if rng.one_in(2) || at + word.len() > len {
                    data.splice(at..at, word.iter().copied());
                } else {
                    data[at..at + word.len()].copy_from_slice(word);
                }
            }
            _ => {}
        }
    }
    data.truncate(max_len);
}

// ---------------------------------------------------------------------------------------------
// Failures

fn failure_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("fuzz-failures")
}

/// Writes a failing input to `target/fuzz-failures/<target>-<hash>.bin`.
fn save_failure(target: &str, input: &[u8]) -> PathBuf {
    let dir = failure_dir();
    let path = dir.join(format!("{target}-{:016x}.bin", sig(input)));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input)) {
        eprintln!("fuzz {target}: cannot save {}: {e}", path.display());
    }
    path
}

fn hex(input: &[u8]) -> String {
    const SHOWN: usize = 2048;
    let mut out: String = input
        .iter()
        .take(SHOWN)
        .map(|b| format!("{b:02x}"))
        .collect();
    if input.len() > SHOWN {
        out.push_str(&format!("… ({} bytes)", input.len()));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The loop

/// One fuzz target.
pub struct Target {
    /// Name: the corpus directory and the prefix of saved failures.
    pub name: &'static str,
    /// Longest input generated.
    pub max_len: usize,
    /// Tokens the mutator inserts (keywords of the format).
    pub dict: &'static [&'static [u8]],
    /// Inputs generated without `FUZZ_ITERS` (sized for the debug `cargo test` run).
    pub default_iters: u64,
}

/// Longest time one input may take before it counts as a hang: 1 s in release builds, 5 s in
/// debug ones (10 to 30 times slower). Generous on purpose: it is a hang detector (inputs
/// normally take microseconds), not a speed check.
pub const HANG: Duration = if cfg!(debug_assertions) {
    Duration::from_secs(5)
} else {
    Duration::from_secs(1)
};
/// With no input finished for this long, the watchdog saves the running input and ends the
/// process (an endless loop never returns to the time check).
pub const STALL: Duration = Duration::from_secs(30);
/// Inputs kept for mutation besides the corpus.
const POOL: usize = 1024;

/// What a run did, printed at its end.
#[derive(Debug, Default)]
pub struct Report {
    /// Inputs run, corpus included.
    pub inputs: u64,
    /// Seconds taken.
    pub secs: f64,
    /// The slowest input's time.
    pub slowest: Duration,
    /// Highest peak allocation seen, bytes.
    pub peak_alloc: usize,
    /// Distinct outcome signatures.
    pub outcomes: usize,
    /// Inputs the parser accepted (see [`accepted`]).
    pub accepted: u64,
}

thread_local! {
    static ACCEPTED: Cell<u64> = const { Cell::new(0) };
}

/// Called by a target when the parser accepted its input, so that the report tells how many
/// inputs got past the first checks.
pub fn accepted() {
    ACCEPTED.with(|a| a.set(a.get() + 1));
}

struct Watchdog {
    done: AtomicU64,
    stop: AtomicBool,
    input: Mutex<Vec<u8>>,
}

fn start_watchdog(name: &'static str) -> Arc<Watchdog> {
    let dog = Arc::new(Watchdog {
        done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        input: Mutex::new(Vec::new()),
    });
    let watched = Arc::clone(&dog);
    std::thread::spawn(move || {
        let mut last = (u64::MAX, Instant::now());
        while !watched.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            let done = watched.done.load(Ordering::Relaxed);
            if done != last.0 {
                last = (done, Instant::now());
            } else if last.1.elapsed() > STALL {
                let input = watched
                    .input
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let path = save_failure(name, &input);
                eprintln!(
                    "fuzz {name}: HANG: no input finished for {STALL:?}; input saved to {}: {}",
                    path.display(),
                    hex(&input)
                );
                std::process::exit(101);
            }
        }
    });
    dog
}

/// Runs `check` on one input, measuring time and allocation; an error describes the failure.
fn run_one(
    target: &Target,
    check: &dyn Fn(&[u8]) -> Outcome,
    input: &[u8],
    report: &mut Report,
) -> Result<u64, String> {
    let limit = allocation_limit(input.len());
    TRACKING.with(|t| {
        t.live.set(0);
        t.peak.set(0);
        t.limit.set(limit as isize);
        t.input.set((input.as_ptr(), input.len()));
        t.target.set(target.name);
        t.on.set(true);
    });
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| check(input)));
    let took = started.elapsed();
    let peak = TRACKING.with(|t| {
        t.on.set(false);
        t.input.set((std::ptr::null(), 0));
        t.peak.get().max(0) as usize
    });
    report.slowest = report.slowest.max(took);
    report.peak_alloc = report.peak_alloc.max(peak);
    match result {
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panic: {message}"))
        }
        Ok(Err(broken)) => Err(format!("invariant: {broken}")),
        Ok(Ok(_)) if took > HANG => Err(format!("hang: one input took {took:?}")),
        Ok(Ok(_)) if peak > limit => Err(format!(
            "allocation: {peak} bytes live at once, over {limit} for {} input bytes",
            input.len()
        )),
        Ok(Ok(signature)) => Ok(signature),
    }
}

fn corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("corpus file");
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (name, bytes)
        })
        .collect()
}

/// Replays the target's corpus, then runs the generated inputs; panics on the first failure
/// with the input's hex, the path it was saved to and the seed.
pub fn fuzz(target: &Target, check: &dyn Fn(&[u8]) -> Outcome) -> Report {
    let settings = Settings::from_env();
    let iters = settings.iters.unwrap_or(target.default_iters);
    let mut rng = Rng::new(settings.seed ^ sig(target.name));
    eprintln!(
        "fuzz {}: FUZZ_SEED=0x{:016x} FUZZ_ITERS={iters}",
        target.name, settings.seed
    );
    let dog = start_watchdog(target.name);
    let mut report = Report::default();
    ACCEPTED.with(|a| a.set(0));
    let started = Instant::now();
    let mut seen = HashSet::new();
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let corpus = corpus(target.name);
    let fail = |what: &str, input: &[u8], why: String| {
        dog.stop.store(true, Ordering::Relaxed);
        let path = save_failure(target.name, input);
        format!(
            "fuzz {}: {what} failed: {why}\n  saved to {}\n  seed FUZZ_SEED=0x{:016x}\n  input ({} bytes): {}",
            target.name,
            path.display(),
            settings.seed,
            input.len(),
            hex(input)
        )
    };
    for (file, input) in &corpus {
        dog.input
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone_from(input);
        match run_one(target, check, input, &mut report) {
            Ok(signature) => {
                seen.insert(signature);
            }
            Err(why) => panic!("{}", fail(&format!("corpus file {file}"), input, why)),
        }
        dog.done.fetch_add(1, Ordering::Relaxed);
        report.inputs += 1;
        pool.push(input.clone());
    }
    let fixed = pool.len();
    let mut input = Vec::new();
    for i in 0..iters {
        input.clear();
        if rng.one_in(32) {
            let n = rng.below(target.max_len.min(512) + 1);
            input.extend((0..n).map(|_| rng.next_u64() as u8));
        } else {
            let base = rng.below(pool.len());
            input.extend_from_slice(&pool[base]);
        }
        mutate(&mut rng, &mut input, &pool, target.dict, target.max_len);
        dog.input
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone_from(&input);
        match run_one(target, check, &input, &mut report) {
            Ok(signature) => {
                if seen.insert(signature) {
                    if pool.len() < fixed + POOL {
                        pool.push(input.clone());
                    } else {
                        let slot = fixed + rng.below(POOL);
                        pool[slot].clone_from(&input);
                    }
                }
            }
            Err(why) => panic!("{}", fail(&format!("input {i}"), &input, why)),
        }
        dog.done.fetch_add(1, Ordering::Relaxed);
        report.inputs += 1;
    }
    dog.stop.store(true, Ordering::Relaxed);
    report.secs = started.elapsed().as_secs_f64();
    report.outcomes = seen.len();
    report.accepted = ACCEPTED.with(Cell::get);
    eprintln!(
        "fuzz {}: {} inputs in {:.1} s ({:.0}/s), 0 panics, 0 hangs, slowest {:?}, peak allocation {} bytes, {} outcomes, {} accepted",
        target.name,
        report.inputs,
        report.secs,
        report.inputs as f64 / report.secs.max(1e-9),
        report.slowest,
        report.peak_alloc,
        report.outcomes,
        report.accepted
    );
    report
}
