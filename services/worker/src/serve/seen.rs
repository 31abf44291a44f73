//! The request ids a worker took lately. A dispatch of one it already holds or answered — a
//! restarted scheduler adopting requests the work queue delivered again, a dispatch repeated
//! after its acknowledgement was lost — is acknowledged without running the request again.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Request ids taken within the last `keep`, at most `cap` of them (the oldest go first).
pub struct Seen {
    state: Mutex<State>,
    keep: Duration,
    cap: usize,
}

#[derive(Default)]
struct State {
    /// Id → when it was taken.
    ids: HashMap<String, Instant>,
    /// Ids in the order they were taken (an id forgotten and taken again appears twice; the
    /// map's time tells which entry is current).
    order: VecDeque<(Instant, String)>,
}

impl State {
    fn pop_oldest(&mut self) {
        if let Some((at, old)) = self.order.pop_front()
            && self.ids.get(&old) == Some(&at)
        {
            self.ids.remove(&old);
        }
    }
}

impl Seen {
    /// Remembers ids for `keep`, at most `cap` of them.
    pub fn new(keep: Duration, cap: usize) -> Self {
        Seen {
            state: Mutex::new(State::default()),
            keep,
            cap: cap.max(1),
        }
    }

    /// Records `id` as taken now; false when it was already taken (and not forgotten).
    pub fn take(&self, id: &str) -> bool {
        self.take_at(id, Instant::now())
    }

    fn take_at(&self, id: &str, now: Instant) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return true;
        };
        while let Some((at, _)) = s.order.front() {
            if now.saturating_duration_since(*at) <= self.keep {
                break;
            }
            s.pop_oldest();
        }
        if s.ids.contains_key(id) {
            return false;
        }
        while s.order.len() >= self.cap {
            s.pop_oldest();
        }
        s.ids.insert(id.to_owned(), now);
        s.order.push_back((now, id.to_owned()));
        true
    }

    /// Forgets `id` (its dispatch was refused: a later dispatch of it must be taken).
    pub fn forget(&self, id: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.ids.remove(id);
        }
    }

    /// How many ids are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().map_or(0, |s| s.ids.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_taken_once_until_forgotten() {
        let seen = Seen::new(Duration::from_secs(60), 100);
        assert!(seen.take("a"));
        assert!(!seen.take("a"), "a second dispatch of a held request");
        assert!(seen.take("b"));
        seen.forget("a");
        assert!(seen.take("a"), "a refused dispatch may be taken again");
        assert!(!seen.take("a"));
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn old_ids_and_ids_over_the_cap_are_let_go() {
        let seen = Seen::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        assert!(seen.take_at("a", t0));
        assert!(seen.take_at("b", t0 + Duration::from_secs(5)));
        // "a" is older than 10 s by now; "b" is not.
        assert!(seen.take_at("c", t0 + Duration::from_secs(11)));
        assert!(seen.take_at("a", t0 + Duration::from_secs(11)));
        assert!(!seen.take_at("b", t0 + Duration::from_secs(11)));
        // Over the cap of 3: the oldest ("b") goes.
        assert!(seen.take_at("d", t0 + Duration::from_secs(12)));
        assert_eq!(seen.len(), 3);
        assert!(seen.take_at("b", t0 + Duration::from_secs(12)));
    }

    #[test]
    fn a_forgotten_then_retaken_id_outlives_its_first_entry() {
        let seen = Seen::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        assert!(seen.take_at("a", t0));
        seen.forget("a");
        assert!(seen.take_at("a", t0 + Duration::from_secs(8)));
        // The first entry expires; the current one (taken at 8 s) stays.
        assert!(seen.take_at("z", t0 + Duration::from_secs(12)));
        assert!(!seen.take_at("a", t0 + Duration::from_secs(12)));
    }
}
