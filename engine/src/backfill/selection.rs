//! Which layers a backfill runs, and which of their tables it replaces.
//! Pure logic over the dataflow's layer graph.
//!
//! The target's rows depend on every layer upstream of it, back to the
//! sources: those run too (their results are recomputed, not read back
//! from their tables), but only the targets' tables are replaced. With
//! `--cascade` the layers downstream of the target are targets as well,
//! each with its own upstream.

use std::collections::BTreeSet;

use crate::dataflow::spec::{InputFrom, LayerSpec};

/// The layers of one backfill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Layers to run, in the dataflow's (upstream first) order.
    pub run: Vec<String>,
    /// Layers whose tables are replaced, upstream first.
    pub targets: Vec<String>,
}

/// The layers to run for `target` (and, with `cascade`, everything
/// downstream of it). `layers` is upstream first, as in a dataflow.
///
/// ```
/// use strata_engine::backfill::select_layers;
/// use strata_engine::dataflow::{InputFrom, LayerInput, LayerSpec};
/// # fn layer(name: &str, from: &[&str]) -> LayerSpec {
/// #     LayerSpec { name: name.into(), kind: "dws".into(),
/// #         inputs: from.iter().map(|f| LayerInput { name: f.to_string(), from: InputFrom::Layer(f.to_string()) }).collect(),
/// #         sql: None, filter: None, keep_rejected: false, delay: Default::default(), publish: None,
/// #         side_topics: vec![], lookup_failure: Default::default(), state_ttl: None }
/// # }
/// let layers = vec![layer("ods", &[]), layer("dwd", &["ods"]), layer("dws", &["dwd"]), layer("other", &["ods"])];
/// let s = select_layers(&layers, "dwd", true).unwrap();
/// assert_eq!(s.run, ["ods", "dwd", "dws"]);
/// assert_eq!(s.targets, ["dwd", "dws"]);
/// ```
pub fn select_layers(
    layers: &[LayerSpec],
    target: &str,
    cascade: bool,
) -> Result<Selection, String> {
    if !layers.iter().any(|l| l.name == target) {
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        return Err(format!(
            "no layer `{target}` in the warehouse; its layers are: {}",
            names.join(", ")
        ));
    }
    let mut targets: BTreeSet<&str> = BTreeSet::from([target]);
    if cascade {
        // Upstream first: one pass finds every descendant.
        for layer in layers {
            if upstream_of(layer).any(|up| targets.contains(up)) {
                targets.insert(layer.name.as_str());
            }
        }
    }
    let mut run: BTreeSet<&str> = targets.clone();
    for layer in layers.iter().rev() {
        if run.contains(layer.name.as_str()) {
            run.extend(upstream_of(layer));
        }
    }
    let ordered = |set: &BTreeSet<&str>| {
        layers
            .iter()
            .filter(|l| set.contains(l.name.as_str()))
            .map(|l| l.name.clone())
            .collect::<Vec<_>>()
    };
    Ok(Selection {
        run: ordered(&run),
        targets: ordered(&targets),
    })
}

fn upstream_of(layer: &LayerSpec) -> impl Iterator<Item = &str> {
    layer.inputs.iter().filter_map(|i| match &i.from {
        InputFrom::Layer(up) => Some(up.as_str()),
        InputFrom::Source(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::spec::LayerInput;

    fn layer(name: &str, from: &[&str]) -> LayerSpec {
        LayerSpec {
            name: name.into(),
            kind: "dws".into(),
            inputs: from
                .iter()
                .map(|f| LayerInput {
                    name: f.to_string(),
                    from: InputFrom::Layer(f.to_string()),
                })
                .collect(),
            sql: None,
            filter: None,
            keep_rejected: false,
            delay: Default::default(),
            publish: None,
            side_topics: vec![],
            lookup_failure: Default::default(),
            state_ttl: None,
        }
    }

    #[test]
    fn without_cascade_only_the_target_is_replaced() {
        let layers = vec![layer("a", &[]), layer("b", &["a"]), layer("c", &["b"])];
        let s = select_layers(&layers, "b", false).unwrap();
        assert_eq!(s.run, ["a", "b"]);
        assert_eq!(s.targets, ["b"]);
    }

    #[test]
    fn a_cascaded_join_brings_its_other_side() {
        let layers = vec![
            layer("a", &[]),
            layer("x", &[]),
            layer("b", &["a"]),
            layer("j", &["b", "x"]),
        ];
        let s = select_layers(&layers, "b", true).unwrap();
        assert_eq!(s.run, ["a", "x", "b", "j"]);
        assert_eq!(s.targets, ["b", "j"]);
    }

    #[test]
    fn an_unknown_layer_lists_the_known_ones() {
        let layers = [layer("ods_deals", &[]), layer("dwd_deals", &["ods_deals"])];
        let e = select_layers(&layers, "zz", false).unwrap_err();
        assert_eq!(
            e,
            "no layer `zz` in the warehouse; its layers are: ods_deals, dwd_deals"
        );
    }
}
