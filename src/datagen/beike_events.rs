//! Deal and agent-itinerary events of the reference warehouse.
//!
//! Deals follow their life: created, then signed, then paid (or cancelled
//! on the way), with the same id, amount and agent throughout, keyed by deal
//! id so one deal's events stay in order in one partition. Itineraries are
//! an agent's day: a showing starts and later finishes (with its duration),
//! clients visit stores. A few agents do most of the business, as in life.
//!
//! What feeds break is mixed in on purpose, in chosen fractions: events a
//! little out of order (`disorder`), events minutes old (`late`: behind any
//! watermark), events dated hours ahead (`future`), records sent twice
//! (`duplicates`, as an at-least-once producer does) and broken records
//! (`malformed`). The generator is pure: the caller supplies the clock, so
//! the same seed and clock give the same records.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::datagen::beike_world::{CITIES, World};
use crate::datagen::malform::malform;

/// Fractions of each kind of trouble, and the disorder of on-time events.
#[derive(Debug, Clone, Copy)]
pub struct Trouble {
    /// Records made malformed.
    pub malformed: f64,
    /// Events dated `late_age_us` before the clock.
    pub late: f64,
    /// How far before the clock late events are dated: (least, most), µs.
    pub late_age_us: (i64, i64),
    /// Which streams get late events.
    pub late_deals: bool,
    /// Whether itinerary events can be late.
    pub late_itineraries: bool,
    /// Events dated 2-6 hours after the clock.
    pub future: f64,
    /// Records sent twice in a row.
    pub duplicates: f64,
    /// On-time events are dated up to this many microseconds before the clock.
    pub disorder_us: i64,
}

/// Which stream a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Deal events.
    Deals,
    /// Agent itinerary events.
    Itineraries,
}

/// How a record was made, for the generator's own counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// On time, well-formed.
    OnTime,
    /// Dated minutes in the past.
    Late,
    /// Dated hours ahead.
    Future,
    /// Not a valid record.
    Malformed,
}

/// One record to produce.
pub struct Record {
    /// Its stream (topic).
    pub stream: Stream,
    /// Kafka key.
    pub key: String,
    /// JSON value.
    pub value: String,
    /// How it was made.
    pub kind: Kind,
    /// 1, or 2 when it is to be sent twice.
    pub copies: u8,
}

struct OpenDeal {
    id: u64,
    agent: usize,
    amount: f64,
    area: f64,
    property_type: &'static str,
    signed: bool,
}

struct OpenShowing {
    agent: usize,
    client: u64,
    property: u64,
    started_us: i64,
}

const PROPERTY_TYPES: &[(&str, f64)] =
    &[("second_hand", 1.0), ("new_home", 1.2), ("rental", 0.004)];
const MAX_OPEN: usize = 20_000;

/// Makes the reference warehouse's events.
pub struct BeikeGenerator {
    rng: StdRng,
    world: World,
    trouble: Trouble,
    deals: Vec<OpenDeal>,
    showings: Vec<OpenShowing>,
    next_deal: u64,
    next_event: u64,
}

