//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted: each member fills table
//! slots from its own permutation in turn, a member of weight w taking w turns per round. The
//! permutation depends only on the member's name, so adding or removing a member moves few
//! flows between the others.

/// Builds a table of `size` (prime) entries holding indexes into `members` (name, weight).
/// Returns an empty vector when there are no members.
pub fn table(members: &[(&str, u32)], size: u32) -> Vec<usize> {
    if members.is_empty() {
        return Vec::new();
    }
    let m = size as u64;
    let perms: Vec<(u64, u64)> = members
        .iter()
        .map(|(name, _)| {
            let offset = fnv(name.as_bytes(), 0xcbf2_9ce4_8422_2325) % m;
            let skip = fnv(name.as_bytes(), 0x8422_2325_cbf2_9ce4) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; members.len()];
    let mut entry = vec![usize::MAX; size as usize];
    let mut filled = 0u32;
    // Bounded: every turn either fills a slot or advances a permutation, and each permutation
    // visits all `size` slots.
    'outer: loop {
        for (i, &(offset, skip)) in perms.iter().enumerate() {
            for _ in 0..members[i].1.max(1) {
                let mut c = (offset + next[i] * skip) % m;
                while entry[c as usize] != usize::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % m;
                }
                entry[c as usize] = i;
                next[i] += 1;
                filled += 1;
                if filled == size {
                    break 'outer;
                }
            }
        }
    }
    entry
}

fn fnv(data: &[u8], seed: u64) -> u64 {
    let mut h = seed;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ (h >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(t: &[usize], i: usize) -> f64 {
        t.iter().filter(|&&x| x == i).count() as f64 / t.len() as f64
    }

    #[test]
    fn weights_are_honoured() {
        let t = table(&[("a", 1), ("b", 3)], 1021);
        assert!((share(&t, 0) - 0.25).abs() < 0.02, "{}", share(&t, 0));
        assert!((share(&t, 1) - 0.75).abs() < 0.02);
    }

    #[test]
    fn removing_a_member_moves_only_its_flows_mostly() {
        let before = table(&[("a", 1), ("b", 1), ("c", 1)], 1021);
        let after = table(&[("a", 1), ("c", 1)], 1021);
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(&b, &a)| b != 1 && [0, 2][a] != b)
            .count();
        // Maglev is near-minimal: only a small fraction of surviving slots move.
        assert!(
            moved < 1021 / 10,
            "{moved} slots of surviving members moved"
        );
    }
}
