//! A hiccup meter: how long the process (or the machine under it) fails to run a thread that
//! only wants to wake up every millisecond. A thread that sleeps 1 ms and wakes 40 ms later
//! was held off a CPU for 39 ms; every request in flight in that window waited as long,
//! whatever the code under test does. Run beside a latency benchmark it separates stalls of
//! the code from stalls of the machine; run alone (`segmart bench hiccup`) it measures the
//! machine itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The meter's requested sleep.
const TICK: Duration = Duration::from_millis(1);

/// A running meter; [`HiccupMeter::stop`] returns what it saw.
pub struct HiccupMeter {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Hiccups>,
}

/// What a meter saw: the delay past each requested wake-up, and the CPU time the machine's
/// hypervisor took (steal), over the same window.
pub struct Hiccups {
    pub wall: Duration,
    /// Microseconds late per wake-up.
    pub late_us: Histogram<u64>,
    /// Time lost in wake-ups more than 5 ms late (their lateness summed).
    pub lost_over_5ms: Duration,
    pub over_5ms: u64,
    pub steal: Duration,
}

impl HiccupMeter {
    pub fn start() -> HiccupMeter {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("hiccup-meter".into())
            .spawn(move || {
                let mut late_us = Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds");
                let mut lost = Duration::ZERO;
                let mut over = 0;
                let steal_before = steal_ticks();
                let started = Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    std::thread::sleep(TICK);
                    let late = asked.elapsed().saturating_sub(TICK);
                    let _ = late_us.record((late.as_micros() as u64).max(1));
                    if late > Duration::from_millis(5) {
                        lost += late;
                        over += 1;
                    }
                }
                let steal = steal_ticks().saturating_sub(steal_before);
                Hiccups {
                    wall: started.elapsed(),
                    late_us,
                    lost_over_5ms: lost,
                    over_5ms: over,
                    // USER_HZ is 100 on Linux.
                    steal: Duration::from_millis(steal * 10),
                }
            })
            .expect("spawn the hiccup meter");
        HiccupMeter { stop, thread }
    }

    pub fn stop(self) -> Hiccups {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the hiccup meter does not panic")
    }
}

impl Hiccups {
    /// One line for a benchmark report.
    pub fn summary(&self) -> String {
        let ms = |q: f64| self.late_us.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "hiccups (1 ms sleeps over {:.1} s): late p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, \
             max {:.1} ms; {} wake-ups over 5 ms late, {:.0} ms lost in them; steal {} ms",
            self.wall.as_secs_f64(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            self.late_us.max() as f64 / 1000.0,
            self.over_5ms,
            self.lost_over_5ms.as_secs_f64() * 1e3,
            self.steal.as_millis()
        )
    }
}

/// The machine's steal time so far, in USER_HZ ticks (0 where `/proc/stat` is not there).
pub(crate) fn steal_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let cpu = stat.lines().next()?.to_owned();
            cpu.split_whitespace().nth(8)?.parse().ok()
        })
        .unwrap_or(0)
}

/// `segmart bench hiccup`: the meter alone, for `seconds`, on an otherwise idle process.
pub fn run(seconds: u64) -> anyhow::Result<()> {
    let meter = HiccupMeter::start();
    std::thread::sleep(Duration::from_secs(seconds));
    println!("{}", meter.stop().summary());
    Ok(())
}