impl BeikeGenerator {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64, trouble: Trouble) -> Self {
        BeikeGenerator {
            rng: StdRng::seed_from_u64(seed),
            world: World::new(),
            trouble,
            deals: Vec::new(),
            showings: Vec::new(),
            next_deal: seed.wrapping_mul(1_000_000_000),
            next_event: seed.wrapping_mul(1_000_000_000),
        }
    }

    /// The next record, when the event clock reads `clock_us` and the wall
    /// clock `now_us` (microseconds since the Unix epoch; the same unless
    /// history is being simulated): deals and itinerary events alternate at
    /// random. Future-dated events are dated from the wall clock, so they
    /// are in the future even in simulated history.
    pub fn next(&mut self, clock_us: i64, now_us: i64) -> Record {
        let deal = self.rng.random_bool(0.5);
        let may_be_late = if deal {
            self.trouble.late_deals
        } else {
            self.trouble.late_itineraries
        };
        let (kind, event_us) = self.timing(clock_us, now_us, may_be_late);
        let (stream, key, value) = if deal {
            self.deal_event(event_us)
        } else {
            self.itinerary_event(event_us)
        };
        let (kind, value) = if self.rng.random_bool(self.trouble.malformed) {
            let number = if stream == Stream::Deals {
                "amount"
            } else {
                "duration_min"
            };
            let broken = malform(&mut self.rng, &value, number, "event_time");
            (Kind::Malformed, broken)
        } else {
            (kind, value)
        };
        let copies = if kind != Kind::Malformed && self.rng.random_bool(self.trouble.duplicates) {
            2
        } else {
            1
        };
        Record {
            stream,
            key,
            value,
            kind,
            copies,
        }
    }

    fn timing(&mut self, clock_us: i64, now_us: i64, may_be_late: bool) -> (Kind, i64) {
        let t = &self.trouble;
        let roll: f64 = self.rng.random();
        if roll < t.late && may_be_late {
            let (least, most) = t.late_age_us;
            let behind = self.rng.random_range(least..=most.max(least));
            (Kind::Late, clock_us - behind)
        } else if roll < t.late + t.future {
            let ahead = self.rng.random_range(7_200_000_000i64..21_600_000_000);
            (Kind::Future, clock_us.max(now_us) + ahead)
        } else {
            let jitter = if t.disorder_us > 0 {
                self.rng.random_range(0..t.disorder_us)
            } else {
                0
            };
            (Kind::OnTime, clock_us - jitter)
        }
    }

    /// An agent, the first ones far busier than the rest.
    fn agent(&mut self) -> usize {
        let u: f64 = self.rng.random();
        ((u * u) * self.world.agents.len() as f64) as usize % self.world.agents.len()
    }

    fn deal_event(&mut self, event_us: i64) -> (Stream, String, String) {
        let advance =
            !self.deals.is_empty() && (self.deals.len() >= MAX_OPEN || self.rng.random_bool(0.55));
        let (i, event_type) = if advance {
            let i = self.rng.random_range(0..self.deals.len());
            let signed = self.deals[i].signed;
            let roll: f64 = self.rng.random();
            if !signed && roll < 0.85 {
                self.deals[i].signed = true;
                (i, "signed")
            } else if signed && roll < 0.9 {
                (i, "paid")
            } else {
                (i, "cancelled")
            }
        } else {
            self.next_deal += 1;
            let agent = self.agent();
            let (property_type, factor) =
                PROPERTY_TYPES[self.rng.random_range(0..PROPERTY_TYPES.len())];
            let city = &CITIES[self.world.stores[self.world.agents[agent].store].city];
            let area = self.rng.random_range(35.0..180.0);
            let amount =
                area * city.price_level * 10_000.0 * factor * self.rng.random_range(0.8..1.25);
            self.deals.push(OpenDeal {
                id: self.next_deal,
                agent,
                amount,
                area,
                property_type,
                signed: false,
            });
            (self.deals.len() - 1, "created")
        };
        let deal = &self.deals[i];
        let agent = &self.world.agents[deal.agent];
        let store = &self.world.stores[agent.store];
        let key = format!("D{:012}", deal.id);
        let value = format!(
            r#"{{"deal_id":"{key}","event_type":"{event_type}","amount":"{:.2}","city":"{}","district":"{}","store_id":"{}","agent_id":"{}","property_type":"{}","area":{:.1},"event_time":"{}"}}"#,
            deal.amount,
            CITIES[store.city].id,
            store.district,
            store.id,
            agent.id,
            deal.property_type,
            deal.area,
            rfc3339(event_us),
        );
        if matches!(event_type, "paid" | "cancelled") {
            self.deals.swap_remove(i);
        }
        (Stream::Deals, key, value)
    }

    fn itinerary_event(&mut self, event_us: i64) -> (Stream, String, String) {
        self.next_event += 1;
        let event_id = format!("E{:012}", self.next_event);
        let roll: f64 = self.rng.random();
        let finish = !self.showings.is_empty() && (self.showings.len() >= MAX_OPEN || roll < 0.4);
        let (event_type, agent, client, property, duration) = if finish {
            let i = self.rng.random_range(0..self.showings.len());
            let s = self.showings.swap_remove(i);
            let minutes = ((event_us - s.started_us) / 60_000_000).clamp(5, 180);
            ("showing_finished", s.agent, s.client, s.property, minutes)
        } else if roll < 0.85 {
            let agent = self.agent();
            let showing = OpenShowing {
                agent,
                client: self.rng.random_range(1..200_000),
                property: self.rng.random_range(1..1_000_000),
                started_us: event_us,
            };
            let fields = (
                "showing_started",
                agent,
                showing.client,
                showing.property,
                0,
            );
            self.showings.push(showing);
            fields
        } else {
            let agent = self.agent();
            let client = self.rng.random_range(1..200_000);
            ("client_visit", agent, client, 0, 0)
        };
        let a = &self.world.agents[agent];
        let store = &self.world.stores[a.store];
        let lat = 22.5 + (a.store as f64 * 0.37) % 17.0 + self.rng.random_range(-0.02..0.02);
        let lon = 104.0 + (a.store as f64 * 0.53) % 17.0 + self.rng.random_range(-0.02..0.02);
        let value = format!(
            r#"{{"event_id":"{event_id}","event_type":"{event_type}","agent_id":"{}","client_id":"C{client:07}","property_id":"P{property:08}","district":"{}","lat":{lat:.5},"lon":{lon:.5},"duration_min":{duration},"event_time":"{}"}}"#,
            a.id,
            store.district,
            rfc3339(event_us),
        );
        (Stream::Itineraries, a.id.clone(), value)
    }
}

