//! Real-estate deal events, shaped like Beike's deal platform: a deal is
//! created, signed, paid or cancelled by an agent of a store in a district
//! of a city.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::datagen::malform::malform;

const CITIES: &[(&str, &[&str], f64)] = &[
    (
        "beijing",
        &["chaoyang", "haidian", "dongcheng", "fengtai"],
        6.0,
    ),
    ("shanghai", &["pudong", "xuhui", "jingan", "minhang"], 6.5),
    ("shenzhen", &["nanshan", "futian", "luohu"], 5.5),
    ("hangzhou", &["xihu", "binjiang", "gongshu"], 3.5),
    ("chengdu", &["jinjiang", "wuhou", "gaoxin"], 1.8),
    ("wuhan", &["wuchang", "hongshan", "jianghan"], 1.6),
];
const EVENT_TYPES: &[&str] = &["created", "signed", "paid", "cancelled"];
const PROPERTY_TYPES: &[(&str, f64)] =
    &[("second_hand", 1.0), ("new_home", 1.2), ("rental", 0.004)];
const STORES_PER_DISTRICT: u32 = 5;
const AGENTS_PER_STORE: u32 = 8;

/// Makes deal events as JSON lines, deterministically from a seed.
pub struct DealGenerator {
    rng: StdRng,
    malformed: f64,
    spread_micros: i64,
    sequence: u64,
}

/// One generated record.
pub struct Generated {
    /// Partitioning key (the deal id).
    pub key: String,
    /// The JSON value.
    pub value: String,
    /// Whether it was made malformed on purpose.
    pub malformed: bool,
}

impl DealGenerator {
    /// A generator whose event times fall within `spread_secs` before `now`,
    /// with a `malformed` fraction of broken records.
    pub fn new(seed: u64, malformed: f64, spread_secs: u64) -> Self {
        DealGenerator {
            rng: StdRng::seed_from_u64(seed),
            malformed: malformed.clamp(0.0, 1.0),
            spread_micros: spread_secs as i64 * 1_000_000,
            sequence: 0,
        }
    }

    /// The next record, with event time relative to `now_micros`.
    pub fn next(&mut self, now_micros: i64) -> Generated {
        self.sequence += 1;
        let seq = self.sequence;
        let (city, districts, price_level) = CITIES[self.rng.random_range(0..CITIES.len())];
        let d = self.rng.random_range(0..districts.len());
        let district = districts[d];
        let store = self.rng.random_range(0..STORES_PER_DISTRICT);
        let agent = self.rng.random_range(0..AGENTS_PER_STORE);
        let (property_type, factor) =
            PROPERTY_TYPES[self.rng.random_range(0..PROPERTY_TYPES.len())];
        let event_type = EVENT_TYPES[self.rng.random_range(0..EVENT_TYPES.len())];
        let area = self.rng.random_range(35.0..180.0);
        let amount = area * price_level * 10_000.0 * factor * self.rng.random_range(0.8..1.25);
        let offset = if self.spread_micros > 0 {
            self.rng.random_range(0..self.spread_micros)
        } else {
            0
        };
        let event_time = chrono::DateTime::from_timestamp_micros(now_micros - offset)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ");
        let deal_id = format!("D{seq:010}");
        let store_id = format!("{city}-{district}-s{store}");
        let agent_id = format!("{store_id}-a{agent}");
        let value = format!(
            r#"{{"deal_id":"{deal_id}","event_type":"{event_type}","amount":"{amount:.2}","city":"{city}","district":"{district}","store_id":"{store_id}","agent_id":"{agent_id}","property_type":"{property_type}","area":{area:.1},"event_time":"{event_time}"}}"#
        );
        let malformed = self.rng.random_bool(self.malformed);
        let value = if malformed {
            malform(&mut self.rng, &value, "amount", "event_time")
        } else {
            value
        };
        Generated {
            key: deal_id,
            value,
            malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_records() {
        let mut a = DealGenerator::new(7, 0.2, 60);
        let mut b = DealGenerator::new(7, 0.2, 60);
        for _ in 0..100 {
            let (x, y) = (a.next(1_000_000_000), b.next(1_000_000_000));
            assert_eq!(x.value, y.value);
            assert_eq!(x.malformed, y.malformed);
        }
    }

    #[test]
    fn well_formed_records_are_json_objects() {
        let mut g = DealGenerator::new(1, 0.0, 60);
        for _ in 0..50 {
            let r = g.next(1_700_000_000_000_000);
            let v: serde_json::Value = serde_json::from_str(&r.value).unwrap();
            assert!(v["amount"].as_str().unwrap().parse::<f64>().is_ok());
            assert!(v["event_time"].as_str().unwrap().ends_with('Z'));
        }
    }
}
