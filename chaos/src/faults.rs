//! The fault schedule: a thread that, every 100–800 ms, picks a proxy (one per client) and a
//! fault at random from a seeded generator, applies it through Toxiproxy's API and lifts it
//! again after a random while. Faults: latency with jitter, a bandwidth limit, slicing into tiny
//! packets, a silent peer (data stops, the socket stays open), resets, a data limit that closes
//! the connection, and the proxy taken down and up again. At most two faults per proxy at once.
//!
//! A toxic is lifted by creating its proxy afresh (which cuts its connections) rather than by
//! removing it: Toxiproxy 2.5 can deadlock removing a toxic while a connection closes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use missive_testkit::toxiproxy::{Direction, Proxy, Toxic};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How many faults of each kind were applied.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultCounts {
    pub latency: u32,
    pub bandwidth: u32,
    pub slicer: u32,
    pub silent: u32,
    pub reset: u32,
    pub limit_data: u32,
    pub down: u32,
    /// Proxies created afresh to lift a toxic (their connections cut).
    pub rebuilds: u32,
}

impl std::fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "latency {}, bandwidth {}, slicer {}, silent {}, reset {}, limit_data {}, proxy down {} (proxies rebuilt {})",
            self.latency, self.bandwidth, self.slicer, self.silent, self.reset, self.limit_data, self.down, self.rebuilds
        )
    }
}

/// A running schedule; [`Monkey::stop`] lifts every fault and returns the counts.
pub struct Monkey {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<FaultCounts, String>>,
}

impl Monkey {
    /// Starts injecting faults into `proxies`, drawn from `seed`.
    pub fn start(proxies: Vec<Proxy>, seed: u64) -> Monkey {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || run(&proxies, seed, &flag));
        Monkey { stop, thread }
    }

    /// Stops, lifts every fault still applied, and returns what was injected.
    pub fn stop(self) -> Result<FaultCounts, String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().map_err(|_| "the fault thread panicked".to_string())?
    }
}

/// The faults applied to one proxy.
#[derive(Default)]
struct Applied {
    toxics: Vec<(Instant, String, Toxic, Direction)>,
    down_until: Option<Instant>,
}

fn run(proxies: &[Proxy], seed: u64, stop: &AtomicBool) -> Result<FaultCounts, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counts = FaultCounts::default();
    let mut applied: Vec<Applied> = proxies.iter().map(|_| Applied::default()).collect();
    let mut next_name = 0u64;
    let api = |e: std::io::Error| format!("Toxiproxy API: {e}");
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(rng.random_range(100..800)));
        let now = Instant::now();
        for (proxy, state) in proxies.iter().zip(&mut applied) {
            if state.down_until.is_some_and(|until| until <= now) {
                state.down_until = None;
                proxy.set_enabled(true).map_err(api)?;
            }
            let before = state.toxics.len();
            state.toxics.retain(|(until, ..)| *until > now);
            if state.toxics.len() < before {
                // Lifting a toxic by rebuilding the proxy; see `Proxy::recreate`.
                rebuild(proxy, state).map_err(api)?;
                counts.rebuilds += 1;
            }
        }
        let p = rng.random_range(0..proxies.len());
        let (proxy, state) = (&proxies[p], &mut applied[p]);
        if state.toxics.len() >= 2 || state.down_until.is_some() {
            continue;
        }
        let direction = if rng.random_bool(0.5) { Direction::Upstream } else { Direction::Downstream };
        let millis = |rng: &mut StdRng, range: std::ops::Range<u64>| Duration::from_millis(rng.random_range(range));
        let (toxic, lasts) = match rng.random_range(0..7) {
            0 => {
                counts.latency += 1;
                (Toxic::Latency { latency: rng.random_range(10..400), jitter: rng.random_range(0..150) }, millis(&mut rng, 500..4000))
            }
            1 => {
                counts.bandwidth += 1;
                (Toxic::Bandwidth { rate: rng.random_range(2..64) }, millis(&mut rng, 500..4000))
            }
            2 => {
                counts.slicer += 1;
                let average_size = rng.random_range(1..64);
                (
                    Toxic::Slicer { average_size, size_variation: average_size / 2, delay_us: rng.random_range(0..400) },
                    millis(&mut rng, 500..4000),
                )
            }
            3 => {
                counts.silent += 1;
                (Toxic::Timeout { timeout: 0 }, millis(&mut rng, 1000..7000))
            }
            4 => {
                counts.reset += 1;
                (Toxic::ResetPeer { timeout: rng.random_range(0..1500) }, millis(&mut rng, 300..2500))
            }
            5 => {
                counts.limit_data += 1;
                (Toxic::LimitData { bytes: rng.random_range(500..40_000) }, millis(&mut rng, 500..3000))
            }
            _ => {
                counts.down += 1;
                proxy.set_enabled(false).map_err(api)?;
                state.down_until = Some(now + millis(&mut rng, 100..3000));
                continue;
            }
        };
        next_name += 1;
        let name = format!("fault{next_name}");
        let added = proxy.add(&name, &toxic, direction);
        state.toxics.push((now + lasts, name, toxic, direction));
        if added.is_err() {
            // Caught by Toxiproxy's deadlock: start the proxy afresh with its toxics.
            rebuild(proxy, state).map_err(api)?;
            counts.rebuilds += 1;
        }
    }
    for (proxy, state) in proxies.iter().zip(&mut applied) {
        if !state.toxics.is_empty() || state.down_until.is_some() {
            *state = Applied::default();
            rebuild(proxy, state).map_err(api)?;
        }
    }
    Ok(counts)
}

/// Creates the proxy afresh (its connections are cut) with the toxics still in `state`.
fn rebuild(proxy: &Proxy, state: &Applied) -> std::io::Result<()> {
    proxy.recreate()?;
    for (_, name, toxic, direction) in &state.toxics {
        proxy.add(name, toxic, *direction)?;
    }
    if state.down_until.is_some() {
        proxy.set_enabled(false)?;
    }
    Ok(())
}
