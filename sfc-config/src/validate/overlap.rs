//! Finding the overlapping classifiers of different chains without comparing every pair.
//!
//! Two classifiers can only overlap where their destination prefixes intersect, and prefixes
//! intersect only by containment: one is an ancestor of (or equal to) the other. So each
//! classifier is compared only with the classifiers whose prefix contains its own (a hash
//! lookup per prefix length in use), those whose prefix lies inside it (a range of a sorted
//! map) and those with no prefix in that field. Which field is used (destination or source) is
//! chosen per classifier, the one giving fewer candidates; a classifier with neither is
//! compared with everything (such broad classifiers are few). Every overlapping pair is found
//! from both of its sides, so each side reports it only against higher-numbered partners.
//! 10 000 disjoint /32 classifiers cost about one lookup each instead of 50 million
//! comparisons.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::validate::classifier::{prefix_mask, Match, Prefix};

/// Classifiers indexed by the prefix of one field.
#[derive(Default)]
struct PrefixIndex {
    /// (family, length, network bits) -> items with exactly that prefix.
    exact: HashMap<(u8, u8, u128), Vec<usize>>,
    /// Prefix lengths in use, per family: the only ancestors worth probing.
    lengths: BTreeMap<u8, BTreeSet<u8>>,
    /// (family, network bits, length) -> items, for the prefixes inside a given one.
    sorted: BTreeMap<(u8, u128, u8), Vec<usize>>,
    /// Items without a prefix in this field: they contain every prefix.
    any: Vec<usize>,
}

impl PrefixIndex {
    fn insert(&mut self, family: u8, prefix: Option<Prefix>, item: usize) {
        let Some(p) = prefix else {
            self.any.push(item);
            return;
        };
        let bits = p.bits();
        self.exact
            .entry((family, p.len, bits))
            .or_default()
            .push(item);
        self.lengths.entry(family).or_default().insert(p.len);
        self.sorted
            .entry((family, bits, p.len))
            .or_default()
            .push(item);
    }

    /// Every item whose prefix intersects `p` (or that has none). `p` must be given.
    fn candidates(&self, family: u8, p: &Prefix, out: &mut Vec<usize>) {
        out.extend_from_slice(&self.any);
        let bits = p.bits();
        for &len in self.lengths.get(&family).into_iter().flatten() {
            if len > p.len {
                break;
            }
            if let Some(items) = self.exact.get(&(family, len, bits & prefix_mask(len))) {
                out.extend_from_slice(items);
            }
        }
        let last = bits | !prefix_mask(p.len);
        for ((_, _, len), items) in self
            .sorted
            .range((family, bits, 0)..=(family, last, u8::MAX))
        {
            if *len > p.len {
                out.extend_from_slice(items);
            }
        }
    }
}