/// `us` as RFC 3339 UTC with milliseconds.
fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const CLEAN: Trouble = Trouble {
        malformed: 0.0,
        late: 0.0,
        late_age_us: LATE_AGE_US,
        late_deals: true,
        late_itineraries: true,
        future: 0.0,
        duplicates: 0.0,
        disorder_us: 0,
    };
    const LATE_AGE_US: (i64, i64) = (120_000_000, 900_000_000);

    #[test]
    fn same_seed_same_records() {
        let trouble = Trouble {
            malformed: 0.1,
            late: 0.1,
            late_age_us: LATE_AGE_US,
            late_deals: true,
            late_itineraries: true,
            future: 0.1,
            duplicates: 0.1,
            disorder_us: 2_000_000,
        };
        let (mut a, mut b) = (
            BeikeGenerator::new(5, trouble),
            BeikeGenerator::new(5, trouble),
        );
        for i in 0..500 {
            let (x, y) = (a.next(i * 1000, i * 1000), b.next(i * 1000, i * 1000));
            assert_eq!((x.value, x.kind, x.copies), (y.value, y.kind, y.copies));
        }
    }

    #[test]
    fn deals_follow_their_lifecycle_with_one_amount() {
        let mut g = BeikeGenerator::new(1, CLEAN);
        let mut seen: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for i in 0..20_000 {
            let t = 1_700_000_000_000_000 + i * 1000;
            let r = g.next(t, t);
            if r.stream != Stream::Deals {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&r.value).unwrap();
            seen.entry(r.key).or_default().push((
                v["event_type"].as_str().unwrap().into(),
                v["amount"].as_str().unwrap().into(),
            ));
        }
        let mut paid = 0;
        for events in seen.values() {
            assert_eq!(events[0].0, "created");
            assert!(events.iter().all(|e| e.1 == events[0].1));
            let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
            assert!(
                matches!(
                    kinds.as_slice(),
                    ["created"]
                        | ["created", "signed"]
                        | ["created", "cancelled"]
                        | ["created", "signed", "paid" | "cancelled"]
                ),
                "{kinds:?}"
            );
            paid += usize::from(kinds.last() == Some(&"paid"));
        }
        assert!(paid > 1000, "{paid} paid deals");
    }

    #[test]
    fn trouble_comes_in_the_asked_fractions() {
        let trouble = Trouble {
            malformed: 0.02,
            late: 0.05,
            late_age_us: LATE_AGE_US,
            late_deals: true,
            late_itineraries: true,
            future: 0.01,
            duplicates: 0.03,
            disorder_us: 1_000_000,
        };
        let mut g = BeikeGenerator::new(9, trouble);
        let now = 1_700_000_000_000_000;
        let mut counts: HashMap<&str, usize> = HashMap::new();
        let n = 50_000;
        for _ in 0..n {
            let r = g.next(now, now);
            let name = match r.kind {
                Kind::OnTime => "on_time",
                Kind::Late => "late",
                Kind::Future => "future",
                Kind::Malformed => "malformed",
            };
            *counts.entry(name).or_default() += 1;
            *counts.entry("copies").or_default() += usize::from(r.copies == 2);
        }
        let share = |k: &str| counts.get(k).copied().unwrap_or(0) as f64 / n as f64;
        assert!((share("malformed") - 0.02).abs() < 0.005);
        assert!((share("late") - 0.05 * 0.98).abs() < 0.008);
        assert!((share("future") - 0.01 * 0.98).abs() < 0.004);
        assert!((share("copies") - 0.03 * 0.98).abs() < 0.006);
    }
}
