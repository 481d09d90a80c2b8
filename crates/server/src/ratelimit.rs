//! Per-folder rate limits and the temporary refusal of source IPs that exceed them.
//!
//! Fixed windows aligned to the clock (a day for the segment API, a second for the profile
//! API), counted per folder and API. Only requests that passed authentication count, so nobody
//! can spend a provider's quota without its credentials. The clock is injected: tests move time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use segmart_domain::{Clock, FolderId, Timestamp};

/// Limits, all configurable.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// Segment API requests per folder per day (1000).
    pub segment_requests_per_day: u32,
    /// Profile API requests per folder per second (1000); a batch counts as one.
    pub profile_requests_per_second: u32,
    /// How long a source IP is refused after exceeding a limit (300 s).
    pub ban_secs: u64,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            segment_requests_per_day: 1000,
            profile_requests_per_second: 1000,
            ban_secs: 300,
        }
    }
}

/// Which quota a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiClass {
    Segment,
    Profile,
}

/// The state of one quota, as the `X-RateLimit-*` headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    /// Whole seconds until the window resets (at least 1).
    pub reset_secs: u64,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: i64,
    used: u32,
}

pub struct RateLimiter {
    settings: RateLimitSettings,
    clock: Arc<dyn Clock>,
    windows: Mutex<HashMap<(FolderId, ApiClass), Window>>,
    bans: Mutex<HashMap<IpAddr, Timestamp>>,
}

impl RateLimiter {
    pub fn new(settings: RateLimitSettings, clock: Arc<dyn Clock>) -> Self {
        RateLimiter {
            settings,
            clock,
            windows: Mutex::new(HashMap::new()),
            bans: Mutex::new(HashMap::new()),
        }
    }

    fn shape(&self, class: ApiClass) -> (u32, i64) {
        match class {
            ApiClass::Segment => (self.settings.segment_requests_per_day, 86_400_000),
            ApiClass::Profile => (self.settings.profile_requests_per_second, 1_000),
        }
    }

    /// Seconds the IP remains refused, if it is.
    pub fn banned_for(&self, ip: IpAddr) -> Option<u64> {
        let now = self.clock.now();
        let mut bans = self.bans.lock();
        match bans.get(&ip) {
            Some(until) if *until > now => {
                Some(((until.millis() - now.millis()) as u64).div_ceil(1000))
            }
            Some(_) => {
                bans.remove(&ip);
                None
            }
            None => None,
        }
    }

    fn quota_at(&self, window: Window, limit: u32, length_ms: i64, now: Timestamp) -> Quota {
        let end = window.start_ms + length_ms;
        Quota {
            limit,
            remaining: limit.saturating_sub(window.used),
            reset_secs: ((end - now.millis()).max(1) as u64).div_ceil(1000),
        }
    }

    fn current(
        &self,
        windows: &mut HashMap<(FolderId, ApiClass), Window>,
        folder: FolderId,
        class: ApiClass,
        now: Timestamp,
    ) -> Window {
        let (_, length_ms) = self.shape(class);
        let start_ms = now.millis() - now.millis().rem_euclid(length_ms);
        let window = windows
            .entry((folder, class))
            .or_insert(Window { start_ms, used: 0 });
        if window.start_ms != start_ms {
            *window = Window { start_ms, used: 0 };
        }
        *window
    }

    /// Reports a quota without spending from it.
    pub fn peek(&self, folder: FolderId, class: ApiClass) -> Quota {
        let now = self.clock.now();
        let (limit, length_ms) = self.shape(class);
        let window = self.current(&mut self.windows.lock(), folder, class, now);
        self.quota_at(window, limit, length_ms, now)
    }

    /// Spends one request. Over the limit, refuses it and refuses `ip` for the ban period.
    pub fn hit(&self, folder: FolderId, class: ApiClass, ip: IpAddr) -> Result<Quota, Quota> {
        let now = self.clock.now();
        let (limit, length_ms) = self.shape(class);
        let mut windows = self.windows.lock();
        let mut window = self.current(&mut windows, folder, class, now);
        if window.used >= limit {
            drop(windows);
            let until = now.plus_secs(self.settings.ban_secs as i64);
            self.bans.lock().insert(ip, until);
            return Err(self.quota_at(window, limit, length_ms, now));
        }
        window.used += 1;
        windows.insert((folder, class), window);
        Ok(self.quota_at(window, limit, length_ms, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use segmart_domain::ManualClock;

    fn limiter(clock: &ManualClock) -> RateLimiter {
        RateLimiter::new(
            RateLimitSettings {
                segment_requests_per_day: 3,
                profile_requests_per_second: 2,
                ban_secs: 300,
            },
            Arc::new(clock.clone()),
        )
    }

    #[test]
    fn profile_window_resets_every_second_and_bans_the_ip() {
        let clock = ManualClock::new(Timestamp::from_secs(1_000));
        let limiter = limiter(&clock);
        let folder = FolderId::random();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            limiter
                .hit(folder, ApiClass::Profile, ip)
                .unwrap()
                .remaining,
            1
        );
        assert_eq!(
            limiter
                .hit(folder, ApiClass::Profile, ip)
                .unwrap()
                .remaining,
            0
        );
        assert!(limiter.hit(folder, ApiClass::Profile, ip).is_err());
        assert_eq!(limiter.banned_for(ip), Some(300));
        clock.advance_secs(1);
        assert_eq!(limiter.peek(folder, ApiClass::Profile).remaining, 2);
        clock.advance_secs(298);
        assert_eq!(limiter.banned_for(ip), Some(1));
        clock.advance_secs(1);
        assert_eq!(limiter.banned_for(ip), None);
    }

    #[test]
    fn segment_quota_is_per_day_and_per_folder() {
        let clock = ManualClock::new(Timestamp::from_secs(86_400 * 10 + 3_600));
        let limiter = limiter(&clock);
        let (a, b) = (FolderId::random(), FolderId::random());
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            limiter.hit(a, ApiClass::Segment, ip).unwrap();
        }
        let quota = limiter.peek(a, ApiClass::Segment);
        assert_eq!(quota.remaining, 0);
        assert_eq!(quota.reset_secs, 86_400 - 3_600);
        assert_eq!(limiter.peek(b, ApiClass::Segment).remaining, 3);
        assert_eq!(limiter.peek(a, ApiClass::Profile).remaining, 2);
    }
}