/// Pairs `(i, j)` with `i < j`, of items of different groups (`key`), whose matches overlap.
/// Sorted, without duplicates.
pub fn overlapping_pairs<K: PartialEq>(items: &[(K, &Match)]) -> Vec<(usize, usize)> {
    // One group (one chain going one way, at most ports): nothing to compare. Nested prefixes
    // would otherwise make every classifier a candidate of its ancestors.
    if items.iter().all(|(k, _)| *k == items[0].0) {
        return Vec::new();
    }
    let mut dst = PrefixIndex::default();
    let mut src = PrefixIndex::default();
    for (i, (_, m)) in items.iter().enumerate() {
        dst.insert(m.family, m.dst, i);
        src.insert(m.family, m.src, i);
    }
    let mut pairs = Vec::new();
    let (mut by_dst, mut by_src) = (Vec::new(), Vec::new());
    for (i, (key, m)) in items.iter().enumerate() {
        by_dst.clear();
        by_src.clear();
        if let Some(p) = &m.dst {
            dst.candidates(m.family, p, &mut by_dst);
        }
        if let Some(p) = &m.src {
            src.candidates(m.family, p, &mut by_src);
        }
        let candidates: Box<dyn Iterator<Item = usize>> = match (m.dst.is_some(), m.src.is_some()) {
            (false, false) => Box::new(0..items.len()),
            (true, false) => Box::new(by_dst.iter().copied()),
            (false, true) => Box::new(by_src.iter().copied()),
            (true, true) if by_dst.len() <= by_src.len() => Box::new(by_dst.iter().copied()),
            (true, true) => Box::new(by_src.iter().copied()),
        };
        for j in candidates {
            if j > i && items[j].0 != *key && m.overlaps(items[j].1) {
                pairs.push((i, j));
            }
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FlowClassifierSpec;
    use crate::validate::classifier::normalize;

    fn m(yaml: &str) -> Match {
        let spec: FlowClassifierSpec =
            serde_yaml_ng::from_str(&format!("{{{yaml}, logicalSourcePort: p}}")).unwrap();
        normalize(&spec).unwrap()
    }

    /// The plain quadratic answer, to check the index against.
    fn brute(items: &[(u32, &Match)]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for i in 0..items.len() {
            for j in i + 1..items.len() {
                if items[i].0 != items[j].0 && items[i].1.overlaps(items[j].1) {
                    out.push((i, j));
                }
            }
        }
        out
    }

    #[test]
    fn finds_exactly_the_pairs_a_full_comparison_finds() {
        let specs = [
            "destinationIpPrefix: 10.0.0.0/8",
            "destinationIpPrefix: 10.1.0.0/16",
            "destinationIpPrefix: 10.1.2.3/32",
            "destinationIpPrefix: 10.1.2.3/32, protocol: udp",
            "destinationIpPrefix: 10.1.2.3/32, protocol: tcp, destinationPortRange: '80'",
            "destinationIpPrefix: 10.1.2.3/32, protocol: tcp, destinationPortRange: '81:90'",
            "destinationIpPrefix: 11.0.0.0/8",
            "sourceIpPrefix: 10.1.0.0/16",
            "sourceIpPrefix: 192.168.0.0/16, destinationIpPrefix: 10.1.0.0/24",
            "sourceIpPrefix: 192.168.1.0/24",
            "sourceIpPrefix: 192.168.1.0/24, destinationIpPrefix: 11.2.0.0/16",
            "protocol: icmp",
            "protocol: udp, sourcePortRange: '1000:2000'",
            "ethertype: IPv6, destinationIpPrefix: 'a00::/8'",
            "ethertype: IPv6",
            "destinationIpPrefix: 0.0.0.0/0",
        ];
        let matches: Vec<Match> = specs.iter().map(|s| m(s)).collect();
        // Every assignment of these classifiers to three chains, rotated: the index must agree
        // with the full comparison each time.
        for seed in 0..9u32 {
            let items: Vec<(u32, &Match)> = matches
                .iter()
                .enumerate()
                .map(|(i, m)| ((i as u32 * 7 + seed) % 3, m))
                .collect();
            let expected = brute(&items);
            assert!(!expected.is_empty());
            assert_eq!(overlapping_pairs(&items), expected, "seed {seed}");
        }
    }

    #[test]
    fn ten_thousand_disjoint_classifiers_cost_no_pairwise_comparison() {
        let matches: Vec<Match> = (0..10_000u32)
            .map(|n| {
                m(&format!(
                    "destinationIpPrefix: 10.{}.{}.{}/32",
                    n >> 16,
                    (n >> 8) & 0xff,
                    n & 0xff
                ))
            })
            .collect();
        let items: Vec<(u32, &Match)> = matches
            .iter()
            .enumerate()
            .map(|(i, m)| (i as u32 / 10, m))
            .collect();
        let start = std::time::Instant::now();
        assert!(overlapping_pairs(&items).is_empty());
        // Generous even for a debug build; the quadratic check took seconds in release.
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }
}
