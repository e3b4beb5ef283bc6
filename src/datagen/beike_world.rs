//! The reference warehouse's world: cities, their stores and the stores'
//! agents, as a brokerage like Beike has them. Both the events and the
//! dimension tables are made from it, so every agent an event names is in
//! the agents table, every store in the stores table, every city in cities.

use std::sync::Arc;

use arrow::array::{Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;

/// A city: id, display name, province, tier, relative house price.
pub struct City {
    /// Key of the cities table (`bj`).
    pub id: &'static str,
    /// Display name (`Beijing`).
    pub name: &'static str,
    /// Province.
    pub province: &'static str,
    /// Market tier (1 = first-tier city).
    pub tier: i32,
    /// Price per square metre, in units of 10,000 yuan.
    pub price_level: f64,
    /// Districts, where its stores are.
    pub districts: &'static [&'static str],
}

/// The cities the generator knows.
pub const CITIES: &[City] = &[
    City {
        id: "bj",
        name: "Beijing",
        province: "Beijing",
        tier: 1,
        price_level: 6.0,
        districts: &["chaoyang", "haidian", "dongcheng", "fengtai"],
    },
    City {
        id: "sh",
        name: "Shanghai",
        province: "Shanghai",
        tier: 1,
        price_level: 6.5,
        districts: &["pudong", "xuhui", "jingan", "minhang"],
    },
    City {
        id: "sz",
        name: "Shenzhen",
        province: "Guangdong",
        tier: 1,
        price_level: 5.5,
        districts: &["nanshan", "futian", "luohu"],
    },
    City {
        id: "hz",
        name: "Hangzhou",
        province: "Zhejiang",
        tier: 2,
        price_level: 3.5,
        districts: &["xihu", "binjiang", "gongshu"],
    },
    City {
        id: "cd",
        name: "Chengdu",
        province: "Sichuan",
        tier: 2,
        price_level: 1.8,
        districts: &["jinjiang", "wuhou", "gaoxin"],
    },
    City {
        id: "wh",
        name: "Wuhan",
        province: "Hubei",
        tier: 2,
        price_level: 1.6,
        districts: &["wuchang", "hongshan", "jianghan"],
    },
];

const STORES_PER_DISTRICT: usize = 4;
const AGENTS_PER_STORE: usize = 6;

/// A store: where it is.
pub struct Store {
    /// Key of the stores table (`bj-chaoyang-s2`).
    pub id: String,
    /// Index into [`CITIES`].
    pub city: usize,
    /// District name.
    pub district: &'static str,
}

/// An agent: their store and daily showing target.
pub struct Agent {
    /// Key of the agents table (`bj-chaoyang-s2-a5`).
    pub id: String,
    /// Index into [`World::stores`].
    pub store: usize,
    /// Showings expected per working day.
    pub daily_showing_target: i32,
}

/// Every city, store and agent.
pub struct World {
    /// All stores.
    pub stores: Vec<Store>,
    /// All agents.
    pub agents: Vec<Agent>,
}

impl World {
    /// The world, the same every time (targets vary by agent, not by seed,
    /// so the dimension tables never change between runs).
    pub fn new() -> Self {
        let mut stores = Vec::new();
        let mut agents = Vec::new();
        for (c, city) in CITIES.iter().enumerate() {
            for district in city.districts {
                for s in 0..STORES_PER_DISTRICT {
                    let store = stores.len();
                    let id = format!("{}-{district}-s{s}", city.id);
                    for a in 0..AGENTS_PER_STORE {
                        agents.push(Agent {
                            id: format!("{id}-a{a}"),
                            store,
                            daily_showing_target: 4 + ((agents.len() * 7) % 9) as i32,
                        });
                    }
                    stores.push(Store {
                        id,
                        city: c,
                        district,
                    });
                }
            }
        }
        World { stores, agents }
    }

    /// The cities table: `city_id, city_name, province, tier`.
    pub fn cities_batch(&self) -> Result<RecordBatch, ArrowError> {
        let schema = Schema::new(vec![
            Field::new("city_id", DataType::Utf8, false),
            Field::new("city_name", DataType::Utf8, true),
            Field::new("province", DataType::Utf8, true),
            Field::new("tier", DataType::Int32, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from_iter_values(CITIES.iter().map(|c| c.id))),
                Arc::new(StringArray::from_iter_values(CITIES.iter().map(|c| c.name))),
                Arc::new(StringArray::from_iter_values(
                    CITIES.iter().map(|c| c.province),
                )),
                Arc::new(Int32Array::from_iter_values(CITIES.iter().map(|c| c.tier))),
            ],
        )
    }

    /// The stores table: `store_id, store_name, city_id, district`.
    pub fn stores_batch(&self) -> Result<RecordBatch, ArrowError> {
        let schema = Schema::new(vec![
            Field::new("store_id", DataType::Utf8, false),
            Field::new("store_name", DataType::Utf8, true),
            Field::new("city_id", DataType::Utf8, true),
            Field::new("district", DataType::Utf8, true),
        ]);
        let s = &self.stores;
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from_iter_values(s.iter().map(|s| &s.id))),
                Arc::new(StringArray::from_iter_values(s.iter().map(|s| {
                    let city = &CITIES[s.city];
                    format!("{} {} #{}", city.name, s.district, &s.id[s.id.len() - 1..])
                }))),
                Arc::new(StringArray::from_iter_values(
                    s.iter().map(|s| CITIES[s.city].id),
                )),
                Arc::new(StringArray::from_iter_values(s.iter().map(|s| s.district))),
            ],
        )
    }

    /// The agents table: `agent_id, agent_name, store_id,
    /// daily_showing_target`.
    pub fn agents_batch(&self) -> Result<RecordBatch, ArrowError> {
        let schema = Schema::new(vec![
            Field::new("agent_id", DataType::Utf8, false),
            Field::new("agent_name", DataType::Utf8, true),
            Field::new("store_id", DataType::Utf8, true),
            Field::new("daily_showing_target", DataType::Int32, true),
        ]);
        let a = &self.agents;
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from_iter_values(a.iter().map(|a| &a.id))),
                Arc::new(StringArray::from_iter_values(
                    a.iter().enumerate().map(|(i, _)| agent_name(i)),
                )),
                Arc::new(StringArray::from_iter_values(
                    a.iter().map(|a| &self.stores[a.store].id),
                )),
                Arc::new(Int32Array::from_iter_values(
                    a.iter().map(|a| a.daily_showing_target),
                )),
            ],
        )
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

/// A name for agent `i`, unique across the world.
fn agent_name(i: usize) -> String {
    const FAMILY: &[&str] = &[
        "Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang",
    ];
    const GIVEN: &[&str] = &[
        "Wei", "Fang", "Min", "Jing", "Lei", "Yan", "Tao", "Hui", "Jun",
    ];
    format!(
        "{} {} {}",
        FAMILY[i % FAMILY.len()],
        GIVEN[(i / FAMILY.len()) % GIVEN.len()],
        i
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_key_is_unique_and_every_reference_resolves() {
        let w = World::new();
        let stores: HashSet<&str> = w.stores.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(stores.len(), w.stores.len());
        let agents: HashSet<&str> = w.agents.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(agents.len(), w.agents.len());
        assert!(w.agents.iter().all(|a| a.store < w.stores.len()));
        let batch = w.agents_batch().unwrap();
        assert_eq!(batch.num_rows(), w.agents.len());
        assert_eq!(w.stores_batch().unwrap().num_rows(), w.stores.len());
        assert_eq!(w.cities_batch().unwrap().num_rows(), CITIES.len());
    }
}
